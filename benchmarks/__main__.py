"""Run every benchmark scenario and print ours / baseline / ratio, measured in the same run.

python -m benchmarks                 # full run (about 15 minutes)
python -m benchmarks --quick         # smaller counts, for a smoke check
python -m benchmarks --only faults   # one scenario
python -m benchmarks --only import --base ../base   # import time, also against a checkout

Delivery scenarios (2, 7) use the library at its defaults (only api_key, base_url and
product_id are passed) against ``benchmarks._receiver`` in its own process; CPU is the whole
emitting process's, per delivered event. Scenario 8 (conversations) measures conversation
capture: app-thread cost of an LLM span with the switch off and on, the worker's CPU per captured
message, and the memory of LLM calls waiting for their ids (see ``benchmarks/conversations.py``).
Scenario 9 (late_ids) holds 1k, 10k and 100k conversations open whose events wait for a
conversation id set last on the root: the share linked, the memory held per waiting event, and
the worker's CPU per event against the 1k run (see ``benchmarks/late_ids.py``).
Scenario 10 (latency) measures the queue before the worker: an isolated event's latency, idle CPU
and a burst of 10,000 events (see ``benchmarks/latency.py``; ``--base PATH`` adds the package at
PATH, e.g. a worktree of the previous commit, as a before figure in the same run; the import
scenario reads it too).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable

from otel_greenflash._config import DEFAULT_MAX_QUEUE_SIZE, MAX_PENDING_DELIVERIES

from . import conversations, import_time, late_ids, linking, overhead
from . import latency as queue_latency
from ._common import FastReceiver, Row, fast_receiver, print_header, print_rows, run_child

SDK_THREADS = 16
BIG_QUEUE = 40_000
"""The outage scenario's larger queue, for the memory slope against the default queue."""
HELD_BOUND = DEFAULT_MAX_QUEUE_SIZE + MAX_PENDING_DELIVERIES + 512
"""Events an outage holds at default settings: the queue, the delivery loop's pending, a batch."""
FAULT_MIX = "reset=0.06,hang=0.06,drip=0.06,429=0.06,503=0.06"


def ours_args(receiver: FastReceiver, count: int, *extra: str) -> list[str]:
    return ["ours", receiver.base_url, receiver.api_key, str(count), *extra]


def sdk_args(receiver: FastReceiver, count: int, threads: int) -> list[str]:
    mode = "sdk_sequential" if threads <= 1 else "sdk_threads"
    return [mode, receiver.base_url, receiver.api_key, str(count), str(threads)]


def measure(receiver: FastReceiver, args: list[str]) -> dict[str, float]:
    """One ``benchmarks.throughput`` run in a fresh interpreter, the receiver reset first (its
    counters, and its fault draw, which replays from the seed)."""
    receiver.reset()
    return run_child("throughput", *args)


def counted(result: dict[str, float], count: int) -> str:
    return f"{int(result['accepted'])}/{count}"


def delivery_rows(quick: bool) -> list[Row]:
    """Scenario 2: ours at default settings against the SDK, fast receiver, 20 and 0 ms."""
    rows: list[Row] = []
    scale = 5 if quick else 1
    for latency in (20, 0):
        n_ours = 10_000 // scale if latency else 20_000 // scale
        n_sequential = (250 if latency else 3000) // scale
        n_pool = 3500 // scale
        with fast_receiver(latency) as receiver:
            sequential = measure(receiver, sdk_args(receiver, n_sequential, 1))
            pool = measure(receiver, sdk_args(receiver, n_pool, SDK_THREADS))
            ours = measure(receiver, ours_args(receiver, n_ours))
            fallback = (
                measure(receiver, ours_args(receiver, n_ours, "--http-client", "httpx"))
                if latency
                else None
            )
        name = f"2 delivery @{latency} ms"
        targeted = latency == 20
        rows += [
            Row(
                f"{name}, {n_ours} events",
                "events/s",
                ours["events_per_second"],
                f"SDK {SDK_THREADS} threads",
                pool["events_per_second"],
                "≥ 3×" if targeted else "(info)",
            ),
            Row(
                f"{name}, {n_ours} events",
                "events/s",
                ours["events_per_second"],
                "SDK sequential",
                sequential["events_per_second"],
                "≥ 40×" if targeted else "(info)",
            ),
            Row(
                f"{name}, {n_ours} events",
                "CPU µs/event",
                ours["cpu_us_per_event"],
                f"SDK {SDK_THREADS} threads",
                pool["cpu_us_per_event"],
                "≤ 0.25×",
            ),
            Row(
                f"{name}: accepted {counted(ours, n_ours)}, SDK {counted(pool, n_pool)}",
                "share",
                ours["delivered_share"],
                f"SDK {SDK_THREADS} threads",
                pool["delivered_share"],
                "= 1.0",
            ),
            Row(
                f"{name}: duplicates",
                "events",
                ours["duplicates"],
                f"SDK {SDK_THREADS} threads",
                pool["duplicates"],
                "= 0",
            ),
        ]
        if latency:
            ideal = 64 / (latency / 1000)
            rows.append(
                Row(
                    f"{name}: vs 64 in flight × {latency} ms",
                    "events/s",
                    ours["events_per_second"],
                    "64 / latency (ideal)",
                    ideal,
                    "(info)",
                )
            )
        if fallback is not None:
            rows += [
                Row(
                    f"{name}, http_client=httpx",
                    "events/s",
                    fallback["events_per_second"],
                    f"SDK {SDK_THREADS} threads",
                    pool["events_per_second"],
                    "(info)",
                ),
                Row(
                    f"{name}, http_client=httpx",
                    "CPU µs/event",
                    fallback["cpu_us_per_event"],
                    f"SDK {SDK_THREADS} threads",
                    pool["cpu_us_per_event"],
                    "(info)",
                ),
                Row(
                    f"{name}, httpx: accepted {counted(fallback, n_ours)}, "
                    f"dup {int(fallback['duplicates'])}",
                    "share",
                    fallback["delivered_share"],
                    f"SDK {SDK_THREADS} threads",
                    pool["delivered_share"],
                    "= 1.0",
                ),
            ]
    return rows


