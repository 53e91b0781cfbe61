"""Support chat traced by LangSmith in its OpenTelemetry-only mode.

Stack: ``langsmith[otel]`` with ``LANGSMITH_TRACING=true``, ``LANGSMITH_OTEL_ENABLED=true`` and
``LANGSMITH_OTEL_ONLY=true`` (set by the test; ``LANGSMITH_TRACING_MODE=otel`` is the same):
runs become OpenTelemetry spans and nothing goes to LangSmith's own API. The chat turn is a
``@traceable`` function; the OpenAI client is wrapped with ``wrap_openai``.

Conversation id: LangSmith's documented way to group a conversation's traces into a thread,
``metadata={"thread_id": conversation}`` (given here with ``langsmith_extra`` on the call; child
runs inherit it). LangSmith's OTel exporter writes run metadata as ``langsmith.metadata.<key>``,
so the ``support_chat`` and ``ChatOpenAI`` spans carry ``langsmith.metadata.thread_id``, a
default alias of ``externalConversationId``. ``langsmith.trace.session_id`` (absent in this
mode; ``langsmith.trace.session_name`` names the project) is a LangSmith *project*, never the
conversation. No Greenflash-specific conversation setup.

How LangSmith makes its spans: after the fact, on its background thread, from the finished run
data; a root run's span is a child of the OTel span current when the run started (here
FastAPI's ``fastapi.endpoint``), so it lands in the request's trace. While the run executes,
the current OTel span is a *non-recording* span whose trace id is the LangSmith run's trace
UUID, a trace its exported spans never join. So ``track()`` inside the ``@traceable`` function
(the upgrade) has nothing to link to through OpenTelemetry; the cancellation, reported after the
run under FastAPI's span, is linked through the request's trace.

Tracer provider: LangSmith's client uses the global tracer provider when one is set; otherwise
it makes its own (OTLP to LangSmith) and sets it as the global one. The client is made lazily,
at the first traced call, so it is made here before ``otel_greenflash.configure()``: with
``configure()`` first, LangSmith would adopt the bare provider ``configure()`` creates and
never set up its OTLP export (the events still link the same way).
"""

from __future__ import annotations

import os

from langsmith import Client, traceable  # type: ignore[import-not-found,unused-ignore]
from langsmith.wrappers import wrap_openai  # type: ignore[import-not-found,unused-ignore]
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
    report_cancellation,
    report_upgrade,
)

# The stack's own setup: its environment variables, and its client made now, so that it sets up
# its own tracer provider (OTLP to LangSmith) as the global one; then Greenflash's, on that one.
Client()
otel_greenflash.configure()
dump_spans()

client = wrap_openai(
    AsyncOpenAI(
        base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
    )
)
app = make_app("langsmith")


@traceable(name="support_chat", run_type="chain")  # type: ignore[untyped-decorator,unused-ignore]
async def support_chat(chat: Chat) -> str:
    answer = await ask(client, chat)
    report_upgrade(chat)
    return answer


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    thread = {"metadata": {"thread_id": body.conversation}}
    answer = await support_chat(body, langsmith_extra=thread)
    report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
