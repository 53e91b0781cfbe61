"""Delivery semantics of the asyncio engine, end to end against the independent receiver.

Real sockets, a real OpenTelemetry ``TracerProvider`` with ``GreenflashSpanProcessor``, and the
stdlib-only :mod:`tests.support.independent_receiver` (which shares no code with the
client), no mocks.
Each test names the contract clause it checks and the bug it would catch. Time bounds are
generous upper bounds that catch hangs; the only lower bounds are the ones a pause promises
(no request before the server said so), computed from the receiver's own clock readings.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import (
    AuthenticationError,
    BusinessEvent,
    GreenflashConfig,
    GreenflashSpanProcessor,
    RetriesExhaustedError,
)
from tests.support.common import PRODUCT_ID
from tests.support.delivery_lab import (
    CLIENTS,
    DropCallback,
    ErrorCallback,
    ErrorLog,
    ServerLab,
    accepted_values,
    retries_of,
    value_of,
    wait_until,
)
from tests.support.independent_receiver import Fault, Receiver
from tests.support.processes import clean_env, run_script

# --------------------------------------------------------------------------- helpers


class Lab(ServerLab):
    """Starts receivers, proxies and processors; tears them down in the right order."""

    def __init__(self) -> None:
        super().__init__()
        self.processors: list[GreenflashSpanProcessor] = []

    def processor(
        self,
        receiver: Receiver,
        *,
        http_client: str = "aiohttp",
        base_url: str | None = None,
        api_key: str | None = None,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        **settings: Any,
    ) -> GreenflashSpanProcessor:
        """A processor aimed at ``receiver``; every other setting is the library default
        (the environment is ignored) unless given in ``settings``."""
        config = GreenflashConfig.resolve(
            {},
            api_key=api_key or receiver.api_key,
            base_url=base_url or receiver.base_url,
            product_id=PRODUCT_ID,
            http_client=http_client,
            **settings,
        )
        processor = GreenflashSpanProcessor(config=config, on_error=on_error, on_drop=on_drop)
        self.processors.append(processor)
        return processor

    def close(self) -> None:
        for processor in self.processors:
            processor.shutdown(timeout_millis=2000)
        self.close_servers()


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab()
    yield made
    made.close()


def emit(processor: GreenflashSpanProcessor, count: int, label: str = "e") -> list[str]:
    """End ``count`` event spans (values ``label0``...); return the values."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    values = [f"{label}{index}" for index in range(count)]
    for value in values:
        with tracer.start_as_current_span("checkout") as span:
            span.set_attributes(
                {"greenflash.event.type": "task_success", "greenflash.event.value": value}
            )
    return values


def worker_took(processor: GreenflashSpanProcessor, count: int, timeout: float) -> bool:
    """Wait until the worker has taken ``count`` events from the span queue."""
    return wait_until(lambda: processor.stats()["queued"] >= count, timeout)


# --------------------------------------------------------------------------- lanes and bounds


@pytest.mark.parametrize("http_client", CLIENTS)
def test_burst_at_default_settings_uses_lanes_up_to_the_default_limit(
    lab: Lab, http_client: str
) -> None:
    """2,000 events, 0.5 s per answer, defaults only: all once, at most 64 in flight.

    Catches: a limit other than 64 (or none), sequential sending, lost or doubled events."""
    receiver = lab.receiver(latency_seconds=0.5)
    processor = lab.processor(receiver, http_client=http_client)
    values = emit(processor, 2000)
    assert processor.force_flush(120_000)

    assert accepted_values(receiver) == sorted(values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["dropped"]) == (2000, 0, {})
    assert 16 < receiver.max_concurrency <= 64


def test_waiting_for_a_lane_does_not_run_the_retry_window(lab: Lab) -> None:
    """2 lanes, 0.25 s answers, a 1 s retry window, 16 events: the last ones wait ~2 s for a
    lane and must still be sent. Catches: a window that starts when the event is taken."""
    receiver = lab.receiver(latency_seconds=0.25)
    errors = ErrorLog()
    processor = lab.processor(
        receiver, max_concurrency=2, export_timeout_seconds=1.0, on_error=errors
    )
    values = emit(processor, 16)
    assert processor.force_flush(30_000)

    assert errors.items == []
    assert accepted_values(receiver) == sorted(values)
    assert processor.stats()["failed"] == 0
    assert receiver.max_concurrency <= 2


