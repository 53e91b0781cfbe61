"""Our request body equals the one the official ``greenflash`` SDK sends for the same event."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash.testing import EventsApiServer
from tests.support.common import CONVERSATION_ID, PRODUCT_ID, MakeProcessor

greenflash = pytest.importorskip("greenflash")

USER_ID = "5d3c1f0e-8b7a-4c6d-9e2f-1a0b3c4d5e6f"
ORGANIZATION_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def test_body_matches_official_sdk_events_create(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    client = greenflash.Greenflash(api_key=server.api_key, base_url=server.base_url)
    client.events.create(
        event_type="upgrade_purchased",
        product_id=PRODUCT_ID,
        value="149.00",
        value_type="currency",
        influence="positive",
        quality_impact_score=0.5,
        conversation_id=CONVERSATION_ID,
        external_conversation_id="chat-8812",
        user_id=USER_ID,
        external_user_id="user-1",
        organization_id=ORGANIZATION_ID,
        external_organization_id="acme",
        event_at="2026-05-01T12:00:00.000Z",
        properties={"plan": "pro", "seats": 5, "tags": ["a", "b"]},
        insert_id="order-1001",
        sample_rate=0.5,
        force_sample=True,
    )
    [official] = server.events
    server.reset()

    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
        span.set_attributes(
            {
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": 149,
                "greenflash.event.value_type": "Currency",
                "greenflash.event.influence": "positive",
                "greenflash.event.quality_impact_score": 0.5,
                "greenflash.conversation.id": CONVERSATION_ID,
                "greenflash.conversation.external_id": "chat-8812",
                "greenflash.user.id": USER_ID,
                "greenflash.user.external_id": "user-1",
                "greenflash.organization.id": ORGANIZATION_ID,
                "greenflash.organization.external_id": "acme",
                "greenflash.event.at": "2026-05-01T12:00:00Z",
                "greenflash.event.properties.plan": "pro",
                "greenflash.event.properties.seats": 5,
                "greenflash.event.properties.tags": ("a", "b"),
                "greenflash.event.insert_id": "order-1001",
                "greenflash.event.sample_rate": 0.5,
                "greenflash.event.force_sample": True,
            }
        )
    assert processor.force_flush(5000)
    [ours] = server.events

    assert ours == official
    assert_same_shape(ours, official)


def assert_same_shape(ours: dict[str, Any], official: dict[str, Any]) -> None:
    """Equal dicts can still differ in JSON types (1 vs 1.0); compare the types too."""
    for key, value in official.items():
        assert type(ours[key]) is type(value), key


def test_coexists_with_official_sdk_logging_messages(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    client = greenflash.Greenflash(api_key=server.api_key, base_url=server.base_url)
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")

    with tracer.start_as_current_span("chat.turn") as chat:
        response = client.messages.create(
            external_user_id="user-1",
            external_conversation_id="chat-8812",
            product_id=PRODUCT_ID,
            messages=[{"role": "user", "content": "I want to upgrade"}],
        )
        chat.set_attribute("greenflash.conversation.id", response.conversation_id)
        with tracer.start_as_current_span("billing.upgrade") as span:
            span.set_attributes(
                {
                    "greenflash.event.type": "upgrade_purchased",
                    "greenflash.event.value": "149.00",
                    "greenflash.conversation.id": response.conversation_id,
                }
            )
    assert processor.force_flush(5000)

    assert len(server.messages) == 1
    [event] = server.events
    assert event["conversationId"] == response.conversation_id
    assert [request.path.rsplit("/", 1)[-1] for request in server.requests] == [
        "messages",
        "events",
    ]
