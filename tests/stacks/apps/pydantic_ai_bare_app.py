"""Support chat on a Pydantic AI agent with no server spans: the recipe for events after a run.

Stack: as ``pydantic_ai_app.py`` (``Agent.instrument_all()`` on the SDK's global provider), but
with no server span: FastAPI is not instrumented, and its own telemetry (FastAPI 0.16x makes a
server span, and spans for the endpoint and dependencies, for every request as soon as a tracer
provider is set) is turned off with ``FastAPI(telemetry={"tracing": False, "operation_spans":
False})``, as for a worker or a script with no request span. Each agent run is then a trace of
its own, and the cancellation, reported after the run, is a root span in a trace of its own
that names no conversation.

Conversation id: ``conversation_id=`` on the run, as in ``pydantic_ai_app.py``; for the event
after the run the recipe is Greenflash's ``otel_greenflash.conversation(external_id=...)`` around
the turn. ``STACK_GREENFLASH_RECIPE=0`` leaves it out (``test_pydantic_ai_unlinked_is_counted``):
then the cancellation goes out without a conversation id and is counted in
``stats()["unlinked"]["no_conversation_id"]``, which ``GET /greenflash-stats`` returns.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_greenflash

from ._common import Answer, Chat, dump_spans, report_cancellation
from ._pydantic_ai_common import make_agent, run_turn

RECIPE = os.environ.get("STACK_GREENFLASH_RECIPE", "1") != "0"

# The stack's own setup, then Greenflash's.
trace.set_tracer_provider(TracerProvider())
processor = otel_greenflash.configure()
dump_spans()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    ready = os.environ.get("STACK_READY_FILE")
    if ready:
        Path(ready).write_text(str(os.getpid()))
    yield


agent = make_agent()
# As _common.make_app, with FastAPI's own request spans off.
app = FastAPI(
    title="pydantic-ai-bare",
    lifespan=lifespan,
    telemetry={"tracing": False, "operation_spans": False},
)


@app.get("/health")
async def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    if RECIPE:
        async with otel_greenflash.conversation(external_id=body.conversation):
            answer = await run_turn(agent, body)
            report_cancellation(body)
    else:
        answer = await run_turn(agent, body)
        report_cancellation(body)  # a root span: nothing in its trace names the conversation
    return Answer(answer=answer, pid=os.getpid())


@app.get("/greenflash-stats")
async def greenflash_stats() -> dict[str, Any]:
    return dict(processor.stats()) if processor is not None else {}