def test_full_span_queue_refuses_new_events_and_counts_them(lab: Lab) -> None:
    """A slow API and a queue of 20: new events are refused (counted, called back), the
    application thread never waits on delivery, and no event is lost silently."""
    receiver = lab.receiver(latency_seconds=0.2)
    dropped: list[str] = []
    lock = threading.Lock()

    def on_drop(events: Sequence[BusinessEvent], reason: str) -> None:
        with lock:
            dropped.extend(reason for _ in events)

    processor = lab.processor(receiver, max_queue_size=20, max_concurrency=4, on_drop=on_drop)
    started = time.monotonic()
    emit(processor, 300)
    emitting = time.monotonic() - started
    assert processor.force_flush(60_000)

    stats = processor.stats()
    refused = stats["dropped"].get("queue_full", 0)
    assert refused > 0
    assert set(stats["dropped"]) == {"queue_full"}
    assert dropped == ["queue_full"] * refused
    assert stats["sent"] + refused == 300
    assert stats["failed"] == 0
    assert len(receiver.accepted) == stats["sent"]
    assert receiver.duplicates == 0
    # Sending all 300 would take >= 15 s; the app thread must not have waited for that.
    assert emitting < 5.0


# --------------------------------------------------------------------------- throttling pause


@pytest.mark.parametrize("http_client", CLIENTS)
@pytest.mark.parametrize("hint", ["seconds", "milliseconds", "http-date"])
def test_retry_after_pauses_every_lane_past_the_request_timeout(
    lab: Lab, http_client: str, hint: str
) -> None:
    """429/503 with a 2 s hint (longer than the 1 s request timeout): no new request starts
    before the hint ends, on any lane; then everything is delivered.

    Catches: a per-event-only wait (other lanes keep sending), a hint cut to the request
    timeout, an unparsed header form (retry-after-ms, HTTP date)."""
    status, headers = {
        "seconds": (429, {"Retry-After": "2"}),
        "milliseconds": (503, {"retry-after-ms": "2000"}),
        "http-date": (429, {"Retry-After": email.utils.formatdate(time.time() + 3, usegmt=True)}),
    }[hint]
    receiver = lab.receiver()
    receiver.inject(Fault.status(status, headers), times=3)
    # Batches of 10 that leave when full: the first 10 are one round (the three throttled
    # answers all theirs), the second 20 reach the loop as two batches during the pause.
    processor = lab.processor(
        receiver,
        http_client=http_client,
        timeout_seconds=1.0,
        schedule_delay_seconds=30.0,
        send_delay_seconds=30.0,
        max_export_batch_size=10,
    )
    first = emit(processor, 10, "first")
    assert wait_until(lambda: processor.stats()["retried"] >= 1, 10)
    mark = time.monotonic()  # the client has seen a throttling answer: the pause is set
    second = emit(processor, 20, "second")
    assert worker_took(processor, 30, 10)
    taken = time.monotonic()
    assert processor.force_flush(30_000)

    requests = receiver.requests
    throttled = [r for r in requests if r.status == status]
    assert len(throttled) == 3
    if hint == "http-date":
        wall_to_monotonic = time.time() - time.monotonic()
        moment = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
        pause_end = moment - wall_to_monotonic - 0.05  # slack: mapping wall to monotonic time
    else:
        # The client read each answer after the receiver recorded the request. The pause the
        # client had seen at ``mark`` ends 2 s after the first throttled request at the
        # earliest. A later throttled request can be the first of the burst that the end of
        # that pause lets go: the burst's other requests were on the wire before its answer
        # came, so they are not early against it.
        pause_end = min(r.received_at for r in throttled) + 2.0
    assert taken < pause_end, "precondition: the new events reached the loop during the pause"
    ids = value_of(receiver)
    retried = retries_of(requests)
    new = [r for r in requests if ids.get(r.insert_id or "", "").startswith("second")]
    held = [r for r in new + retried if r.received_at > mark]
    assert len(new) == 20
    assert len(retried) == 3
    assert len(held) == 23
    early = [round(pause_end - r.received_at, 3) for r in held if r.received_at < pause_end]
    assert early == [], f"requests started this long (s) before the pause ended: {early}"

    assert accepted_values(receiver) == sorted(first + second)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["retried"], stats["failed"], stats["sent"]) == (3, 0, 30)


