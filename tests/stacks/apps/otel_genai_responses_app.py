"""Support chat on the OpenTelemetry GenAI instrumentation for OpenAI, through the Responses API.

Stack: as ``otel_genai_app.py`` (same venv), but each chat is one ``client.responses.create``
call, streamed or not.

Conversation id: the Responses API's own ``conversation`` parameter (an OpenAI conversation,
``conv_…``, which the app keeps per chat). The instrumentation reads it from the request and
writes ``gen_ai.conversation.id`` on its ``chat`` span, with no help from the app. Nothing else in
the trace carries it: the events are linked through their trace. The stack has no user id. No
Greenflash-specific conversation setup.
"""

from __future__ import annotations

import os

from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry import trace
from opentelemetry.instrumentation.genai.openai import (  # type: ignore[import-not-found,unused-ignore]
    OpenAIInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider

import otel_greenflash

from ._common import (
    MODEL,
    OPENAI_TIMEOUT,
    Answer,
    Chat,
    dump_spans,
    make_app,
    openai_base_url,
    prompt_for,
    report_cancellation,
    report_upgrade,
)

# The stack's own setup, then Greenflash's.
trace.set_tracer_provider(TracerProvider())
OpenAIInstrumentor().instrument()
otel_greenflash.configure()
dump_spans()

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("otel-genai-responses")


async def respond(chat: Chat) -> str:
    """One Responses API call in the chat's OpenAI conversation, streamed or not."""
    request = {
        "model": MODEL,
        "instructions": "You are a helpful billing assistant.",
        "input": prompt_for(chat),
        "conversation": chat.conversation,
    }
    if not chat.stream:
        response = await client.responses.create(**request)
        return str(response.output_text)
    stream = await client.responses.create(**request, stream=True)
    parts: list[str] = []
    async for event in stream:
        if event.type == "response.output_text.delta":
            parts.append(str(event.delta))
    return "".join(parts)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    answer = await respond(body)
    report_upgrade(body)
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
