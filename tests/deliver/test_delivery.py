"""Fault injection: N events through each failure mode of the local Events API server.

Recoverable faults must end with every event accepted exactly once; unrecoverable ones must be
counted and said. Time bounds here are generous on purpose (they catch hangs, not slowness).
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import (
    AuthenticationError,
    BusinessEvent,
    EventRejectedError,
    GreenflashSpanProcessor,
    RetriesExhaustedError,
)
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.common import MakeProcessor
from tests.support.ports import free_port

N = 20


def emit(processor: GreenflashSpanProcessor, count: int = N, label: str = "e") -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for index in range(count):
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(
                {
                    "greenflash.event.type": "task_success",
                    "greenflash.event.value": f"{label}{index}",
                    "greenflash.conversation.external_id": f"chat-{index}",
                }
            )


def assert_each_event_once(server: EventsApiServer, count: int = N, label: str = "e") -> None:
    values = sorted(str(event["value"]) for event in server.events)
    assert values == sorted(f"{label}{index}" for index in range(count))


def assert_retries_reused_insert_ids(server: EventsApiServer, count: int = N) -> None:
    insert_ids = {request.insert_id for request in server.requests}
    assert len(insert_ids) == count
    assert None not in insert_ids


# -- recoverable faults: accepted == N, zero duplicates ---------------------------------------


def test_429_with_retry_after_is_honoured(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(status=429, retry_after="1"), times=5)
    processor = make_processor()
    emit(processor)
    assert processor.force_flush(30000)

    assert_each_event_once(server)
    assert_retries_reused_insert_ids(server)
    assert server.duplicates == 0
    assert processor.stats()["retried"] == 5
    by_id = collections.defaultdict(list)
    for request in server.requests:
        by_id[request.insert_id].append(request)
    for attempts in by_id.values():
        if attempts[0].status == 429:
            assert attempts[1].at - attempts[0].at >= 0.9


def test_retry_after_ms_is_honoured(server: EventsApiServer, make_processor: MakeProcessor) -> None:
    server.inject(Fault(status=503, headers={"retry-after-ms": "50"}), times=3)
    processor = make_processor()
    emit(processor)
    assert processor.force_flush(30000)
    assert_each_event_once(server)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_error_bursts(
    server: EventsApiServer, make_processor: MakeProcessor, status: int
) -> None:
    server.inject(Fault(status=status), times=8)
    processor = make_processor()
    emit(processor)
    assert processor.force_flush(30000)

    assert_each_event_once(server)
    assert_retries_reused_insert_ids(server)
    assert server.duplicates == 0
    assert processor.stats()["failed"] == 0


def test_connections_dropped_mid_request(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(drop=True), times=6)
    processor = make_processor()
    emit(processor)
    assert processor.force_flush(30000)

    assert_each_event_once(server)
    assert server.duplicates == 0


def test_lost_responses_are_retried_without_duplicating(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(lose_response=True), times=6)
    processor = make_processor()
    emit(processor)
    assert processor.force_flush(30000)

    assert_each_event_once(server)  # the server accepted 6 twice and kept them once
    assert server.duplicates == 6
    assert processor.stats()["sent"] == N


def test_slow_responses_past_the_timeout_are_retried_exactly_once(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    # A margin a loaded machine keeps: requests not delayed are answered well within the
    # timeout (with 0.3 s, 2 to 14 of them timed out too and were stored twice under load).
    server.inject(Fault(delay_seconds=4.0), times=3)
    processor = make_processor(timeout_seconds=1.5)
    emit(processor)
    assert processor.force_flush(30000)

    deadline = time.monotonic() + 20
    while server.duplicates < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the slow requests finish (and are accepted) after the retries
    assert_each_event_once(server)
    assert server.duplicates == 3


def test_server_back_after_an_outage_within_the_deadline(make_processor: MakeProcessor) -> None:
    first = EventsApiServer(port=free_port()).start()  # the port stays reserved
    port = first.port
    first.stop()  # outage: connections refused
    processor = make_processor(base_url=f"http://127.0.0.1:{port}/api/v1")
    emit(processor)
    time.sleep(1.5)
    with EventsApiServer(port=port) as back:
        assert processor.force_flush(30000)
        assert_each_event_once(back)
        assert back.duplicates == 0
    assert processor.stats()["retried"] >= N


# -- unrecoverable: counted and said, never raised --------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_rejections_are_not_retried_and_are_reported_without_flooding(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    errors: list[Exception] = []
    server.inject(Fault(status=status), times=N)
    processor = make_processor(on_error=lambda error, events: errors.append(error))
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        emit(processor)
        assert processor.force_flush(30000)

    stats = processor.stats()
    assert (stats["failed"], stats["sent"], stats["retried"]) == (N, 0, 0)
    assert len(server.requests) == N
    assert len(errors) == N
    assert all(isinstance(error, EventRejectedError) for error in errors)
    lines = [r.getMessage() for r in caplog.records if r.name == "otel_greenflash"]
    assert len(lines) == 1
    assert f"HTTP {status}" in lines[0]


def test_401_is_reported_once_and_stops_the_requests(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[Exception] = []
    processor = make_processor(
        api_key="revoked-key-1234", on_error=lambda error, events: errors.append(error)
    )
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        emit(processor, 1, "first")
        assert processor.force_flush(10000)
        emit(processor, N)
        assert processor.force_flush(10000)

    assert len(server.requests) == 1  # no hammering
    assert processor.stats()["failed"] == N + 1
    assert all(isinstance(error, AuthenticationError) for error in errors)
    lines = [r.getMessage() for r in caplog.records if r.name == "otel_greenflash"]
    assert len(lines) == 1
    assert "API key was rejected" in lines[0]
    assert "revoked-key-1234" not in caplog.text


def test_events_fail_when_retries_outlast_the_deadline(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    failed: list[BusinessEvent] = []
    server.inject(Fault(status=503), times=10_000)

    def on_error(error: Exception, events: Sequence[BusinessEvent]) -> None:
        assert isinstance(error, RetriesExhaustedError)
        failed.extend(events)

    processor = make_processor(export_timeout_seconds=1.5, on_error=on_error)
    emit(processor, 5)
    started = time.monotonic()
    assert processor.force_flush(30000)

    assert time.monotonic() - started < 15
    assert processor.stats()["failed"] == 5
    assert processor.stats()["sent"] == 0
    assert len(failed) == 5
    assert server.events == []


def test_flush_and_shutdown_return_in_time_against_a_hanging_server(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.inject(Fault(delay_seconds=60.0), times=N)
    dropped: list[tuple[int, str]] = []
    processor = make_processor(
        timeout_seconds=30.0, on_drop=lambda events, reason: dropped.append((len(events), reason))
    )
    emit(processor)

    started = time.monotonic()
    assert processor.force_flush(timeout_millis=500) is False
    assert time.monotonic() - started < 3
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        processor.shutdown(timeout_millis=1000)
    # The 1 s timeout, plus slack for a loaded machine: a shutdown that waits for the hanging
    # request would take its 30 s timeout.
    assert time.monotonic() - started < 10.0

    assert processor.stats()["dropped"] == {"shutdown": N}
    assert f"before delivering {N} business event(s)" in caplog.text


def test_backoff_sleeps_wake_on_shutdown(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(status=429, retry_after="25"), times=N)
    # The N events leave as one batch (the N-th fills it): all N answered 429 in one round,
    # none held back by the pause the first answer sets.
    processor = make_processor(
        schedule_delay_seconds=30.0, send_delay_seconds=30.0, max_batch_size=N
    )
    emit(processor)
    deadline = time.monotonic() + 10
    while processor.stats()["retried"] < N and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processor.stats()["retried"] == N
    started = time.monotonic()
    processor.shutdown(timeout_millis=500)
    assert time.monotonic() - started < 1.5
    assert processor.stats()["dropped"] == {"shutdown": N}
    senders = [processor._shared.engine._thread]
    deadline = time.monotonic() + 5  # the loop, with events waiting out a backoff, stopped
    while time.monotonic() < deadline and any(thread.is_alive() for thread in senders):
        time.sleep(0.02)
    assert not any(thread.is_alive() for thread in senders)


def test_no_exception_reaches_the_app_when_callbacks_raise(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("callback bug")

    server.inject(Fault(status=400), times=N)
    processor = make_processor(on_error=boom, on_drop=boom, max_queue_size=5)
    emit(processor)  # also overflows the queue: on_drop raises on the app thread
    assert processor.force_flush(30000)
    stats = processor.stats()
    assert stats["failed"] + stats["dropped"].get("queue_full", 0) == N


# -- bounded concurrency, queue policy ---------------------------------------------------------


def test_in_flight_requests_are_bounded(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.latency_seconds = 0.05
    processor = make_processor(max_concurrency=4)
    emit(processor, 40)
    assert processor.force_flush(30000)
    assert_each_event_once(server, 40)
    assert server.peak_concurrency == 4


def test_queue_overflow_is_counted_called_back_and_warned_with_a_rate_limit(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.inject(Fault(delay_seconds=1.0))
    dropped: list[str] = []
    processor = make_processor(
        max_queue_size=3,
        max_batch_size=1,
        max_concurrency=1,
        on_drop=lambda events, reason: dropped.extend(reason for _ in events),
    )
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        emit(processor, 50)
        assert processor.force_flush(30000)

    stats = processor.stats()
    assert stats["dropped"]["queue_full"] == len(dropped)
    assert set(dropped) == {"queue_full"}
    assert stats["sent"] + stats["dropped"]["queue_full"] == 50
    assert len(server.events) == stats["sent"]
    warnings = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(warnings) == 1


# -- fork ------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_parent_and_forked_child_each_deliver_exactly_their_own_events(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(schedule_delay_seconds=30.0, send_delay_seconds=30.0)
    emit(processor, 3, "before")
    assert processor.force_flush(10000)
    emit(processor, 2, "queued-at-fork")  # sits in the parent's queue while it forks

    pid = os.fork()
    if pid == 0:  # child: must start empty, send only its own events
        code = 1
        try:
            emit(processor, 4, "child")
            ok = processor.force_flush(10000) and processor.stats()["sent"] == 4
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    emit(processor, 2, "parent-after")
    assert processor.force_flush(10000)
    values = sorted(str(event["value"]) for event in server.events)
    expected = (
        [f"before{i}" for i in range(3)]
        + [f"queued-at-fork{i}" for i in range(2)]
        + [f"child{i}" for i in range(4)]
        + [f"parent-after{i}" for i in range(2)]
    )
    assert values == sorted(expected)
    assert server.duplicates == 0


# -- no feedback loop through HTTP instrumentation ---------------------------------------------


def test_own_requests_are_not_traced_by_httpx_instrumentation(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.httpx")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = instrumentation.HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        processor = make_processor()
        emit(processor, 5)
        assert processor.force_flush(10000)
        import httpx

        httpx.get(server.base_url + "/health", timeout=5)  # the instrumentation does work
    finally:
        instrumentor.uninstrument()
    assert len(server.events) == 5
    assert [span.name for span in exporter.get_finished_spans()] == ["GET"]
