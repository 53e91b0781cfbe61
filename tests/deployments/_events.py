"""The business event every deployment app emits: OpenTelemetry API only, no library import."""

from __future__ import annotations

import os

from opentelemetry import trace

_tracer = trace.get_tracer("tests.deployments")


def emit(event_type: str, uid: str) -> None:
    """One event span; ``uid`` (unique per event) comes back as ``properties.uid``.

    The conversation id is on the span itself, so the event never waits for linking.
    """
    with _tracer.start_as_current_span(f"deploy.{event_type}") as span:
        span.set_attributes(
            {
                "greenflash.event.type": event_type,
                "greenflash.event.value": 1,
                "greenflash.event.properties.uid": uid,
                "greenflash.event.properties.pid": os.getpid(),
                "greenflash.conversation.external_id": f"deploy-{uid}",
            }
        )
