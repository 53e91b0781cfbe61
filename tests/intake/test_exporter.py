"""GreenflashSpanExporter inside the SDK's own span processors."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_greenflash import GreenflashSpanExporter
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.common import PRODUCT_ID


@pytest.fixture
def env_for(server: EventsApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENFLASH_API_KEY", server.api_key)
    monkeypatch.setenv("GREENFLASH_BASE_URL", server.base_url)
    monkeypatch.setenv("GREENFLASH_PRODUCT_ID", PRODUCT_ID)


@pytest.mark.usefixtures("env_for")
def test_no_argument_exporter_in_batch_span_processor_sends_only_events(
    server: EventsApiServer,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(GreenflashSpanExporter()))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("gen_ai.prompt", "private text")
        with tracer.start_as_current_span("billing.cancel") as span:
            span.set_attributes(
                {
                    "greenflash.event.type": "cancellation_requested",
                    "greenflash.event.value": "pro",
                    "greenflash.event.influence": "negative",
                    "greenflash.conversation.external_id": "chat-7",
                }
            )
            span.add_event(
                "greenflash.event", {"greenflash.event.type": "x", "greenflash.event.value": 3}
            )
    provider.shutdown()

    assert sorted(event["eventType"] for event in server.events) == ["cancellation_requested", "x"]
    assert len(server.requests) == 2
    assert all(event["productId"] == PRODUCT_ID for event in server.events)


def finished_spans(build: Callable[[trace.Tracer], None]) -> list[ReadableSpan]:
    """Run ``build`` on a throw-away provider and return its finished spans, in end order."""
    finished = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    build(provider.get_tracer("app"))
    return list(finished.get_finished_spans())


def chat_with_late_conversation_id(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("chat") as root:
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
        root.set_attribute("greenflash.conversation.external_id", "chat-late")


@pytest.mark.usefixtures("env_for")
def test_export_waits_for_delivery_and_reports_failures(server: EventsApiServer) -> None:
    [event_span] = finished_spans(
        lambda tracer: tracer.start_span(
            "e", attributes={"greenflash.event.type": "t", "greenflash.event.value": 1}
        ).end()
    )
    errors: list[Exception] = []
    exporter = GreenflashSpanExporter(on_error=lambda error, events: errors.append(error))
    server.inject(Fault(status=400))

    assert exporter.export([event_span]) is SpanExportResult.FAILURE
    assert exporter.stats()["failed"] == 1
    assert [type(error).__name__ for error in errors] == ["EventRejectedError"]
    exporter.shutdown()


@pytest.mark.usefixtures("env_for")
def test_exporter_links_through_a_root_that_arrives_in_a_later_batch(
    server: EventsApiServer,
) -> None:
    child, root = finished_spans(chat_with_late_conversation_id)
    exporter = GreenflashSpanExporter()
    exporter.export([child])
    time.sleep(0.3)
    assert server.events == []  # waiting for the root
    exporter.export([root])
    assert server.wait_for_events(1, timeout_seconds=10)
    assert server.events[0]["externalConversationId"] == "chat-late"
    exporter.shutdown()


@pytest.mark.usefixtures("env_for")
def test_exporter_links_through_the_same_batch_and_earlier_batches(
    server: EventsApiServer,
) -> None:
    def build(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("chat"):
            with tracer.start_as_current_span("llm") as llm:
                llm.set_attribute("gen_ai.conversation.id", "thread-1")
            with tracer.start_as_current_span("billing") as span:
                span.set_attributes({"greenflash.event.type": "a", "greenflash.event.value": 1})
            with tracer.start_as_current_span("refund") as span:
                span.set_attributes({"greenflash.event.type": "b", "greenflash.event.value": 1})

    llm, billing, refund, root = finished_spans(build)
    exporter = GreenflashSpanExporter()
    exporter.export([llm])  # an earlier batch
    exporter.export([billing, refund, root])
    assert exporter.force_flush(10000)
    assert {event["externalConversationId"] for event in server.events} == {"thread-1"}
    assert len(server.events) == 2
    exporter.shutdown()


def test_exporter_without_key_sends_nothing_and_succeeds(
    server: EventsApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    exporter = GreenflashSpanExporter(base_url=server.base_url, product_id=PRODUCT_ID)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("app").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    provider.shutdown()

    assert server.requests == []
    assert exporter.stats()["dropped"] == {"no_api_key": 1}


@pytest.mark.usefixtures("env_for")
def test_export_after_shutdown_fails_without_sending(server: EventsApiServer) -> None:
    exporter = GreenflashSpanExporter()
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE
    assert server.requests == []


@pytest.mark.usefixtures("env_for")
def test_provider_force_flush_delivers_through_batch_span_processor(
    server: EventsApiServer,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(GreenflashSpanExporter(), schedule_delay_millis=60_000)
    )
    with provider.get_tracer("app").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    assert provider.force_flush(10_000)
    assert len(server.events) == 1  # delivered before force_flush returned
    provider.shutdown()
