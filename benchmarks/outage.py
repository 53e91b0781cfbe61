"""Scenario 3: 100k events while the endpoint is dead — memory stays bounded, the app is never
blocked. Fresh interpreter: ``python -m benchmarks.outage MODE COUNT [QUEUE_SIZE]`` (MODE
``ours``/``none``; the queue at its default unless given)."""

from __future__ import annotations

import gc
import sys

from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor

from ._common import PRODUCT_ID, emit_json, now, rss_mb


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    queue_size = int(sys.argv[3]) if len(sys.argv) > 3 else None  # None: the default
    provider = TracerProvider()
    processor = None
    if mode == "ours":
        processor = GreenflashSpanProcessor(
            api_key="bench",
            product_id=PRODUCT_ID,
            base_url="http://127.0.0.1:9/api/v1",  # nothing listens: connection refused
            export_timeout_seconds=3600,
            max_queue_size=queue_size,
        )
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    gc.collect()
    rss_before = rss_mb()
    rss_peak = rss_before
    durations: list[float] = []
    start = now()
    for index in range(count):
        if index % 1000 == 0:
            rss_peak = max(rss_peak, rss_mb())
        began = now()
        with tracer.start_as_current_span("task") as span:
            span.set_attributes(
                {
                    "greenflash.event.type": "task_success",
                    "greenflash.event.value": index,
                    "greenflash.conversation.external_id": f"chat-{index}",
                    "greenflash.event.properties.note": "x" * 100,
                }
            )
        durations.append(now() - began)
    seconds = now() - start
    rss_peak = max(rss_peak, rss_mb())
    durations.sort()
    held = 0
    if processor is not None:
        stats = processor.stats()
        held = stats["queued"] - stats["sent"] - stats["failed"] + len(processor._worker)
    emit_json(
        {
            "rss_growth_mb": rss_peak - rss_before,
            "slowest_span_ms": durations[-1] * 1000,
            "p999_span_ms": durations[int(len(durations) * 0.999)] * 1000,
            "mean_span_us": seconds / count * 1e6,
            "held_events": float(held),
            "dropped": float(sum(processor.stats()["dropped"].values())) if processor else 0.0,
        }
    )


if __name__ == "__main__":
    main()
