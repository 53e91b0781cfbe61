"""``flush_after``: events are delivered before a serverless handler returns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import flush_after
from otel_greenflash.testing import EventsApiServer
from tests.support.common import MakeProcessor

EVENT: dict[str, str | bool] = {
    "greenflash.event.type": "task_success",
    "greenflash.event.value": True,
}


def test_sync_handler_flushes_before_returning(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        make_processor(schedule_delay_seconds=3600, send_delay_seconds=3600)
    )
    tracer = provider.get_tracer("lambda")

    @flush_after
    def handler(event: dict[str, Any], context: object) -> str:
        with tracer.start_as_current_span("handler") as span:
            span.set_attributes(EVENT)
        return "ok"

    assert handler({}, None) == "ok"
    assert len(server.events) == 1  # no explicit flush, no waiting


def test_async_handler_and_exceptions_flush_too(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        make_processor(schedule_delay_seconds=3600, send_delay_seconds=3600)
    )
    tracer: trace.Tracer = provider.get_tracer("lambda")

    @flush_after(timeout_millis=5000)
    async def handler() -> None:
        with tracer.start_as_current_span("handler") as span:
            span.set_attributes(EVENT)
        raise ValueError("handler failed")

    with pytest.raises(ValueError, match="handler failed"):
        asyncio.run(handler())
    assert len(server.events) == 1
