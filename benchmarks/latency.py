"""Scenario 10: the queue in front of the worker, at default settings.

- An isolated event's latency: from its span's end to the receiver reading the request
  (``benchmarks._receiver`` records ``time.monotonic()``, system-wide on Linux), events spaced
  apart so each reaches an idle pipeline; baseline: the same body POSTed directly on a kept-alive
  connection from the same kind of process (the request's own share of the latency).
- Idle CPU: a process with the pipeline started (one event delivered, then nothing) sleeping,
  against a bare ``TracerProvider``.
- A burst of 10,000 event spans emitted as fast as the application can: delivered share and the
  queue's peak in records and bytes; baseline (info) the SDK's ``BatchSpanProcessor`` at its
  defaults (a queue of 2,048) with an exporter that does nothing.

Each child runs in a fresh interpreter: ``python -m benchmarks.latency MODE ARGS``. With
``--root PATH`` first, the child imports ``otel_greenflash`` from ``PATH`` (a checkout of an
earlier commit: ``python -m benchmarks --only latency --base PATH`` measures before and after
in the same run).
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

ISOLATED_SPACING_SECONDS = 0.3
"""Between two isolated events: the worker is waiting again when the next one ends."""
POLL_SECONDS = 0.005


# -- children ----------------------------------------------------------------------------------


def _tracer_with_ours(base_url: str, api_key: str) -> tuple[Any, Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider

    from ._common import default_processor

    provider = TracerProvider()
    processor = default_processor(base_url, api_key)
    provider.add_span_processor(processor)
    return provider, processor, provider.get_tracer("bench")


def _event_span(tracer: Any, index: int) -> Any:
    span = tracer.start_span("task")
    span.set_attributes(
        {
            "greenflash.event.type": "task_success",
            "greenflash.event.value": index,
            "greenflash.conversation.external_id": f"chat-{index}",
        }
    )
    return span


def _wait_accepted(base_url: str, count: int, timeout: float = 30.0) -> dict[str, Any]:
    from ._common import receiver_stats

    deadline = time.monotonic() + timeout
    while True:
        stats = receiver_stats(base_url)
        if stats["accepted"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(POLL_SECONDS)


def isolated_ours(base_url: str, api_key: str, count: int) -> dict[str, float]:
    """Span end → request read by the receiver, for ``count`` events spaced apart."""
    from ._common import receiver_stats

    provider, processor, tracer = _tracer_with_ours(base_url, api_key)
    _event_span(tracer, -1).end()  # warm: connection open, code paths run once
    processor.force_flush()
    accepted = receiver_stats(base_url)["accepted"]
    latencies: list[float] = []
    for index in range(count):
        time.sleep(ISOLATED_SPACING_SECONDS)
        span = _event_span(tracer, index)
        ended = time.monotonic()
        span.end()
        accepted += 1
        stats = _wait_accepted(base_url, accepted)
        latencies.append(stats["last_received"] - ended)
    provider.shutdown()
    return _summary(latencies)


def isolated_post(base_url: str, api_key: str, count: int) -> dict[str, float]:
    """The same: an event body POSTed directly (one kept-alive connection), send → read."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    path = address.path.rstrip("/") + "/events"
    latencies: list[float] = []
    for index in range(-1, count):
        time.sleep(ISOLATED_SPACING_SECONDS if index >= 0 else 0)
        body = json.dumps(
            {
                "eventType": "task_success",
                "value": str(index),
                "insertId": f"post-{uuid.uuid4().hex}",
                "conversationExternalId": f"chat-{index}",
            }
        )
        sent = time.monotonic()
        connection.request("POST", path, body, headers)
        connection.getresponse().read()
        if index >= 0:
            from ._common import receiver_stats

            latencies.append(receiver_stats(base_url)["last_received"] - sent)
    connection.close()
    return _summary(latencies)


