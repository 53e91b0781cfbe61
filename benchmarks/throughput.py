"""Scenario 2: delivery throughput and client CPU per delivered event, one configuration per
fresh interpreter: ``python -m benchmarks.throughput MODE BASE_URL API_KEY N [K]``.

MODE: ``sdk_sequential`` / ``sdk_threads`` (official ``greenflash`` SDK, ``events.create``
called in a loop or from a K-thread pool) or ``ours`` (spans with event attributes through
``GreenflashSpanProcessor`` with K senders; span creation is included in the CPU figure).
Prints one JSON line: events/s, CPU µs per delivered event (whole process), delivered share.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import greenflash
import httpx
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor

from ._common import PRODUCT_ID, cpu_seconds, emit_json


def accepted(base_url: str) -> int:
    return int(httpx.get(base_url + "/_local/stats", timeout=30).json()["events"])


def run_sdk(base_url: str, api_key: str, count: int, threads: int) -> None:
    client = greenflash.Greenflash(api_key=api_key, base_url=base_url)

    def create(index: int) -> None:
        client.events.create(
            event_type="task_success",
            product_id=PRODUCT_ID,
            value=str(index),
            value_type="numeric",
            external_conversation_id=f"chat-{index}",
            insert_id=f"sdk-{time.time_ns()}-{index}",
        )

    if threads <= 1:
        for index in range(count):
            create(index)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, range(count)))


def run_ours(base_url: str, api_key: str, count: int, concurrency: int) -> float:
    """Returns when the clock started (after setup, which is not what is measured)."""
    processor = GreenflashSpanProcessor(
        api_key=api_key,
        base_url=base_url,
        product_id=PRODUCT_ID,
        max_concurrency=concurrency,
        max_queue_size=max(count, 2048),  # the app emits all at once here: hold them all
        schedule_delay_seconds=0.05,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    started = time.perf_counter()
    for index in range(count):
        with tracer.start_as_current_span("task") as span:
            span.set_attributes(
                {
                    "greenflash.event.type": "task_success",
                    "greenflash.event.value": index,
                    "greenflash.conversation.external_id": f"chat-{index}",
                }
            )
    processor.force_flush(600_000)
    return started


def main() -> None:
    mode, base_url, api_key, count_text = sys.argv[1:5]
    width = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    count = int(count_text)
    before = accepted(base_url)
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()
    if mode == "ours":
        wall_start = run_ours(base_url, api_key, count, width)
    else:
        run_sdk(base_url, api_key, count, 1 if mode == "sdk_sequential" else width)
    wall = time.perf_counter() - wall_start
    cpu = cpu_seconds() - cpu_start
    delivered = accepted(base_url) - before
    emit_json(
        {
            "events_per_second": delivered / wall,
            "cpu_us_per_event": cpu / max(delivered, 1) * 1e6,
            "delivered_share": delivered / count,
            "seconds": wall,
        }
    )


if __name__ == "__main__":
    main()
