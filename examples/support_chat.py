"""A tiny support-chat app whose business outcomes reach Greenflash through OpenTelemetry.

Run it with no configuration and it starts the local Events API server from
``otel_greenflash.testing`` and prints each event as it arrives. Set ``GREENFLASH_API_KEY``
and ``GREENFLASH_PRODUCT_ID`` and the same code reports to Greenflash instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import EventsApiServer

DEMO_PRODUCT_ID = "00000000-0000-4000-8000-00000000d3e0"

tracer = trace.get_tracer("support-chat-demo")


def print_event(event: Mapping[str, Any]) -> None:
    print("  event received:", json.dumps(event, sort_keys=True), flush=True)


def handle_conversation(conversation_id: str, user_id: str, messages: list[str]) -> None:
    """One chat: the root span carries the ids; outcomes are marked on child spans."""
    with tracer.start_as_current_span("support.chat") as chat:
        chat.set_attributes(
            {
                "greenflash.conversation.external_id": conversation_id,
                "greenflash.user.external_id": user_id,
            }
        )
        for text in messages:
            with tracer.start_as_current_span("llm.reply") as reply:
                reply.set_attribute("chat.message_length", len(text))  # not an event: never sent
            if "upgrade" in text:
                upgrade(conversation_id, plan="pro", price=149)
            if "cancel" in text:
                request_cancellation(conversation_id, reason="too expensive")
        # A span event on the chat span: the agent resolved the ticket.
        chat.add_event(
            "greenflash.event",
            {
                "greenflash.event.type": "task_success",
                "greenflash.event.value": True,
                "greenflash.event.influence": "positive",
            },
        )


def upgrade(conversation_id: str, *, plan: str, price: int) -> None:
    with tracer.start_as_current_span("billing.upgrade") as span:
        span.set_attributes(
            {
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": price,
                "greenflash.event.value_type": "currency",
                "greenflash.event.influence": "positive",
                "greenflash.event.properties.plan": plan,
                "greenflash.conversation.external_id": conversation_id,
            }
        )


def request_cancellation(conversation_id: str, *, reason: str) -> None:
    with tracer.start_as_current_span("billing.cancel") as span:
        span.set_attributes(
            {
                "greenflash.event.type": "cancellation_requested",
                "greenflash.event.value": "pro",
                "greenflash.event.value_type": "text",
                "greenflash.event.influence": "negative",
                "greenflash.event.properties.reason": reason,
                "greenflash.conversation.external_id": conversation_id,
            }
        )


def main() -> int:
    local_server: EventsApiServer | None = None
    if os.environ.get("GREENFLASH_API_KEY"):
        if not os.environ.get("GREENFLASH_PRODUCT_ID"):
            print("Set GREENFLASH_PRODUCT_ID to your Greenflash product id.", file=sys.stderr)
            return 2
        processor = GreenflashSpanProcessor()
        print("Sending business events to", processor.config.base_url)
    else:
        local_server = EventsApiServer(on_event=print_event).start()
        processor = GreenflashSpanProcessor(
            api_key=local_server.api_key,
            base_url=local_server.base_url,
            product_id=DEMO_PRODUCT_ID,
        )
        print("GREENFLASH_API_KEY is not set: using the local Events API at", local_server.base_url)

    provider = TracerProvider()
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)

    print("chat-1001: a customer asks to upgrade")
    handle_conversation("chat-1001", "user-42", ["hi", "I'd like to upgrade to pro"])
    print("chat-1002: another customer wants to cancel")
    handle_conversation("chat-1002", "user-77", ["please cancel my plan"])

    provider.shutdown()  # flushes the processor: every event is delivered before exit
    stats = processor.stats()
    print(f"done: {stats['sent']} sent, {stats['failed']} failed, {stats['invalid']} invalid")
    if local_server is not None:
        local_server.stop()
    return 0 if stats["failed"] == 0 and stats["invalid"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
