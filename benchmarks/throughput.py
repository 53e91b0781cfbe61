"""Scenario 2 (and the delivery side of 7): delivery throughput, client CPU per delivered event
and delivery under faults, one configuration per fresh interpreter::

    python -m benchmarks.throughput MODE BASE_URL API_KEY N [K] [--timeout S]
        [--http-client aiohttp|httpx] [--burst]

MODE: ``sdk_sequential`` / ``sdk_threads`` (official ``greenflash`` SDK, ``events.create``
called in a loop or from a K-thread pool, after one warm-up call that is not measured;
``--timeout`` is the SDK's request timeout, its own default 60 s when not given) or ``ours``
(spans with event attributes through a ``GreenflashSpanProcessor`` built with nothing but
``api_key``, ``base_url`` and ``product_id``: every other setting is the library's default;
``--http-client`` sets ``GREENFLASH_HTTP_CLIENT``, the only way to pick the fallback). Ours is
warmed up too (one event delivered before the clock starts), and span creation is included in
its CPU figure.

How ours emits: the app thread creates spans back to back, as a busy app would, but never lets
the span queue (``max_queue_size``, 2048 by default, which drops when full) overflow: before
each chunk of 128 spans it checks ``stats()["queued"]`` (what the worker has taken off the
queue) and sleeps 2 ms while the queue is more than 1792 deep. ``--burst`` emits all N at once
instead (N must fit the queue). Either way a run that dropped an event fails.

BASE_URL is the fast receiver's (``benchmarks._receiver``) or a ``ServerProcess``'s. Prints one
JSON line: events/s, CPU µs per delivered event (whole process), delivered share and count,
duplicates and requests the server saw, seconds from the first span (or call) until every event
is settled, the SDK's failed calls, and our ``stats()`` counters.

Helper mode, the SDK baselines against a fast receiver started for them::

    python -m benchmarks.throughput baselines [--latency-ms 20] [--fault-mix SPEC --seed N]
        [--sequential 250] [--pool 3500] [--threads 16] [--timeout S]

prints one JSON line ``{"sdk_sequential": {...}, "sdk_threads": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import greenflash
import httpx
from opentelemetry.sdk.trace import TracerProvider

from ._common import (
    PRODUCT_ID,
    FastReceiver,
    cpu_seconds,
    default_processor,
    emit_events,
    emit_json,
    emit_paced,
    fast_receiver,
    run_child,
)


def server_counts(base_url: str) -> tuple[int, int, int]:
    """(accepted events, duplicates, event requests) so far: the fast receiver's ``/stats`` at
    the origin, or else the library's ``EventsApiServer`` (``ServerProcess``)."""
    address = urlsplit(base_url)
    response = httpx.get(f"{address.scheme}://{address.netloc}/stats", timeout=30)
    if response.status_code == 200 and "accepted" in response.text:
        stats = response.json()
        return int(stats["accepted"]), int(stats["duplicates"]), int(stats["requests"])
    stats = httpx.get(base_url + "/_local/stats", timeout=30).json()
    return int(stats["events"]), int(stats["duplicates"]), int(stats.get("requests", 0))


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


def run_ours(base_url: str, api_key: str, count: int, burst: bool) -> dict[str, float]:
    processor = default_processor(base_url, api_key)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    emit_events(tracer, -1, 0)  # warm-up, not measured: one event delivered
    if not processor.force_flush(60_000) or processor.stats()["sent"] != 1:
        raise RuntimeError(f"warm-up event not delivered: {processor.stats()}")
    queued_before = processor.stats()["queued"]
    before = server_counts(base_url)
    cpu_start = cpu_seconds()
    started = time.perf_counter()
    if burst:
        if count > processor.config.max_queue_size:
            raise ValueError(f"a burst of {count} does not fit the span queue")
        emit_events(tracer, 0, count)
        waited = 0.0
    else:
        waited = emit_paced(
            processor, lambda start, stop: emit_events(tracer, start, stop), count, queued_before
        )
    emitted_seconds = time.perf_counter() - started
    flushed = processor.force_flush(900_000)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_start
    after = server_counts(base_url)
    stats = processor.stats()
    provider.shutdown()
    if stats["dropped"]:
        raise RuntimeError(f"the benchmark dropped events: {stats}")
    return {
        **_delivery_figures(count, wall, cpu, before, after),
        "emit_seconds": emitted_seconds,
        "paced_seconds": waited,
        "flushed": float(flushed),
        "failed": float(stats["failed"]),
        "sent": float(stats["sent"] - 1),
        "retried": float(stats["retried"]),
        "dropped": float(sum(stats["dropped"].values())),
    }


def run_sdk(
    base_url: str, api_key: str, count: int, threads: int, timeout: float | None
) -> dict[str, float]:
    sdk = SdkSender(base_url, api_key, timeout)
    before = server_counts(base_url)
    cpu_start, started = cpu_seconds(), time.perf_counter()
    failed = sdk.run(count, threads)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_start
    after = server_counts(base_url)
    sdk.close()
    return {
        **_delivery_figures(count, wall, cpu, before, after),
        "failed": float(failed),
    }


def _delivery_figures(
    count: int,
    wall: float,
    cpu: float,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
) -> dict[str, float]:
    """Rate, CPU and receiver counts (accepted, duplicates, requests) for one measured run."""
    delivered = after[0] - before[0]
    return {
        "events_per_second": delivered / wall,
        "cpu_us_per_event": cpu / max(delivered, 1) * 1e6,
        "delivered_share": delivered / count,
        "accepted": float(delivered),
        "duplicates": float(after[1] - before[1]),
        "requests": float(after[2] - before[2]),
        "seconds": wall,
    }


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
    parser.add_argument("width", type=int, nargs="?", default=16, help="SDK threads")
    parser.add_argument("--timeout", type=float, default=None, help="SDK request timeout, s")
    parser.add_argument("--http-client", choices=["aiohttp", "httpx"], default=None)
    parser.add_argument("--burst", action="store_true", help="ours: emit all N at once")
    arguments = parser.parse_args()
    if arguments.mode == "ours":
        if arguments.http_client:
            os.environ["GREENFLASH_HTTP_CLIENT"] = arguments.http_client
        result = run_ours(arguments.base_url, arguments.api_key, arguments.count, arguments.burst)
    else:
        threads = 1 if arguments.mode == "sdk_sequential" else arguments.width
        result = run_sdk(
            arguments.base_url, arguments.api_key, arguments.count, threads, arguments.timeout
        )
    emit_json(result)


if __name__ == "__main__":
    main()