def _summary(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "mean_ms": statistics.fmean(ordered) * 1000,
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def idle(mode: str, seconds: float, base_url: str, api_key: str) -> dict[str, float]:
    """CPU of this process over ``seconds`` of doing nothing, with the pipeline started and one
    event delivered (``ours``) or with a bare TracerProvider (``bare``)."""
    import gc

    from opentelemetry.sdk.trace import TracerProvider

    from ._common import cpu_seconds

    if mode == "ours":
        provider, processor, tracer = _tracer_with_ours(base_url, api_key)
        _event_span(tracer, 0).end()
        processor.force_flush()
    else:
        provider = TracerProvider()
        provider.get_tracer("bench").start_span("plain").end()
    gc.collect()
    time.sleep(1.0)  # what starting left to do
    began = cpu_seconds()
    time.sleep(seconds)
    used = cpu_seconds() - began
    provider.shutdown()
    return {"cpu_ms_per_10s": used * 1000 * 10 / seconds}


def burst(mode: str, count: int, base_url: str, api_key: str) -> dict[str, float]:
    """``count`` event spans as fast as the application can, then a flush: what arrived, and
    the queue's peak (``ours``); the SDK's ``BatchSpanProcessor`` with an exporter that does
    nothing, counting what reached it (``sdk``)."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from ._common import emit_events, receiver_stats

    if mode == "sdk":
        exported = [0]

        class Counting(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                exported[0] += len(spans)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Counting()))
        tracer = provider.get_tracer("bench")
        began = time.perf_counter()
        emit_events(tracer, 0, count)
        emitted = time.perf_counter() - began
        provider.force_flush()
        provider.shutdown()
        return {"delivered_share": exported[0] / count, "emit_seconds": emitted}
    provider, processor, tracer = _tracer_with_ours(base_url, api_key)
    _event_span(tracer, -1).end()
    processor.force_flush()
    accepted_before = receiver_stats(base_url)["accepted"]
    began = time.perf_counter()
    emit_events(tracer, 0, count)
    emitted = time.perf_counter() - began
    processor.force_flush(300_000)
    drained = time.perf_counter() - began
    stats = processor.stats()
    worker = processor._worker
    peak_items, peak_bytes = getattr(worker, "peak", (float("nan"), float("nan")))
    provider.shutdown()
    accepted = receiver_stats(base_url)["accepted"] - accepted_before
    return {
        "delivered_share": accepted / count,
        "dropped": float(sum(stats["dropped"].values())),
        "emit_seconds": emitted,
        "drain_seconds": drained,
        "peak_records": float(peak_items),
        "peak_mb": peak_bytes / 2**20,
    }


def main(argv: list[str]) -> None:
    if argv[0] == "--root":  # before anything imports otel_greenflash
        sys.path.insert(0, argv[1])
        argv = argv[2:]
    from ._common import emit_json

    mode, *rest = argv
    if mode == "isolated":
        kind, base_url, api_key, count = rest
        run = isolated_ours if kind == "ours" else isolated_post
        emit_json(run(base_url, api_key, int(count)))
    elif mode == "idle":
        kind, seconds, base_url, api_key = rest
        emit_json(idle(kind, float(seconds), base_url, api_key))
    elif mode == "burst":
        kind, count, base_url, api_key = rest
        emit_json(burst(kind, int(count), base_url, api_key))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


# -- the parent: rows ----------------------------------------------------------------------------


def run(quick: bool, base: str | None = None) -> list[Any]:
    """Scenario 10's rows; ``base``: also measure the package at that path (before)."""
    from ._common import Row, fast_receiver, run_child

    def child(root: str | None, *args: str) -> dict[str, float]:
        return run_child("latency", *(("--root", root) if root else ()), *args)

    isolated_count = 10 if quick else 40
    idle_seconds = 5.0 if quick else 15.0
    burst_count = 10_000
    rows: list[Any] = []
    with fast_receiver(0) as receiver:
        url, key = receiver.base_url, receiver.api_key
        latency = {"ours": child(None, "isolated", "ours", url, key, str(isolated_count))}
        latency["post"] = child(None, "isolated", "post", url, key, str(isolated_count))
        if base:
            latency["base"] = child(base, "isolated", "ours", url, key, str(isolated_count))
        name = f"10 isolated event ({isolated_count}, {ISOLATED_SPACING_SECONDS:g} s apart)"
        for metric in ("mean_ms", "p95_ms"):
            rows.append(
                Row(
                    f"{name}: span end → received",
                    metric,
                    latency["ours"][metric],
                    "direct POST, send → received",
                    latency["post"][metric],
                    "(ours ≤ 100 ms)",
                )
            )
            if base:
                rows.append(
                    Row(
                        f"{name}: span end → received",
                        metric,
                        latency["ours"][metric],
                        "base commit (before)",
                        latency["base"][metric],
                        "(info)",
                    )
                )
        # Idle processes disturb each other little: run them side by side, same seconds.
        kinds = [(None, "ours"), (None, "bare")] + ([(base, "ours")] if base else [])
        rounds = 1 if quick else 3
        idle_runs: dict[str, list[float]] = {"ours": [], "bare": [], "base": []}
        for _ in range(rounds):
            with ThreadPoolExecutor(len(kinds)) as pool:
                futures = [
                    (
                        ("base" if root else kind),
                        pool.submit(child, root, "idle", kind, str(idle_seconds), url, key),
                    )
                    for root, kind in kinds
                ]
                for label, future in futures:
                    idle_runs[label].append(future.result()["cpu_ms_per_10s"])
        idle_ours = statistics.median(idle_runs["ours"])
        rows.append(
            Row(
                f"10 idle {idle_seconds:g} s, pipeline started (median of {rounds})",
                "CPU ms / 10 s",
                idle_ours,
                "bare TracerProvider",
                statistics.median(idle_runs["bare"]),
                "(info)",
            )
        )
        if base:
            rows.append(
                Row(
                    f"10 idle {idle_seconds:g} s, pipeline started (median of {rounds})",
                    "CPU ms / 10 s",
                    idle_ours,
                    "base commit (before)",
                    statistics.median(idle_runs["base"]),
                    "(not higher)",
                )
            )
        receiver.reset()
        ours = child(None, "burst", "ours", str(burst_count), url, key)
        receiver.reset()
        sdk = child(None, "burst", "sdk", str(burst_count), url, key)
        before = None
        if base:
            receiver.reset()
            before = child(base, "burst", "ours", str(burst_count), url, key)
    name = f"10 burst of {burst_count} event spans"
    rows += [
        Row(
            f"{name}, emitted in {ours['emit_seconds']:.2f} s",
            "share",
            ours["delivered_share"],
            "SDK BatchSpanProcessor, no-op exporter",
            sdk["delivered_share"],
            "= 1.0",
        ),
        Row(
            f"{name}: queue peak",
            "records",
            ours["peak_records"],
            "max_queue_size",
            16384,
            "(info)",
        ),
        Row(f"{name}: queue peak", "MB", ours["peak_mb"], "max_queue_bytes", 64.0, "≤ 1.0×"),
        Row(
            f"{name}: time to drain",
            "seconds",
            ours["drain_seconds"],
            "emitting",
            ours["emit_seconds"],
            "(info)",
        ),
    ]
    if before is not None:
        rows.append(
            Row(
                f"{name}: dropped {int(ours['dropped'])}, before {int(before['dropped'])}",
                "share",
                ours["delivered_share"],
                "base commit (before)",
                before["delivered_share"],
                "(info)",
            )
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
