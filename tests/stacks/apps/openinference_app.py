"""Support chat on OpenInference (Arize) instrumentation for OpenAI.

Stack: ``openinference-instrumentation-openai`` on the SDK's ``TracerProvider``, set up by the
app as OpenInference's documentation shows (Arize Phoenix's ``register()`` does the same).

Conversation id: ``using_session(id)`` and ``using_user(id)`` put the ids on the OpenTelemetry
context; OpenInference's instrumentations copy them onto the spans *they* create, as
``session.id`` and ``user.id`` (the LLM span of each chat call). FastAPI's server span and the
app's own spans get neither, so the events here are linked through their trace. No
Greenflash-specific conversation setup. Prompts and answers are recorded by default.
"""

from __future__ import annotations

import os

from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from openinference.instrumentation import (  # type: ignore[import-not-found,unused-ignore]
    using_session,
    using_user,
)
from openinference.instrumentation.openai import (  # type: ignore[import-not-found,unused-ignore]
    OpenAIInstrumentor,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_greenflash

from ._common import (
    OPENAI_TIMEOUT,
    Answer,
    Chat,
    answer_chat,
    dump_spans,
    make_app,
    openai_base_url,
    report_cancellation,
    report_upgrade,
    set_up_logs,
)

# The stack's own setup, then Greenflash's.
provider = TracerProvider()
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument(tracer_provider=provider)
set_up_logs()
processor = otel_greenflash.configure()
dump_spans()

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("openinference", processor)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    with using_session(body.conversation), using_user(body.user):
        answer = await answer_chat(client, body)
        if body.report:
            report_upgrade(body)
    if body.report:
        report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
