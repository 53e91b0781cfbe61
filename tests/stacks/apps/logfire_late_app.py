"""Support chat on Pydantic Logfire, configured *after* Greenflash.

Stack: ``otel_greenflash.configure()`` runs first and, with no provider set yet, registers an SDK
``TracerProvider`` as the global one. ``logfire.configure(send_to_logfire=False)`` then builds its
own SDK provider inside its ``ProxyTracerProvider``; OpenTelemetry refuses to replace the global
provider, so the global one stays Greenflash's while every span here comes from Logfire's:
Logfire's FastAPI and OpenAI instrumentation and ``logfire.span`` all use Logfire's provider,
which never saw ``otel_greenflash.configure()``. The processor's hooks reach it when its first
span shows up next to ours (here: the first ``track()`` under a Logfire span). Nothing is sent to
Logfire: no token, ``send_to_logfire=False``, no console output.

Conversation id: as in ``logfire_app.py``, ``logfire.set_baggage`` with ``gen_ai.conversation.id``
and ``user.id``, copied by Logfire onto every span started inside. The cancellation is a
``logfire.span`` with ``greenflash.event.*`` after the baggage block, so the event span itself
comes from the provider Greenflash was never installed on. No Greenflash-specific conversation
setup.
"""

from __future__ import annotations

import os

import logfire  # type: ignore[import-not-found,unused-ignore]
from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]

import otel_greenflash

from ._common import (
    OPENAI_TIMEOUT,
    Answer,
    Chat,
    ask,
    make_app,
    openai_base_url,
    report_upgrade,
)
from ._logfire_common import chat_baggage, dump_logfire_spans, report_cancellation

# Greenflash's setup first, then the stack's.
otel_greenflash.configure()
logfire.configure(send_to_logfire=False, console=False, service_name="support-app")
dump_logfire_spans()  # every span of this app comes from Logfire's provider

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
logfire.instrument_openai(client)
app = make_app("logfire-late")
logfire.instrument_fastapi(app)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside Logfire's FastAPI server span ("POST /chat").
    with chat_baggage(body):
        answer = await ask(client, body)
        report_upgrade(body)
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