def test_pause_longer_than_the_retry_window_fails_started_events_only(lab: Lab) -> None:
    """A 1 s retry window, then ``Retry-After: 3``.

    * the throttled event fails at once (its retry cannot fit its window);
    * events that got a 500 come due during the pause and fail when it ends (window over),
      without another request;
    * events taken during the pause have no window running yet: they are sent after it.

    Each one ends in exactly one of sent/failed (RetriesExhaustedError via on_error)."""
    doomed_count, later_count = 8, 5
    receiver = lab.receiver()
    receiver.inject(Fault.status(429, {"Retry-After": "3"}))
    receiver.inject(Fault.status(500), times=doomed_count - 1)
    errors = ErrorLog()
    # The doomed events leave as one batch (the last fills it), so all are in flight when the
    # 429 pauses the endpoint; the later ones leave on the flush.
    processor = lab.processor(
        receiver,
        export_timeout_seconds=1.0,
        schedule_delay_seconds=30.0,
        send_delay_seconds=30.0,
        max_export_batch_size=doomed_count,
        on_error=errors,
    )
    doomed = emit(processor, doomed_count, "doomed")
    assert wait_until(lambda: len(errors.items) >= 1, 10)  # the throttled one, at once
    later = emit(processor, later_count, "later")
    assert processor.force_flush(30_000)

    assert all(isinstance(error, RetriesExhaustedError) for error, _ in errors.items)
    assert errors.values == sorted(doomed)
    assert accepted_values(receiver) == sorted(later)
    stats = processor.stats()
    assert (stats["failed"], stats["sent"]) == (doomed_count, later_count)
    assert stats["sent"] + stats["failed"] == doomed_count + later_count
    sent_ids = set(value_of(receiver))
    doomed_requests = [r for r in receiver.requests if r.insert_id not in sent_ids]
    assert len(doomed_requests) == doomed_count  # no retry went out during the pause
    pause_end = min(r.received_at for r in receiver.requests if r.status == 429) + 3.0
    later_requests = [r for r in receiver.requests if r.insert_id in sent_ids]
    assert all(r.received_at >= pause_end for r in later_requests)


def test_backoff_grows_and_every_attempt_carries_the_same_insert_id(lab: Lab) -> None:
    """408, 500 and a reset for one event: retried with growing waits, same insertId.

    Catches: a fixed or hot retry loop, a body rebuilt per attempt (new insertId)."""
    receiver = lab.receiver()
    for fault in (Fault.status(408), Fault.status(500), Fault.reset()):
        receiver.inject(fault)
    processor = lab.processor(receiver)
    emit(processor, 1)
    assert processor.force_flush(30_000)

    requests = receiver.requests
    assert [r.outcome for r in requests] == [408, 500, "reset", 200]
    assert len({r.insert_id for r in requests}) == 1
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    assert gaps == sorted(gaps), gaps  # 0.5, 1, 2 s less up to 25 % jitter: never overlapping
    assert processor.stats()["retried"] == 3


# --------------------------------------------------------------------------- one deadline


