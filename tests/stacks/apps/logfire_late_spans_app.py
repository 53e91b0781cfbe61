"""Support chat on Pydantic Logfire configured after Greenflash, with every business event a
``logfire.span`` (no ``track()``).

Stack and conversation id: as ``logfire_late_app.py`` (``otel_greenflash.configure()`` first, so
the global provider is Greenflash's and every span of the app comes from Logfire's own provider;
``logfire.set_baggage`` with ``gen_ai.conversation.id`` and ``user.id``). The difference: the
upgrade too is a ``logfire.span`` carrying ``greenflash.event.*``, as a Logfire user who marks
spans writes it. Nothing of this app then starts a span on the global provider or calls
``track()``, the two ways the processor finds another provider in its traces.
"""

from __future__ import annotations

import os

import logfire  # type: ignore[import-not-found,unused-ignore]
from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]

import otel_greenflash

from ._common import OPENAI_TIMEOUT, Answer, Chat, ask, make_app, openai_base_url
from ._logfire_common import chat_baggage, dump_logfire_spans, report_cancellation, report_span

# Greenflash's setup first, then the stack's.
otel_greenflash.configure()
logfire.configure(send_to_logfire=False, console=False, service_name="support-app")
dump_logfire_spans()  # every span of this app comes from Logfire's provider

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
logfire.instrument_openai(client)
app = make_app("logfire-late-spans")
logfire.instrument_fastapi(app)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside Logfire's FastAPI server span ("POST /chat").
    with chat_baggage(body):
        answer = await ask(client, body)
        report_span(body, "upgrade", "positive")
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