def fault_rows(quick: bool) -> list[Row]:
    """Scenario 7: a burst against a slow endpoint, and a 30 % fault mix, at default settings."""
    scale = 5 if quick else 1
    burst = 2000 // scale
    with fast_receiver(500) as receiver:
        ours = measure(receiver, ours_args(receiver, burst, "--burst"))
        pool = measure(receiver, sdk_args(receiver, burst, SDK_THREADS))
    name = f"7 burst {burst} @500 ms"
    sdk = f"SDK {SDK_THREADS} threads"
    rows = [
        Row(
            f"{name}: accepted {counted(ours, burst)}, SDK {counted(pool, burst)}",
            "share",
            ours["delivered_share"],
            sdk,
            pool["delivered_share"],
            "= 1.0",
        ),
        Row(f"{name}: duplicates", "events", ours["duplicates"], sdk, pool["duplicates"], "= 0"),
        Row(f"{name}: time to drain", "seconds", ours["seconds"], sdk, pool["seconds"], "(info)"),
        Row(
            f"{name}: time to drain",
            "seconds",
            ours["seconds"],
            "64 in flight × 500 ms (ideal)",
            burst / (64 / 0.5),
            "(info)",
        ),
    ]
    mixed, mixed_sdk = 1000 // scale, 160 // scale
    with fast_receiver(20, FAULT_MIX, seed=0) as receiver:
        ours = measure(receiver, ours_args(receiver, mixed, "--burst"))
        pool = measure(receiver, sdk_args(receiver, mixed_sdk, SDK_THREADS))
    name = f"7 30 % faults @20 ms, {mixed} ev"
    sdk = f"{sdk}, {mixed_sdk} ev"
    rows += [
        Row(
            f"{name}: accepted {counted(ours, mixed)}",
            "share",
            ours["delivered_share"],
            f"{sdk}: {counted(pool, mixed_sdk)}",
            pool["delivered_share"],
            "= 1.0",
        ),
        Row(f"{name}: duplicates", "events", ours["duplicates"], sdk, pool["duplicates"], "= 0"),
        Row(
            f"{name}: time to drain",
            "seconds",
            ours["seconds"],
            sdk,
            pool["seconds"],
            "(info: counts differ)",
        ),
        Row(
            f"{name}: drain rate",
            "events/s",
            ours["events_per_second"],
            sdk,
            pool["events_per_second"],
            "(info)",
        ),
        Row(
            f"{name}: requests per event",
            "requests",
            ours["requests"] / mixed,
            sdk,
            pool["requests"] / mixed_sdk,
            "(info)",
        ),
    ]
    return rows


