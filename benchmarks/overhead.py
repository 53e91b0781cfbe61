"""Scenario 1: what a span start+end costs the application thread, with and without us.

``run()`` compares the configurations with the pipeline idle (a discarding transport, batches
too large to wake the worker during a timed loop). ``run_live()`` times the same loops on a
processor at default settings that is delivering to the fast receiver (20 ms) at the same time:
in a fresh interpreter, ``python -m benchmarks.overhead live BASE_URL API_KEY REPEATS``.
Timing is the wall clock around the loop (``perf_counter``), as in ``run()``; the live child
also reads the app thread's own CPU clock (``time.thread_time``) around the same loops, which
tells the app thread's own work apart from the time other threads held the GIL.
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.util.types import AttributeValue

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._deliver.transport import SendOutcome

from ._common import (
    PRODUCT_ID,
    Row,
    default_processor,
    emit_events,
    emit_json,
    emit_paced,
    fast_receiver,
    now,
    queue_depth,
    receiver_stats,
    run_child,
)

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
    # Idle: the worker must not run during a timed loop (it would take the GIL), so neither a
    # full batch nor an event reaching an idle queue wakes it within a minute.
    configs = providers(max_batch_size=2048, schedule_delay_seconds=60, send_delay_seconds=60)
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


# -- the pipeline live ------------------------------------------------------------------------

LIVE_LATENCY_MS = 20
IDLE_EVENTS = 500
"""Event spans timed with the pipeline idle: fewer than a batch (512 by default), so the worker
is not woken during the loop."""
LIVE_PRELOAD = 1024
"""Event spans sent just before a live loop (two batches), so requests are in flight."""
LIVE_EVENTS = 1000
"""Event spans timed with the pipeline live: the worker takes the first 512 as a batch while
the loop goes on."""
LIVE_PLAIN = 10_000


class GcClock:
    """CPU seconds this thread spent in garbage collections (``gc.callbacks``): collections run
    in whichever thread's allocation crosses the threshold, over every thread's objects."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._thread = threading.get_ident()
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self._thread:
            return
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def span_clocks(
    tracer: trace.Tracer,
    attributes: Mapping[str, AttributeValue],
    count: int,
    gc_clock: GcClock,
) -> tuple[float, float, float]:
    """µs per span: wall clock (``perf_counter``), this thread's CPU (``thread_time``) and the
    part of it spent collecting garbage."""
    collected = gc_clock.seconds
    wall, cpu = now(), time.thread_time()
    for _ in range(count):
        with tracer.start_as_current_span("work") as span:
            span.set_attributes(attributes)
    wall, cpu = now() - wall, time.thread_time() - cpu
    return wall / count * 1e6, cpu / count * 1e6, (gc_clock.seconds - collected) / count * 1e6


