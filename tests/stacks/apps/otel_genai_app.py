"""Support chat on the OpenTelemetry GenAI instrumentation for OpenAI.

Stack: ``opentelemetry-instrumentation-genai-openai`` on ``opentelemetry-util-genai``, with the
SDK's ``TracerProvider`` set up by the app (what ``opentelemetry-instrument`` also does).

Conversation id: on ``chat.completions`` the instrumentation takes none from the request (it
reads one only from the Responses API's ``conversation`` parameter); its chat span carries
``gen_ai.conversation.id`` when util-genai holds one on the OpenTelemetry context. Users put it
there by running the turn inside a util-genai invocation that names the conversation:
``TelemetryHandler().workflow(name, conversation_id=...)`` (or an agent invocation). The stack
has no user id. No Greenflash-specific conversation setup.

Prompts and answers are recorded on the chat span with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only`` (util-genai's switch; off by
default).
"""

from __future__ import annotations

import os

from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry import trace
from opentelemetry.instrumentation.genai.openai import (  # type: ignore[import-not-found,unused-ignore]
    OpenAIInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.genai.handler import (  # type: ignore[import-not-found,unused-ignore]
    TelemetryHandler,
)

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
trace.set_tracer_provider(TracerProvider())
OpenAIInstrumentor().instrument()
set_up_logs()
processor = otel_greenflash.configure()
dump_spans()

genai = TelemetryHandler(instrumentation_scope_name="support_app")
client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("otel-genai", processor)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    with genai.workflow("support_chat", conversation_id=body.conversation):
        answer = await answer_chat(client, body)
        if body.report:
            report_upgrade(body)
    if body.report:
        report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
