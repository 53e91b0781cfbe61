"""Regressions from review: accounting, wakeups, bounds, isolation of bad input, fork paths."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

import otel_greenflash._pipeline.registry as pipelines_module
from otel_greenflash import BusinessEvent, GreenflashSpanProcessor, track
from otel_greenflash._deliver.engine import DeliveryEngine
from otel_greenflash._deliver.http import ThreadedTransport
from otel_greenflash._deliver.transport import SendOutcome
from otel_greenflash._stats import DeliveryStats, StatsSnapshot
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.common import CONVERSATION_ID, MakeProcessor

EVENT: dict[str, AttributeValue] = {"greenflash.event.type": "ok", "greenflash.event.value": 1}


def tracer_for(processor: GreenflashSpanProcessor) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider.get_tracer("app")


def accounted(stats: StatsSnapshot) -> int:
    return stats["sent"] + stats["failed"] + stats["invalid"] + sum(stats["dropped"].values())


@pytest.mark.parametrize(
    ("attributes", "end_time"),
    [
        ({"greenflash.event.value": 10**5000}, None),  # str() refuses > 4300 digits
        ({}, 2**62 * 1000),  # end time past year 9999
        ({"greenflash.event.properties": '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"}, None),
    ],
)
def test_one_unconvertible_event_does_not_take_its_batch_with_it(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    attributes: dict[str, AttributeValue],
    end_time: int | None,
) -> None:
    processor = make_processor(schedule_delay_seconds=5)
    tracer = tracer_for(processor)
    for index in range(5):
        with tracer.start_as_current_span(f"good{index}") as span:
            span.set_attributes(EVENT)
    bad = tracer.start_span("bad")
    bad.set_attributes({**EVENT, **attributes})
    bad.end(end_time=end_time)
    assert processor.force_flush(10_000)

    stats = processor.stats()
    assert len(server.events) == 5
    assert stats["invalid"] == 1
    assert accounted(stats) == 6


def test_an_event_failing_during_shutdown_is_counted_once(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(status=422))
    processor = make_processor(on_error=lambda error, events: time.sleep(1.0))
    with tracer_for(processor).start_as_current_span("e") as span:
        span.set_attributes(EVENT)
    time.sleep(0.3)  # the 422 arrived; on_error is running
    processor.shutdown(timeout_millis=200)
    time.sleep(1.2)
    stats = processor.stats()
    assert accounted(stats) == 1, stats


class _SlowFirstTransport:
    """A transport whose event "D" always asks to retry much later (a 500 with a hint for
    that event alone, not a throttling answer that pauses the endpoint); others succeed."""

    def __init__(self) -> None:
        self.sent_at: dict[bytes, float] = {}

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        if b'"D"' in body:
            time.sleep(0.2)
            return SendOutcome(500, hints={"retry-after-ms": "20000"})
        self.sent_at[body] = time.monotonic()
        return SendOutcome(200)

    def close(self) -> None:
        return None


def _event(name: str) -> BusinessEvent:
    return BusinessEvent({"eventType": name, "insertId": name}, name, "span")


@pytest.mark.parametrize("trial", range(3))
def test_new_work_wakes_an_idle_sender_even_while_someone_flushes(trial: int) -> None:
    transport = _SlowFirstTransport()
    engine = DeliveryEngine(
        ThreadedTransport(transport, 2), DeliveryStats(), max_concurrency=2, retry_window_seconds=60
    )
    try:
        engine.submit([_event("D")])  # in flight for 0.2 s, then waits 20 s for its retry
        time.sleep(0.05)
        threading.Thread(target=engine.flush, args=(30,), daemon=True).start()
        time.sleep(0.45)
        engine.submit([_event("E")])
        deadline = time.monotonic() + 10  # generous, yet far below D's 20 s retry
        while not transport.sent_at and time.monotonic() < deadline:
            time.sleep(0.01)
        assert transport.sent_at, "E waited for an unrelated retry"
    finally:
        engine.shutdown(0.1)


def test_retry_after_zero_does_not_hammer(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(status=429, retry_after="0"), times=10_000)
    processor = make_processor(export_timeout_seconds=2.0)
    with tracer_for(processor).start_as_current_span("e") as span:
        span.set_attributes(EVENT)
    assert processor.force_flush(10_000)
    assert len(server.requests) <= 6  # backoff 0.5 s, 1 s, ... within a 2 s deadline
    assert processor.stats()["failed"] == 1


def test_counters_count_events_not_spans(
    server: EventsApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    dropped: list[tuple[int, str]] = []
    processor = GreenflashSpanProcessor(
        base_url=server.base_url,
        product_id=CONVERSATION_ID,
        on_drop=lambda events, reason: dropped.append((len(events), reason)),
    )
    with tracer_for(processor).start_as_current_span("e") as span:
        span.set_attributes(EVENT)
        span.add_event("greenflash.event", EVENT)
        span.add_event("greenflash.event", EVENT)
    assert processor.stats()["dropped"] == {"no_api_key": 3}
    assert processor.stats()["invalid"] == 0
    assert dropped == [(3, "no_api_key")]
    processor.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_without_at_fork_hooks_is_detected_before_linking_state_is_used(
    server: EventsApiServer, make_processor: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = make_processor()
    tracer = tracer_for(processor)
    # uWSGI forks from C: Python's at-fork hooks do not run for this processor.
    monkeypatch.setattr(pipelines_module._pipelines, "live", [])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with tracer.start_as_current_span("request") as root:
                with tracer.start_as_current_span("upgrade") as span:
                    span.set_attributes(EVENT)
                time.sleep(0.3)  # the worker sees the event before the root learns the id
                root.set_attribute("greenflash.conversation.id", CONVERSATION_ID)
            flushed = processor.force_flush(10_000)
            stats = processor.stats()
            code = 0 if flushed and stats["sent"] == 1 and stats["unlinked"] == {} else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID


def test_released_waiting_events_are_forgotten_at_once(make_processor: MakeProcessor) -> None:
    processor = make_processor(max_waiting=100)
    tracer = tracer_for(processor)
    long_open = tracer.start_span("chat")
    with trace.use_span(long_open), tracer.start_as_current_span("e") as span:
        span.set_attributes(EVENT)
    for _ in range(500):
        with tracer.start_as_current_span("chat") as root:
            with tracer.start_as_current_span("e") as span:
                span.set_attributes(EVENT)
            root.set_attribute("greenflash.conversation.external_id", "late")
    assert processor._worker.flush(10, drain=False)
    assert len(processor._waiting._order) <= 100
    long_open.end()


def test_live_span_registry_evicts_the_oldest_and_keeps_linking(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    processor._linker.live.max_spans = processor._max_live_spans = 10
    tracer = tracer_for(processor)
    token = context_api.attach(baggage.set_baggage("greenflash.user.external_id", "u"))
    never_ended = [tracer.start_span(f"leak{n}") for n in range(50)]
    context_api.detach(token)
    assert len(processor._linker.live.spans) <= 10
    assert len(processor._linker.live.baggage) <= 10
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "chat-1")
        with tracer.start_as_current_span("e") as span:
            span.set_attributes(EVENT)
    assert processor.force_flush(10_000)
    assert server.events[0]["externalConversationId"] == "chat-1"
    for span in never_ended:
        span.end()


def test_in_a_trace_a_greenflash_key_beats_an_alias_seen_earlier(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    tracer = tracer_for(processor)
    with tracer.start_as_current_span("chat"):
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attribute("session.id", "alias-value")
        with tracer.start_as_current_span("tool") as tool:
            tool.set_attribute("greenflash.conversation.external_id", "greenflash-value")
        with tracer.start_as_current_span("e") as span:
            span.set_attributes(EVENT)
    assert processor.force_flush(10_000)
    assert server.events[0]["externalConversationId"] == "greenflash-value"


def test_track_without_span_skips_a_malformed_id_from_baggage(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    ctx = baggage.set_baggage("greenflash.conversation.id", "not-a-uuid")
    ctx = baggage.set_baggage("session.id", "chat-from-alias", ctx)
    token = context_api.attach(ctx)
    try:
        track("signup", "1")
    finally:
        context_api.detach(token)
    assert processor.force_flush(10_000)
    [event] = server.events
    assert "conversationId" not in event
    assert event["externalConversationId"] == "chat-from-alias"


def test_flush_counts_queued_events_it_sends_before_their_root_ended(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(schedule_delay_seconds=60, send_delay_seconds=60)
    tracer = tracer_for(processor)
    root = tracer.start_span("chat")
    with trace.use_span(root), tracer.start_as_current_span("e") as span:
        span.set_attributes(EVENT)
    assert processor.force_flush(10_000)
    assert processor.stats()["unlinked"] == {"flush": 1}
    root.end()


def test_a_span_event_with_its_own_conversation_does_not_wait(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(linger_seconds=60)
    tracer = tracer_for(processor)
    root = tracer.start_span("chat")
    with trace.use_span(root), tracer.start_as_current_span("step") as span:
        span.add_event("greenflash.event", {**EVENT, "greenflash.conversation.external_id": "c"})
    assert server.wait_for_events(1, timeout_seconds=10)
    root.end()


def test_a_disabled_exporter_is_a_no_op(server: EventsApiServer) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otel_greenflash import GreenflashSpanExporter

    exporter = GreenflashSpanExporter(
        api_key=server.api_key, base_url=server.base_url, enabled=False
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("app").start_as_current_span("e") as span:
        span.set_attributes(EVENT)
    provider.shutdown()
    assert server.requests == []


def test_nearer_alias_does_not_beat_a_greenflash_key_further_up(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    tracer = tracer_for(processor)
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "chat-1")
        with tracer.start_as_current_span("http") as http:
            http.set_attribute("session.id", "http-session-cookie")
            with tracer.start_as_current_span("e") as span:
                span.set_attributes(EVENT)
    assert processor.force_flush(10_000)
    assert server.events[0]["externalConversationId"] == "chat-1"


def test_attach_conversation_from_a_child_span_outranks_the_rest_of_the_trace(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    from otel_greenflash import attach_conversation

    other = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    processor = make_processor()
    tracer = tracer_for(processor)
    with tracer.start_as_current_span("chat"):
        with tracer.start_as_current_span("old") as old:
            old.set_attribute("greenflash.conversation.id", other)
        with tracer.start_as_current_span("e") as span:
            span.set_attributes(EVENT)
        with tracer.start_as_current_span("messages.create"):
            attach_conversation(CONVERSATION_ID)  # from a child span, not the root
    assert processor.force_flush(10_000)
    assert server.events[0]["conversationId"] == CONVERSATION_ID


def test_baggage_outranks_other_spans_of_the_trace(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    tracer = tracer_for(processor)
    token = context_api.attach(baggage.set_baggage("session.id", "from-baggage"))
    try:
        with tracer.start_as_current_span("chat"):
            with tracer.start_as_current_span("llm") as llm:
                llm.set_attribute("session.id", "from-sibling")
            with tracer.start_as_current_span("e") as span:
                span.set_attributes(EVENT)
    finally:
        context_api.detach(token)
    assert processor.force_flush(10_000)
    assert server.events[0]["externalConversationId"] == "from-baggage"


def test_secrets_and_values_stay_out_of_logs_on_failure_paths(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_key = "gf_secret_key_abcdefgh"
    server.inject(Fault(status=503), times=1000)
    processor = make_processor(
        api_key=secret_key,
        custom_headers={"X-Tenant-Token": "header-secret"},
        export_timeout_seconds=1.0,
    )
    with caplog.at_level(logging.DEBUG):
        with tracer_for(processor).start_as_current_span("e") as span:
            span.set_attributes(
                {
                    **EVENT,
                    "greenflash.event.value": "value-secret",
                    "greenflash.event.insert_id": "order-secret-42",
                    "greenflash.event.properties.email": "someone@example.test",
                }
            )
        assert processor.force_flush(10_000)
    assert processor.stats()["failed"] == 1
    assert "not delivered" in caplog.text
    for secret in (secret_key, "header-secret", "value-secret", "order-secret-42", "someone@"):
        assert secret not in caplog.text


def test_force_flush_returns_after_the_settled_events_callbacks_and_counters(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    server.inject(Fault(status=400))
    reported: list[int] = []

    def slow_on_error(error: Exception, events: Sequence[BusinessEvent]) -> None:
        time.sleep(0.3)
        reported.append(len(events))

    processor = make_processor(on_error=slow_on_error)
    with tracer_for(processor).start_as_current_span("e") as span:
        span.set_attributes(EVENT)
    assert processor.force_flush(10_000)
    assert reported == [1]  # settled means counted and reported, not merely answered
    assert processor.stats()["failed"] == 1
