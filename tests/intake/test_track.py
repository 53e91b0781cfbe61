"""``otel_greenflash.track()``: on the current span, and with no recording span at all."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from otel_greenflash import GreenflashSpanProcessor, conversation, track
from otel_greenflash._pipeline.registry import active_pipelines
from otel_greenflash.testing import EventsApiServer
from tests.support.common import CONVERSATION_ID, MakeProcessor


def test_track_records_a_span_event_on_the_current_span(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("checkout") as span:
        span.set_attribute("greenflash.conversation.external_id", "chat-3")
        track(
            "upgrade_purchased",
            149,
            value_type="currency",
            influence="positive",
            properties={"plan": "pro", "seats": 3, "tags": ["a", "b"]},
            insert_id="order-77",
        )
        assert [event.name for event in span.events] == ["greenflash.event"]  # type: ignore[attr-defined]
    assert processor.force_flush(5000)
    [event] = server.events
    assert event["value"] == "149.00"
    assert event["properties"] == {"plan": "pro", "seats": 3, "tags": ["a", "b"]}
    assert event["insertId"] == "order-77"
    assert event["externalConversationId"] == "chat-3"


def test_track_nested_properties_travel_as_json(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("checkout"):
        track("task_success", True, properties={"cart": {"items": 2}, "mixed": [1, "a"]})
    assert processor.force_flush(5000)
    assert server.events[0]["properties"] == {"cart": {"items": 2}, "mixed": [1, "a"]}


def test_track_without_any_span_still_delivers_linked_through_baggage(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    assert trace.get_current_span().is_recording() is False
    with conversation(CONVERSATION_ID, user_external_id="u-9"):
        track("signup_completed", "free", value_type="text")
    assert processor.force_flush(5000)
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID
    assert event["externalUserId"] == "u-9"
    assert event["insertId"].startswith("track-")


def test_track_inside_a_sampled_out_span_still_delivers(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider(sampler=TraceIdRatioBased(0.0))
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("checkout") as span:
        assert not span.is_recording()
        track("upgrade_purchased", "149.00", external_conversation_id="chat-5")
    assert processor.force_flush(5000)
    [event] = server.events
    assert event["externalConversationId"] == "chat-5"


def test_track_with_bad_input_logs_and_never_raises(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor = make_processor()
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        track("refund", "10", influence="catastrophic")
        track("", "10")
        track("refund", object())  # type: ignore[arg-type]
    assert processor.force_flush(5000)
    assert server.events == []
    assert processor.stats()["invalid"] == 3
    assert "greenflash.event.influence" in caplog.text
    assert "catastrophic" not in caplog.text


def test_track_with_no_processor_says_the_event_was_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert active_pipelines() == []
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        track("upgrade_purchased", "1")
    assert "no active GreenflashSpanProcessor" in caplog.text


def test_track_goes_to_every_active_processor_without_a_span(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    first: GreenflashSpanProcessor = make_processor()
    second: GreenflashSpanProcessor = make_processor()
    track("upgrade_purchased", "1")
    assert first.force_flush(5000)
    assert second.force_flush(5000)
    # Same insertId from both: the API (and the local server) keep the event once.
    assert len(server.events) == 1
    assert server.duplicates == 1
