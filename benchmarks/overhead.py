"""Scenario 1: what a span start+end costs the application thread, with and without us."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.util.types import AttributeValue

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._transport import SendOutcome

from ._common import PRODUCT_ID, Row, now

PLAIN: dict[str, AttributeValue] = {
    "http.method": "GET",
    "http.route": "/chat",
    "user.role": "member",
}
EVENT: dict[str, AttributeValue] = {
    "http.method": "GET",
    "http.route": "/chat",
    "greenflash.event.type": "upgrade_purchased",
    "greenflash.event.value": 149,
    "greenflash.event.value_type": "currency",
    "greenflash.conversation.external_id": "chat-1",
}


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DiscardTransport:
    """Delivery that costs nothing, so only the application-thread path is measured."""

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        return SendOutcome(200)

    def close(self) -> None:
        return None


def providers(
    queue_size: int = 100_000, **settings: Any
) -> dict[str, tuple[TracerProvider, Callable[[], object]]]:
    """The three configurations compared: no processor, the SDK's BatchSpanProcessor with a
    no-op exporter, ours with a discarding transport (``settings`` go to ours)."""
    none = TracerProvider()
    bsp = TracerProvider()
    bsp_processor = BatchSpanProcessor(NoopExporter(), max_queue_size=queue_size)
    bsp.add_span_processor(bsp_processor)
    ours = TracerProvider()
    processor = GreenflashSpanProcessor(
        api_key="bench",
        product_id=PRODUCT_ID,
        base_url="http://127.0.0.1:9/api/v1",
        transport=DiscardTransport(),
        max_queue_size=queue_size,
        **settings,
    )
    ours.add_span_processor(processor)
    return {
        "no processor": (none, lambda: None),
        "SDK BatchSpanProcessor+noop": (bsp, lambda: bsp_processor.force_flush()),
        "GreenflashSpanProcessor": (ours, lambda: processor.force_flush()),
    }


def span_cost(
    provider: TracerProvider, attributes: Mapping[str, AttributeValue], count: int
) -> float:
    tracer = provider.get_tracer("bench")
    start = now()
    for _ in range(count):
        with tracer.start_as_current_span("work") as span:
            span.set_attributes(attributes)
    return (now() - start) / count * 1e6


def threaded_cost(provider: TracerProvider, count: int, threads: int = 4) -> float:
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        span_cost(provider, PLAIN, count)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = now()
    for worker in workers:
        worker.join()
    return (now() - start) / (count * threads) * 1e6


def run(quick: bool = False) -> list[Row]:
    configs = providers(max_batch_size=2048)
    repeats = 5 if quick else 11
    plain_count = 20_000 if quick else 50_000
    event_count = 2_000
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):  # interleave configurations: the machine's noise hits all alike
        for name, (provider, settle) in configs.items():
            results.setdefault((name, "plain"), []).append(span_cost(provider, PLAIN, plain_count))
            settle()
            results.setdefault((name, "event"), []).append(span_cost(provider, EVENT, event_count))
            settle()
            results.setdefault((name, "4 threads"), []).append(
                threaded_cost(provider, plain_count // 4)
            )
            settle()
    median = {key: statistics.median(values) for key, values in results.items()}
    none, bsp, ours = "no processor", "SDK BatchSpanProcessor+noop", "GreenflashSpanProcessor"
    rows = [
        Row(
            "1 overhead: plain span",
            "µs/span",
            median[(ours, "plain")],
            none,
            median[(none, "plain")],
            "≤ 1.05×",
        ),
        Row(
            "1 overhead: plain span",
            "µs/span",
            median[(ours, "plain")],
            "BatchSpanProcessor+noop",
            median[(bsp, "plain")],
            "(info)",
        ),
        Row(
            "1 overhead: plain span, 4 threads",
            "µs/span (wall)",
            median[(ours, "4 threads")],
            none,
            median[(none, "4 threads")],
            "≤ 1.05×",
        ),
        Row(
            "1 overhead: event span",
            "µs/span",
            median[(ours, "event")],
            none,
            median[(none, "event")],
            "≤ +5 µs",
        ),
    ]
    extra = median[(ours, "event")] - median[(none, "event")]
    rows.append(Row("1 event span extra vs none", "µs", extra, "5 µs budget", 5.0, "≤ 1.00"))
    for config in (provider for provider, _ in configs.values()):
        config.shutdown()
    return rows