@pytest.mark.parametrize("http_client", CLIENTS)
@pytest.mark.parametrize("kind", ["drip", "hang"])
def test_dripping_or_hanging_answer_is_cut_at_the_request_timeout(
    lab: Lab, http_client: str, kind: str
) -> None:
    """One lane, a 1 s request timeout, the first two answers drip a 200 (1 byte per 0.5 s
    of a 100 kB body) or never come: each attempt is cut at ~1 s, the lane is free again,
    and every event is delivered.

    Catches: per-phase read timeouts only (a drip resets them forever), a lane left busy, a
    dripped 200 counted as sent (the receiver did not accept it)."""
    fault = Fault.drip(size=100_000, interval=0.5) if kind == "drip" else Fault.hang()
    receiver = lab.receiver()
    receiver.inject(fault, times=2)
    processor = lab.processor(
        receiver, http_client=http_client, max_concurrency=1, timeout_seconds=1.0
    )
    values = emit(processor, 4)
    started = time.monotonic()
    assert processor.force_flush(30_000)
    elapsed = time.monotonic() - started

    assert accepted_values(receiver) == sorted(values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["retried"]) == (4, 0, 2)
    assert elapsed < 8.0  # the drips alone would last 50,000 s
    requests = receiver.requests
    for cut in (r for r in requests if r.fault == kind):
        retry = next(r for r in requests if r.insert_id == cut.insert_id and r is not cut)
        assert retry.received_at - cut.received_at < 5.0  # timeout 1 s + backoff <= 0.5 s


