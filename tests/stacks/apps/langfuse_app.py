"""Support chat on Langfuse (the OpenTelemetry-based SDK, >= 3) and its OpenAI wrapper.

Stack: ``Langfuse(...)`` registers an SDK ``TracerProvider`` (none is set before it) with its own
span processor; ``langfuse.openai.AsyncOpenAI`` is the drop-in client that records each call as
a generation. Its export goes to a discarding exporter (``span_exporter=``) and its host is a
dead loopback port: nothing leaves the machine.

Conversation id: ``propagate_attributes(session_id=…, user_id=…)``, as Langfuse's documentation
shows, inside a Langfuse observation. It sets ``session.id`` and ``user.id`` on the current span,
and Langfuse's span processor writes them on every span started inside the block, the OpenAI
generation and the app's own spans included. No Greenflash-specific conversation setup.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from langfuse import (  # type: ignore[import-not-found,unused-ignore]
    Langfuse,
    propagate_attributes,
)
from langfuse.openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import otel_greenflash

from ._common import (
    OPENAI_TIMEOUT,
    Answer,
    Chat,
    ask,
    dump_spans,
    make_app,
    openai_base_url,
    report_cancellation,
    report_upgrade,
)


class Discard(SpanExporter):
    """Langfuse's exporter in this test: keeps nothing, sends nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


# The stack's own setup, then Greenflash's.
langfuse = Langfuse(
    public_key="pk-lf-test",
    secret_key="sk-lf-test",
    base_url="http://127.0.0.1:9",
    span_exporter=Discard(),
)
otel_greenflash.configure()
dump_spans()

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("langfuse")


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    with (
        langfuse.start_as_current_observation(name="support_chat"),
        propagate_attributes(session_id=body.conversation, user_id=body.user),
    ):
        answer = await ask(client, body)
        report_upgrade(body)
        report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
