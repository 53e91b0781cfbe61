"""Support chat with Sentry's older OpenTelemetry support: ``SentrySpanProcessor``.

Stack: ``sentry_sdk.init(traces_sample_rate=1.0, instrumenter="otel")`` and, on the SDK's
``TracerProvider``, Sentry's ``SentrySpanProcessor`` (turns OpenTelemetry spans into Sentry
transactions) with ``SentryPropagator`` as the global propagator: the setup Sentry documented for
``sentry-sdk`` 2.x before ``OTLPIntegration`` (deprecated in 2.x, removed in 3.x, still in wide
use). ``otel_greenflash.configure()`` then installs on the same provider. The DSN points at a
closed loopback port (``127.0.0.1:9``): every transaction is refused at once, nothing leaves the
machine. Spans come from OpenTelemetry's FastAPI instrumentation.

Conversation id: as in ``sentry_app.py``, ``otel_greenflash.conversation(external_id=...,
user_external_id=...)`` around the turn.
"""

from __future__ import annotations

import os

import sentry_sdk  # type: ignore[import-not-found,unused-ignore]
from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import (  # type: ignore[import-not-found,unused-ignore]
    FastAPIInstrumentor,
)
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.opentelemetry import (  # type: ignore[import-not-found,unused-ignore]
    SentryPropagator,
    SentrySpanProcessor,
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

# The stack's own setup (as Sentry documented it), then Greenflash's.
sentry_sdk.init(dsn=DEAD_DSN, traces_sample_rate=1.0, instrumenter="otel")
provider = TracerProvider()
provider.add_span_processor(SentrySpanProcessor())
trace.set_tracer_provider(provider)
set_global_textmap(SentryPropagator())
otel_greenflash.configure()
dump_spans()

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("sentry-legacy")
FastAPIInstrumentor.instrument_app(app)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside the FastAPI instrumentation's server span ("POST /chat").
    async with otel_greenflash.conversation(
        external_id=body.conversation, user_external_id=body.user
    ):
        answer = await ask(client, body)
        report_upgrade(body)
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
