"""GreenflashSpanExporter inside the SDK's own span processors."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_greenflash import GreenflashSpanExporter
from otel_greenflash.testing import EventsApiServer, Fault

from .conftest import PRODUCT_ID


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


@pytest.mark.usefixtures("env_for")
def test_export_reports_failure_when_the_api_refuses(server: EventsApiServer) -> None:
    finished = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    with provider.get_tracer("app").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    with provider.get_tracer("app").start_as_current_span("plain"):
        pass
    event_span, plain_span = finished.get_finished_spans()
    exporter = GreenflashSpanExporter()
    server.inject(Fault(status=400))

    assert exporter.export([event_span]) is SpanExportResult.FAILURE
    assert exporter.export([plain_span]) is SpanExportResult.SUCCESS
    server.inject(Fault(status=503, retry_after="0"))
    assert exporter.export([event_span]) is SpanExportResult.SUCCESS  # retried
    stats = exporter.stats()
    assert (stats["failed"], stats["sent"], stats["retried"]) == (1, 1, 1)
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
