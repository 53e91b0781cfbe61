"""Scenario 2: delivery throughput and client CPU per delivered event, one configuration per
fresh interpreter: ``python -m benchmarks.throughput MODE BASE_URL API_KEY N [K] [--timeout S]``.

MODE: ``sdk_sequential`` / ``sdk_threads`` (official ``greenflash`` SDK, ``events.create``
called in a loop or from a K-thread pool, after one warm-up call that is not measured;
``--timeout`` is the SDK's request timeout, its own default 60 s when not given) or ``ours``
(spans with event attributes through ``GreenflashSpanProcessor`` with K senders; span creation
is included in the CPU figure).
BASE_URL may be the fast receiver's (``benchmarks._receiver``) or a ``ServerProcess``'s.
Prints one JSON line: events/s, CPU µs per delivered event (whole process), delivered share,
and the calls that failed (SDK) and duplicates the server saw during the run.

Helper mode, the SDK baselines against a fast receiver started for them::

    python -m benchmarks.throughput baselines [--latency-ms 20] [--fault-mix SPEC --seed N]
        [--sequential 250] [--pool 3500] [--threads 16] [--timeout S]

prints one JSON line ``{"sdk_sequential": {...}, "sdk_threads": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import greenflash
import httpx
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor

from ._common import PRODUCT_ID, FastReceiver, cpu_seconds, emit_json, fast_receiver, run_child


def server_counts(base_url: str) -> tuple[int, int]:
    """(accepted events, duplicates) so far: the fast receiver's ``/stats`` at the origin, or
    else the library's ``EventsApiServer`` (``ServerProcess``) at ``{base_url}/_local/stats``."""
    address = urlsplit(base_url)
    response = httpx.get(f"{address.scheme}://{address.netloc}/stats", timeout=30)
    if response.status_code == 200 and "accepted" in response.text:
        stats = response.json()
        return int(stats["accepted"]), int(stats["duplicates"])
    stats = httpx.get(base_url + "/_local/stats", timeout=30).json()
    return int(stats["events"]), int(stats["duplicates"])


def accepted(base_url: str) -> int:
    return server_counts(base_url)[0]


class SdkSender:
    """The official SDK client, built and warmed up (one event sent) before anything is
    measured, so neither its construction nor its first-call imports count."""

    def __init__(self, base_url: str, api_key: str, timeout: float | None = None) -> None:
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        self.client = greenflash.Greenflash(api_key=api_key, base_url=base_url, **options)
        self.run_id = time.time_ns()
        self.create(-1)

    def create(self, index: int) -> bool:
        """One ``events.create`` (with the SDK's own retries); False when it raised."""
        try:
            self.client.events.create(
                event_type="task_success",
                product_id=PRODUCT_ID,
                value=str(index),
                value_type="numeric",
                external_conversation_id=f"chat-{index}",
                insert_id=f"sdk-{self.run_id}-{index}",
            )
        except greenflash.APIError:
            return False
        return True

    def run(self, count: int, threads: int) -> int:
        """Sends ``count`` events in a loop or from a ``threads`` pool; returns how many calls
        failed (a failure does not stop the run)."""
        if threads <= 1:
            return sum(not self.create(index) for index in range(count))
        with ThreadPoolExecutor(threads) as pool:
            return sum(not ok for ok in pool.map(self.create, range(count)))

    def close(self) -> None:
        self.client.close()


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


def sdk_baselines(
    receiver: FastReceiver,
    sequential: int,
    pool: int,
    threads: int = 16,
    timeout: float | None = None,
) -> dict[str, dict[str, float]]:
    """Both SDK baselines, each in a fresh interpreter, against ``receiver``, which is reset
    before each (so a fault mix replays from its seed)."""
    extra = [] if timeout is None else ["--timeout", str(timeout)]
    args = (receiver.base_url, receiver.api_key)
    results: dict[str, dict[str, float]] = {}
    receiver.reset()
    results["sdk_sequential"] = run_child("throughput", "sdk_sequential", *args, str(sequential))
    receiver.reset()
    results["sdk_threads"] = run_child(
        "throughput", "sdk_threads", *args, str(pool), str(threads), *extra
    )
    return results


def baselines_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput baselines")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--fault-mix", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequential", type=int, default=250, help="events, SDK sequential")
    parser.add_argument("--pool", type=int, default=3500, help="events, SDK thread pool")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=None, help="SDK request timeout, s")
    arguments = parser.parse_args(argv)
    with fast_receiver(arguments.latency_ms, arguments.fault_mix, arguments.seed) as receiver:
        results = sdk_baselines(
            receiver, arguments.sequential, arguments.pool, arguments.threads, arguments.timeout
        )
    print(json.dumps(results), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["baselines"]:
        baselines_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput")
    parser.add_argument("mode", choices=["sdk_sequential", "sdk_threads", "ours"])
    parser.add_argument("base_url")
    parser.add_argument("api_key")
    parser.add_argument("count", type=int)
    parser.add_argument("width", type=int, nargs="?", default=16)
    parser.add_argument("--timeout", type=float, default=None, help="SDK request timeout, s")
    arguments = parser.parse_args()
    base_url, api_key, count = arguments.base_url, arguments.api_key, arguments.count
    sdk = None if arguments.mode == "ours" else SdkSender(base_url, api_key, arguments.timeout)
    before, duplicates_before = server_counts(base_url)
    failed = 0
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()
    if sdk is None:
        wall_start = run_ours(base_url, api_key, count, arguments.width)
    else:
        failed = sdk.run(count, 1 if arguments.mode == "sdk_sequential" else arguments.width)
    wall = time.perf_counter() - wall_start
    cpu = cpu_seconds() - cpu_start
    after, duplicates_after = server_counts(base_url)
    delivered = after - before
    emit_json(
        {
            "events_per_second": delivered / wall,
            "cpu_us_per_event": cpu / max(delivered, 1) * 1e6,
            "delivered_share": delivered / count,
            "seconds": wall,
            "failed": float(failed),
            "duplicates": float(duplicates_after - duplicates_before),
        }
    )
    if sdk is not None:
        sdk.close()


if __name__ == "__main__":
    main()
