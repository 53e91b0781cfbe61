"""Support chat on Pydantic Logfire, configured before Greenflash (the order its docs show).

Stack: ``logfire.configure(send_to_logfire=False)`` makes Logfire's ``ProxyTracerProvider`` (an
SDK ``TracerProvider`` inside) the global provider; ``otel_greenflash.configure()`` then installs
on that proxy, which passes the processor on to the SDK provider it wraps.
``logfire.instrument_fastapi(app)`` and ``logfire.instrument_openai(client)`` make the spans, as
Logfire's users instrument. Nothing is sent to Logfire: no token, ``send_to_logfire=False``, no
console output.

Conversation id: Logfire has no conversation API of its own for plain OpenAI calls (its
OpenAI instrumentation records no conversation id); its documented way to put an id on every
span of a request is baggage, ``logfire.set_baggage(...)``, which its span processor copies onto
each span started inside as attributes. The key is ``gen_ai.conversation.id``, the name Logfire's
own GenAI integrations and Pydantic AI write (and the one Logfire's scrubber leaves alone), with
``user.id`` for the user. The cancellation is a ``logfire.span`` carrying ``greenflash.event.*``,
after the baggage block: it is linked through its trace. No Greenflash-specific conversation
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
    dump_spans,
    make_app,
    openai_base_url,
    report_upgrade,
)
from ._logfire_common import chat_baggage, report_cancellation

# The stack's own setup, then Greenflash's.
logfire.configure(send_to_logfire=False, console=False, service_name="support-app")
otel_greenflash.configure()
dump_spans()  # the global provider is Logfire's proxy: the dump goes on the SDK provider inside

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
logfire.instrument_openai(client)
app = make_app("logfire")
logfire.instrument_fastapi(app)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside Logfire's FastAPI server span ("POST /chat").
    with chat_baggage(body):
        answer = await ask(client, body)
        report_upgrade(body)
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
