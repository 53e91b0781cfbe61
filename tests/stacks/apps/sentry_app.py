"""Support chat with Sentry's OpenTelemetry support (``OTLPIntegration`` of ``sentry-sdk``).

Stack: ``sentry-sdk`` 2.x's ``OTLPIntegration`` (the current way; the older
``OpenTelemetryIntegration`` with ``SentrySpanProcessor`` and ``instrumenter="otel"`` is
deprecated in 2.x and removed in 3.x) registers an SDK ``TracerProvider`` when none is set, adds
a ``BatchSpanProcessor`` with an OTLP/HTTP exporter to the DSN's OTLP endpoint, and replaces the
global propagator with Sentry's. ``otel_greenflash.configure()`` then installs on that same
provider. The DSN points at a closed loopback port (``127.0.0.1:9``): every export and every
Sentry envelope is refused at once, nothing leaves the machine. Spans come from OpenTelemetry's
FastAPI instrumentation, as Sentry's OTLP documentation has users instrument.

Conversation id: Sentry's own ``sentry_sdk.ai.set_conversation_id()`` is called, as Sentry's AI
monitoring documentation shows, but it only reaches Sentry's own spans (its scope), which are off
here: OpenTelemetry spans never carry it (the span summary shows none). The app names the
conversation with ``otel_greenflash.conversation(external_id=..., user_external_id=...)``.
"""

from __future__ import annotations

import os

import sentry_sdk  # type: ignore[import-not-found,unused-ignore]
from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry.instrumentation.fastapi import (  # type: ignore[import-not-found,unused-ignore]
    FastAPIInstrumentor,
)
from sentry_sdk.ai import set_conversation_id  # type: ignore[import-not-found,unused-ignore]
from sentry_sdk.integrations.otlp import (  # type: ignore[import-not-found,unused-ignore]
    OTLPIntegration,
)

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

DEAD_DSN = "http://public@127.0.0.1:9/1"
"""A DSN on the discard port of loopback, where nothing listens: refused at once."""

# The stack's own setup, then Greenflash's.
sentry_sdk.init(dsn=DEAD_DSN, integrations=[OTLPIntegration()])
otel_greenflash.configure()
dump_spans()

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("sentry")
FastAPIInstrumentor.instrument_app(app)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside the FastAPI instrumentation's server span ("POST /chat").
    set_conversation_id(body.conversation)
    async with otel_greenflash.conversation(
        external_id=body.conversation, user_external_id=body.user
    ):
        answer = await ask(client, body)
        report_upgrade(body)
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
