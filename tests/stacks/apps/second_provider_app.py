"""Support chat whose business events happen inside spans of a second ``TracerProvider``.

Stack: the SDK's global ``TracerProvider`` with OpenTelemetry's FastAPI instrumentation, and
``otel_greenflash.configure()`` on it. A second SDK provider stands for a library that makes its
own (an agent framework or vendor SDK handed a provider of its own, or creating one): it is never
registered globally and never given the processor. Each chat runs inside that library's span
(``vendor.agent.run``); the upgrade is ``track()`` on it, and the cancellation is a span *of that
provider* carrying ``greenflash.event.*``. The processor's hooks reach the second provider when
its first span shows up next to ours (here: the first ``track()`` under one of its spans).

Conversation id: ``gen_ai.conversation.id`` set by the app on FastAPI's server span, the root of
each trace (the span the request handler runs in). Nothing on the second provider's spans. No
Greenflash-specific conversation setup.
"""

from __future__ import annotations

import os

from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import (  # type: ignore[import-not-found,unused-ignore]
    FastAPIInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider

import otel_greenflash

from ._common import (
    OPENAI_TIMEOUT,
    PRICE,
    Answer,
    Chat,
    SpanDump,
    ask,
    dump_spans,
    make_app,
    openai_base_url,
    report_upgrade,
)

# The application's setup, then Greenflash's.
trace.set_tracer_provider(TracerProvider())
otel_greenflash.configure()
dump_spans()

# The library's own provider: not global, no Greenflash processor.
library_provider = TracerProvider()
library_tracer = library_provider.get_tracer("vendor_agent")
if os.environ.get("STACK_SPAN_DUMP"):
    library_provider.add_span_processor(SpanDump(os.environ["STACK_SPAN_DUMP"]))

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("second-provider")
FastAPIInstrumentor.instrument_app(app)


def report_cancellation(chat: Chat) -> None:
    """The cancellation as a span of the library's provider."""
    with library_tracer.start_as_current_span("billing.cancellation") as span:
        span.set_attributes(
            {
                "greenflash.event.type": "cancellation",
                "greenflash.event.value": PRICE,
                "greenflash.event.value_type": "currency",
                "greenflash.event.influence": "negative",
                "greenflash.event.properties.chat": chat.conversation,
                "greenflash.event.properties.kind": "cancellation",
            }
        )


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # FastAPI's server span ("POST /chat", global provider) is current: it names the chat.
    trace.get_current_span().set_attribute("gen_ai.conversation.id", body.conversation)
    with library_tracer.start_as_current_span("vendor.agent.run"):
        answer = await ask(client, body)
        report_upgrade(body)
        report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
