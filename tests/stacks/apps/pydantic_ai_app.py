"""Support chat on a Pydantic AI agent, inside OpenTelemetry's FastAPI spans.

Stack: ``pydantic-ai-slim[openai]`` with ``OpenAIChatModel`` on the test server, instrumented
with ``Agent.instrument_all()`` on the SDK's global ``TracerProvider`` (Pydantic AI without
Logfire); ``opentelemetry-instrumentation-fastapi`` makes the server span of each request.

Conversation id: ``agent.iter(..., conversation_id=...)`` / ``agent.run_stream(...)``, Pydantic
AI's own argument. It writes ``gen_ai.conversation.id`` on the ``invoke_agent`` span and on every
span of the run (from baggage it sets for the run). The upgrade is reported inside the run; the
cancellation *after* it, in no span of the agent: FastAPI's server span is its parent, and the
conversation id reaches it only through the trace. No Greenflash-specific conversation setup.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import (  # type: ignore[import-not-found,unused-ignore]
    FastAPIInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider

import otel_greenflash

from ._common import Answer, Chat, dump_spans, make_app, report_cancellation
from ._pydantic_ai_common import make_agent, run_turn

# The stack's own setup, then Greenflash's.
trace.set_tracer_provider(TracerProvider())
otel_greenflash.configure()
dump_spans()

agent = make_agent()
app = make_app("pydantic-ai")
FastAPIInstrumentor.instrument_app(app)


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's server span ("POST /chat").
    answer = await run_turn(agent, body)
    report_cancellation(body)  # after the run: no span of the agent around it
    return Answer(answer=answer, pid=os.getpid())
