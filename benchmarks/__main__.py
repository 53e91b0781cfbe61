"""Run every benchmark scenario and print ours / baseline / ratio, measured in the same run.

python -m benchmarks            # full run (several minutes)
python -m benchmarks --quick    # smaller counts, for a smoke check
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable

from . import linking, overhead
from ._common import Row, print_header, print_rows, run_child, server_process


def throughput_rows(quick: bool) -> list[Row]:
    rows: list[Row] = []
    scale = 5 if quick else 1
    for latency in (20, 0):
        with server_process(latency) as server:
            args = (server.base_url, server.api_key)
            sequential = run_child(
                "throughput", "sdk_sequential", *args, str((250 if latency else 3000) // scale)
            )
            pool = run_child("throughput", "sdk_threads", *args, str(3500 // scale), "16")
            ours = run_child("throughput", "ours", *args, str(10_000 // scale), "64")
            ours16 = run_child("throughput", "ours", *args, str(4000 // scale), "16")
        name = f"2 delivery @{latency} ms"
        target_pool = "≥ 3×" if latency else "(info)"
        target_seq = "≥ 40×" if latency else "(info)"
        rows += [
            Row(
                f"{name}, 64 senders",
                "events/s",
                ours["events_per_second"],
                "SDK 16 threads",
                pool["events_per_second"],
                target_pool,
            ),
            Row(
                f"{name}, 64 senders",
                "events/s",
                ours["events_per_second"],
                "SDK sequential",
                sequential["events_per_second"],
                target_seq,
            ),
            Row(
                f"{name}, 64 senders",
                "CPU µs/event",
                ours["cpu_us_per_event"],
                "SDK 16 threads",
                pool["cpu_us_per_event"],
                "≤ 0.5×" if latency else "(info)",
            ),
            Row(
                f"{name}, 16 senders (default)",
                "events/s",
                ours16["events_per_second"],
                "SDK 16 threads",
                pool["events_per_second"],
                "(info)",
            ),
            Row(
                f"{name}, 16 senders (default)",
                "CPU µs/event",
                ours16["cpu_us_per_event"],
                "SDK 16 threads",
                pool["cpu_us_per_event"],
                "(info)",
            ),
            Row(
                f"{name}, delivered",
                "share",
                min(ours["delivered_share"], ours16["delivered_share"]),
                "SDK 16 threads",
                pool["delivered_share"],
                "= 1.0",
            ),
        ]
    return rows


def outage_rows(quick: bool) -> list[Row]:
    count = 20_000 if quick else 100_000
    ours = run_child("outage", "ours", str(count))
    ours_fifth = run_child("outage", "ours", str(count // 5))
    big_queue = run_child("outage", "ours", str(count), "20000")
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
            "2 × queue + 1 batch",
            2 * 2048 + 512,
            "≤ 1.0",
        ),
        Row(
            "3 outage: memory per 10k held events",
            "MB",
            slope * 10_000,
            "(slope, queue 20000 vs 2048)",
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
    with server_process(60_000) as server:
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", choices=["overhead", "throughput", "outage", "shutdown", "linking", "spool"]
    )
    arguments = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", {platform.platform()}"
    )
    scenarios: dict[str, Callable[[], list[Row]]] = {
        "overhead": lambda: overhead.run(arguments.quick),
        "throughput": lambda: throughput_rows(arguments.quick),
        "outage": lambda: outage_rows(arguments.quick),
        "shutdown": shutdown_rows,
        "linking": lambda: linking.run(arguments.quick),
        "spool": lambda: spool_rows(arguments.quick),
    }
    print_header()
    for name, scenario in scenarios.items():
        if arguments.only in (None, name):
            print_rows(scenario())  # as each scenario ends: a later failure loses nothing


if __name__ == "__main__":
    main()