def live_main(base_url: str, api_key: str, repeats: int) -> None:
    """Alternates, ``repeats`` times: the pipeline drained, then idle loops; the pipeline loaded
    (about a thousand events unsettled, requests in flight, the span queue empty), then live
    loops, during which the worker takes and maps a batch. Prints medians as one JSON line."""
    processor = default_processor(base_url, api_key)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    next_index = 0

    def emit(start: int, stop: int) -> None:
        emit_events(tracer, start, stop)

    emit(-1, 0)  # warm-up: one event delivered, connections and imports ready
    assert processor.force_flush(60_000)
    results: dict[str, list[float]] = {}
    gc_clock = GcClock()

    def note(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)

    def timed(key: str, attributes: Mapping[str, AttributeValue], count: int) -> None:
        wall, cpu, collecting = span_clocks(tracer, attributes, count, gc_clock)
        note(f"{key}_wall", wall)
        note(f"{key}_cpu", cpu)
        note(f"{key}_gc", collecting)

    queue_size = processor.config.max_queue_size
    engine = processor._shared.engine
    for _ in range(repeats):
        if not processor.deliver_queued(120_000):
            raise RuntimeError("the pipeline did not drain")
        time.sleep(0.05)
        timed("idle_plain", PLAIN, LIVE_PLAIN)
        timed("idle_event", EVENT, IDLE_EVENTS)
        if not processor.deliver_queued(120_000):
            raise RuntimeError("the pipeline did not drain")
        # Load: two full batches, then wait until the worker has mapped them and handed them
        # to the engine and two rounds of requests were answered. Requests are then in flight
        # with about a thousand events behind them, and the engine has room, so the worker
        # takes, maps and hands on the batch the timed loop fills (no backpressure parks it).
        queued_before = processor.stats()["queued"]
        emit_paced(processor, emit, LIVE_PRELOAD, queued_before, start=next_index)
        next_index += LIVE_PRELOAD
        sent_before = processor.stats()["sent"]
        while (
            queue_depth(processor, LIVE_PRELOAD, queued_before) > 0
            or processor.stats()["sent"] - sent_before < 128  # two rounds answered: steady
        ):
            time.sleep(0.001)
        server = receiver_stats(base_url)
        before = processor.stats()
        in_flight, pending = engine._in_flight, engine.pending  # read outside the timed loop
        timed("live_event", EVENT, LIVE_EVENTS)
        after = processor.stats()
        note("client_in_flight_at_start", float(in_flight))
        note("server_in_flight_at_start", float(server["in_flight"]))
        note("pending_at_start", float(pending))
        note("settled_while_timing", float(after["sent"] - before["sent"]))
        note("taken_while_timing", float(after["queued"] - before["queued"]))
        timed("live_plain", PLAIN, LIVE_PLAIN)
        if queue_depth(processor, LIVE_PRELOAD + LIVE_EVENTS, queued_before) >= queue_size:
            raise RuntimeError("the span queue was full while timing")
    assert processor.force_flush(120_000)
    gc_clock.close()
    stats = processor.stats()
    provider.shutdown()
    if stats["dropped"] or stats["failed"]:
        raise RuntimeError(f"events were dropped or failed: {stats}")
    emit_json({key: statistics.median(values) for key, values in results.items()})


def run_live(quick: bool = False) -> list[Row]:
    repeats = 5 if quick else 11
    with fast_receiver(LIVE_LATENCY_MS) as receiver:
        live = run_child("overhead", "live", receiver.base_url, receiver.api_key, str(repeats))
    name = f"1 live @{LIVE_LATENCY_MS} ms"
    rows = []
    for clock, label in (("wall", "wall"), ("cpu", "thread CPU")):
        target = "≤ +5 µs" if clock == "wall" else "(info)"
        extra = live[f"live_event_{clock}"] - live[f"idle_event_{clock}"]
        rows += [
            Row(
                f"{name}: event span",
                f"µs ({label})",
                live[f"live_event_{clock}"],
                "same, pipeline idle",
                live[f"idle_event_{clock}"],
                target,
            ),
            Row(
                f"{name}: event span extra",
                f"µs ({label})",
                extra,
                "5 µs budget",
                5.0,
                "≤ 1.00" if clock == "wall" else "(info)",
            ),
        ]
    rows += [
        Row(
            f"{name}: event span, in GC",
            "µs (thread CPU)",
            live["live_event_gc"],
            "same, pipeline idle",
            live["idle_event_gc"],
            "(info)",
        ),
        Row(
            f"{name}: plain span",
            "µs (wall)",
            live["live_plain_wall"],
            "same, pipeline idle",
            live["idle_plain_wall"],
            "(info)",
        ),
        Row(
            f"{name}: plain span",
            "µs (thread CPU)",
            live["live_plain_cpu"],
            "same, pipeline idle",
            live["idle_plain_cpu"],
            "(info)",
        ),
        Row(
            f"{name}: in flight at loop start",
            "requests",
            live["client_in_flight_at_start"],
            "max_concurrency",
            64.0,
            "(info)",
        ),
        Row(
            f"{name}: unanswered at loop start",
            "requests",
            live["server_in_flight_at_start"],
            "in flight (client side)",
            live["client_in_flight_at_start"],
            "(info)",
        ),
        Row(
            f"{name}: unsettled at loop start",
            "events",
            live["pending_at_start"],
            "preloaded",
            float(LIVE_PRELOAD),
            "(info)",
        ),
        Row(
            f"{name}: sent during {LIVE_EVENTS}-span loop",
            "events",
            live["settled_while_timing"],
            "taken off the queue",
            live["taken_while_timing"],
            "(info)",
        ),
    ]
    return rows


def main() -> None:
    if sys.argv[1:2] == ["live"] and len(sys.argv) == 5:
        live_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    print("usage: python -m benchmarks.overhead live BASE_URL API_KEY REPEATS", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