@pytest.mark.parametrize("http_client", CLIENTS)
def test_huge_answers_count_as_sent_with_bounded_memory(
    lab: Lab, tmp_path: Path, http_client: str
) -> None:
    """16 events, each answered 200 with a 200 MB body, sent by an app in a subprocess: all
    16 are sent (no retry), the app's peak RSS stays far below one body, and each of those
    connections is closed (16 more events afterwards cannot reuse them).

    Catches: bodies buffered (16 x 200 MB), a cut read turned into an error (retried), a body
    read to its end instead of cut (the connection would go back to the pool)."""
    receiver = lab.receiver()
    receiver.inject(Fault.huge(200 * 1024 * 1024), times=16)
    env = clean_env(
        GREENFLASH_API_KEY=receiver.api_key,
        GREENFLASH_BASE_URL=receiver.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_HTTP_CLIENT=http_client,
    )
    source = """
        import json
        from opentelemetry.sdk.trace import TracerProvider
        from otel_greenflash import GreenflashSpanProcessor

        def peak_rss_kib():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
            raise RuntimeError("no VmHWM")

        processor = GreenflashSpanProcessor()
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("app")
        before = peak_rss_kib()
        for index in range(16):
            with tracer.start_as_current_span("checkout") as span:
                span.set_attributes(
                    {"greenflash.event.type": "task_success", "greenflash.event.value": str(index)}
                )
        flushed = processor.force_flush(60000)
        stats = processor.stats()
        peak = peak_rss_kib()
        for index in range(16):
            with tracer.start_as_current_span("checkout") as span:
                span.set_attributes(
                    {"greenflash.event.type": "task_success", "greenflash.event.value": "after"}
                )
        flushed_after = processor.force_flush(60000)
        provider.shutdown()
        print(json.dumps({"flushed": [flushed, flushed_after], "stats": stats, "before": before,
                          "peak": peak}))
    """
    result = run_script(tmp_path, source, env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["peak"] < 300 * 1024, f"peak RSS {report['peak']} KiB (start {report['before']})"
    assert report["flushed"] == [True, True]
    stats = report["stats"]
    assert (stats["sent"], stats["failed"], stats["retried"]) == (16, 0, 0)
    assert [r.fault for r in receiver.requests] == ["huge"] * 16 + [None] * 16
    assert len(receiver.accepted) == 16  # the 16 after (a huge answer accepts nothing)
    assert receiver.connections_opened > 16  # the huge answers' connections were closed


# --------------------------------------------------------------------------- faults


def test_thirty_percent_fault_mix_at_default_settings_delivers_each_event_once(
    lab: Lab,
) -> None:
    """200 events, 30 % of requests faulted (reset, hang, drip, 429 + Retry-After 1, 503,
    500; 5 % each), default settings: every event accepted exactly once, none failed."""
    mix = {
        Fault.reset(): 0.05,
        Fault.hang(): 0.05,
        Fault.drip(size=100_000, interval=0.5): 0.05,
        Fault.status(429, {"Retry-After": "1"}): 0.05,
        Fault.status(503): 0.05,
        Fault.status(500): 0.05,
    }
    receiver = lab.receiver(mix=mix, seed=17)
    processor = lab.processor(receiver)
    values = emit(processor, 200)
    assert processor.force_flush(150_000)

    assert accepted_values(receiver) == sorted(values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["dropped"]) == (200, 0, {})
    outcomes = collections.Counter(r.outcome for r in receiver.requests)
    assert {"reset", "hang", "drip", 429, 503, 500} <= set(outcomes), outcomes
    assert stats["retried"] == sum(n for outcome, n in outcomes.items() if outcome != 200)


@pytest.mark.parametrize("http_client", CLIENTS)
def test_connections_broken_by_a_proxy_are_retried_without_duplicates(
    lab: Lab, http_client: str
) -> None:
    """A TCP proxy resets the first 3 connections after the request and black-holes the
    next 2: every event arrives once, none fails."""
    receiver = lab.receiver()
    proxy = lab.proxy(receiver)
    proxy.inject("reset_after_request", times=3)
    proxy.inject("blackhole", times=2)
    processor = lab.processor(
        receiver,
        http_client=http_client,
        base_url=proxy.base_url_for("/v1"),
        timeout_seconds=1.0,
    )
    values = emit(processor, 20)
    assert processor.force_flush(30_000)

    assert proxy.connection_faults[:5] == ["reset_after_request"] * 3 + ["blackhole"] * 2
    assert accepted_values(receiver) == sorted(values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"]) == (20, 0)
    assert stats["retried"] >= 5


# --------------------------------------------------------------------------- adaptive limit


@pytest.mark.parametrize("http_client", CLIENTS)
def test_throttling_halves_the_in_flight_limit_once_per_round_and_it_grows_back(
    lab: Lab, http_client: str
) -> None:
    """The first 64 requests (one round, all in flight together) get 429 without a hint:
    the limit halves once (to 32, not once per answer), then grows back to 64, never above.

    Catches: no adaptation, halving per 429 (limit 1), never growing back."""
    receiver = lab.receiver(latency_seconds=0.1)
    receiver.inject(Fault.status(429), times=64)
    processor = lab.processor(
        receiver, http_client=http_client, schedule_delay_seconds=30.0, send_delay_seconds=30.0
    )
    engine = processor._shared.engine
    values = emit(processor, 300)  # one batch, taken by the flush: 64 start at once

    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(engine.in_flight_limit)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert processor.force_flush(60_000)
    finally:
        done.set()
        watcher.join()

    assert 32 <= min(seen) < 64, min(seen)
    assert max(seen) <= 64
    assert engine.in_flight_limit == 64
    assert receiver.max_concurrency <= 64
    assert accepted_values(receiver) == sorted(values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["retried"]) == (300, 0, 64)


# --------------------------------------------------------------------------- force_flush


def test_force_flush_is_false_while_events_are_pending_then_true_once_delivered(
    lab: Lab,
) -> None:
    """No spool, 2 s answers: a 0.5 s flush says False (and returns); a long one says True
    only with every event at the receiver."""
    receiver = lab.receiver(latency_seconds=2.0)
    processor = lab.processor(receiver)
    values = emit(processor, 10)
    started = time.monotonic()
    assert processor.force_flush(500) is False
    assert time.monotonic() - started < 3.0
    assert processor.force_flush(30_000) is True
    assert accepted_values(receiver) == sorted(values)  # right away, nothing in between


def test_force_flush_with_a_spool_waits_for_events_not_yet_handed_over(
    lab: Lab, tmp_path: Path
) -> None:
    """3,000 events with a spool: only 2,048 fit in the loop at once, the rest wait in the
    spool. force_flush is True only when the receiver has all 3,000; the spool empties.

    Catches: a flush that waits for the loop's events only (spooled ones forgotten)."""
    receiver = lab.receiver(latency_seconds=0.2)
    processor = lab.processor(receiver, spool_dir=str(tmp_path), schedule_delay_seconds=0.05)
    values: list[str] = []
    for chunk in range(6):  # at the worker's pace: a full span queue would refuse events
        values += emit(processor, 500, f"c{chunk}e")
        assert worker_took(processor, len(values), 30)
    pending = processor._shared.engine.pending
    stats = processor.stats()
    only_in_spool = stats["queued"] - stats["sent"] - stats["failed"] - pending
    assert only_in_spool > 0, "precondition: some events wait in the spool, not in the loop"
    assert processor.force_flush(120_000) is True
    assert len(receiver.accepted) == 3000  # checked first, before anything else can happen

    assert accepted_values(receiver) == sorted(values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["dropped"]) == (3000, 0, {})
    assert wait_until(lambda: processor.stats()["spool"].get("pending") == 0, 10)


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_force_flush_is_false_while_a_retry_window_is_running(
    lab: Lab, tmp_path: Path, spool: bool
) -> None:
    """503 on every request and a long retry window: the events are not settled, so a
    flush says False; once the API recovers a flush says True."""
    receiver = lab.receiver()
    receiver.inject(Fault.status(503), times=10_000)
    options: dict[str, Any] = {"spool_dir": str(tmp_path)} if spool else {}
    processor = lab.processor(receiver, export_timeout_seconds=120.0, **options)
    values = emit(processor, 3)
    assert processor.force_flush(1000) is False
    stats = processor.stats()
    assert (stats["sent"], stats["failed"]) == (0, 0)
    assert stats["retried"] >= 1

    receiver.clear_faults()
    assert processor.force_flush(30_000) is True
    assert accepted_values(receiver) == sorted(values)


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_force_flush_after_401_depends_on_whether_the_event_is_kept(
    lab: Lab, tmp_path: Path, spool: bool
) -> None:
    """401: without a spool the events fail for good (settled: flush True, failed, on_error
    AuthenticationError); with a spool they are kept for later (not settled: flush False,
    not counted failed, still pending in the spool)."""
    receiver = lab.receiver()
    errors = ErrorLog()
    options: dict[str, Any] = {"spool_dir": str(tmp_path)} if spool else {}
    processor = lab.processor(receiver, api_key="rk-revoked-key-000000", on_error=errors, **options)
    values = emit(processor, 1, "first")
    flushed = [processor.force_flush(1500)]
    values += emit(processor, 2, "then")
    flushed.append(processor.force_flush(1000))

    assert [r.status for r in receiver.requests] == [401]  # one request, then no hammering
    stats = processor.stats()
    if spool:
        assert flushed == [False, False]
        assert stats["failed"] == 0
        assert errors.items == []
        assert stats["spool"]["pending"] == 3
    else:
        assert flushed == [True, True]
        assert stats["failed"] == 3
        assert errors.values == sorted(values)
        assert all(isinstance(error, AuthenticationError) for error, _ in errors.items)


# --------------------------------------------------------------------------- no feedback loop


async def _plain_aiohttp_get(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await response.read()
        return response.status


def _plain_httpx_get(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


@pytest.mark.parametrize(
    ("http_client", "module", "instrumentor_name", "plain_get"),
    [
        (
            "aiohttp",
            "opentelemetry.instrumentation.aiohttp_client",
            "AioHttpClientInstrumentor",
            lambda url: asyncio.run(_plain_aiohttp_get(url)),
        ),
        # httpx's own transports, which the httpx instrumentation wraps at class level
        (
            "httpx",
            "opentelemetry.instrumentation.httpx",
            "HTTPXClientInstrumentor",
            _plain_httpx_get,
        ),
    ],
)
def test_own_requests_are_not_traced_by_an_installed_http_client_instrumentation(
    lab: Lab,
    http_client: str,
    module: str,
    instrumentor_name: str,
    plain_get: Callable[[str], int],
) -> None:
    """An installed client instrumentation records no span for our POSTs (the
    suppress-instrumentation key), but does for the test's own request (control)."""
    instrumentation = pytest.importorskip(module)
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    receiver = lab.receiver()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = getattr(instrumentation, instrumentor_name)()
    instrumentor.instrument(tracer_provider=provider)
    try:
        processor = lab.processor(receiver, http_client=http_client)  # made after instrument()
        values = emit(processor, 5)
        assert processor.force_flush(10_000)
        own_spans = list(exporter.get_finished_spans())
        status = plain_get(receiver.base_url + "/health")
    finally:
        instrumentor.uninstrument()

    assert accepted_values(receiver) == sorted(values)
    assert own_spans == []
    assert status == 404
    assert [span.name for span in exporter.get_finished_spans()] == ["GET"]