def outage_rows(quick: bool) -> list[Row]:
    count = 20_000 if quick else 100_000
    ours = run_child("outage", "ours", str(count))
    ours_fifth = run_child("outage", "ours", str(count // 5))
    big_queue = run_child("outage", "ours", str(count), str(BIG_QUEUE))
    none = run_child("outage", "none", str(count))
    slope = (big_queue["rss_growth_mb"] - ours["rss_growth_mb"]) / max(
        big_queue["held_events"] - ours["held_events"], 1.0
    )
    return [
        Row(
            f"3 outage: {count} events, dead endpoint",
            "RSS growth MB",
            ours["rss_growth_mb"],
            "no processor",
            none["rss_growth_mb"],
            "bounded",
        ),
        Row(
            f"3 outage: {count} vs {count // 5} events",
            "RSS growth MB",
            ours["rss_growth_mb"],
            f"ours, {count // 5} events",
            ours_fifth["rss_growth_mb"],
            "≈ 1 (bounded)",
        ),
        Row(
            "3 outage: events held (default bounds)",
            "events",
            ours["held_events"],
            "queue + loop's pending + 1 batch",
            HELD_BOUND,
            "≤ 1.0",
        ),
        Row(
            "3 outage: memory per 10k held events",
            "MB",
            slope * 10_000,
            f"(slope, queue {BIG_QUEUE} vs default)",
            1.0,
            "(info)",
        ),
        Row(
            "3 outage: p99.9 span on app thread",
            "ms",
            ours["p999_span_ms"],
            "no processor",
            none["p999_span_ms"],
            "never blocked",
        ),
        Row(
            "3 outage: slowest span on app thread",
            "ms",
            ours["slowest_span_ms"],
            "no processor",
            none["slowest_span_ms"],
            "(info: GIL)",
        ),
        Row(
            "3 outage: mean span on app thread",
            "µs",
            ours["mean_span_us"],
            "no processor",
            none["mean_span_us"],
            "(info)",
        ),
    ]


def shutdown_rows() -> list[Row]:
    with fast_receiver(60_000) as server:  # answers after a minute: hanging
        result = run_child("shutdown_hang", server.base_url, server.api_key)
    return [
        Row(
            "4 shutdown(2000) vs hanging server",
            "seconds",
            result["shutdown_seconds"],
            "bound",
            2.5,
            "≤ 1.0",
        )
    ]


def spool_rows(quick: bool) -> list[Row]:
    count = str(5_000 if quick else 20_000)
    spooled, memory = [], []
    for _ in range(3):  # alternate, then take medians: the machine is noisy
        spooled.append(run_child("spool_cost", "spool", count))
        memory.append(run_child("spool_cost", "memory", count))
    assert all(run["spooled"] for run in spooled), "the spool was not in use"
    assert all(run["sent"] == float(count) for run in spooled + memory)
    with_spool = statistics.median(run["cpu_us_per_event"] for run in spooled)
    without = statistics.median(run["cpu_us_per_event"] for run in memory)
    return [
        Row(
            "6 spool: pipeline CPU (no network)",
            "µs/event",
            with_spool,
            "no spool",
            without,
            "(info)",
        ),
    ]


def import_rows(quick: bool, base_tree: str | None) -> list[Row]:
    """Scenario 11: ``import otel_greenflash`` after the OTel SDK, fresh interpreters, medians
    of interleaved rounds (against ``--base`` too, when given)."""
    medians = import_time.measure(3 if quick else 9, base_tree)
    ours = medians["ours"]
    rows = [
        Row(
            "11 import otel_greenflash after the SDK",
            "ms",
            ours["ours_ms"],
            "bound",
            100.0,
            "≤ 1.0",
        ),
        Row(
            "11 import otel_greenflash after the SDK",
            "ms",
            ours["ours_ms"],
            "import opentelemetry.sdk.trace",
            ours["sdk_ms"],
            "(info)",
        ),
        Row(
            "11 import otel_greenflash after the SDK",
            "CPU ms",
            ours["ours_cpu_ms"],
            "import opentelemetry.sdk.trace",
            ours["sdk_cpu_ms"],
            "(info)",
        ),
        Row(
            "11 import: HTTP modules loaded",
            "modules",
            ours["network_modules"],
            "(none until delivering)",
            0.0,
            "= 0",
        ),
    ]
    if "base" in medians:
        base = medians["base"]
        rows += [
            Row(
                "11 import otel_greenflash after the SDK",
                "ms",
                ours["ours_ms"],
                "--base commit (before)",
                base["ours_ms"],
                "(info)",
            ),
            Row(
                "11 import otel_greenflash after the SDK",
                "CPU ms",
                ours["ours_cpu_ms"],
                "--base commit (before)",
                base["ours_cpu_ms"],
                "(info)",
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        choices=[
            "overhead",
            "throughput",
            "outage",
            "shutdown",
            "linking",
            "spool",
            "faults",
            "conversations",
            "late_ids",
            "import",
            "latency",
        ],
    )
    parser.add_argument(
        "--base",
        metavar="PATH",
        help="also measure the otel_greenflash package at PATH (a checkout of an earlier "
        "commit) where a scenario supports it (latency, import), as 'base commit (before)'",
    )
    arguments = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", {platform.platform()}"
    )
    scenarios: dict[str, Callable[[], list[Row]]] = {
        "overhead": lambda: overhead.run(arguments.quick) + overhead.run_live(arguments.quick),
        "throughput": lambda: delivery_rows(arguments.quick),
        "outage": lambda: outage_rows(arguments.quick),
        "shutdown": shutdown_rows,
        "linking": lambda: linking.run(arguments.quick),
        "spool": lambda: spool_rows(arguments.quick),
        "faults": lambda: fault_rows(arguments.quick),
        "conversations": lambda: conversations.run(arguments.quick),
        "late_ids": lambda: late_ids.run(arguments.quick),
        "import": lambda: import_rows(arguments.quick, arguments.base),
        "latency": lambda: queue_latency.run(arguments.quick, arguments.base),
    }
    print_header()
    for name, scenario in scenarios.items():
        if arguments.only in (None, name):
            print_rows(scenario())  # as each scenario ends: a later failure loses nothing


if __name__ == "__main__":
    main()
