"""Support chat on LangChain alone (no LangGraph), traced by the OpenTelemetry GenAI LangChain
instrumentation.

Stack: an LCEL chain, ``ChatPromptTemplate | ChatOpenAI`` (``langchain-openai``), traced by
``opentelemetry-instrumentation-genai-langchain`` on ``opentelemetry-util-genai``, with the SDK's
``TracerProvider`` set up by the app; same packages as the ``langgraph`` stack. As there, the
``langchain`` distribution must be installed or the instrumentation instruments nothing.

Conversation id: the chain runs with ``config={"metadata": {"thread_id": conversation}}``. The
instrumentation maps run metadata ``thread_id`` (then ``session_id``, ``conversation_id``) to
``gen_ai.conversation.id`` on its spans: the chain's workflow span and the model's chat span.
Without LangGraph, ``config={"configurable": {"thread_id": ...}}`` is *not* enough: LangGraph
copies ``configurable.thread_id`` into the run metadata, LangChain alone does not (it copies only
``model`` and ``checkpoint_ns``), and the spans then carry no conversation id. The upgrade is
reported after the chain inside the chain's own run (a ``RunnableLambda`` step, where the
instrumentation makes the workflow span current), the cancellation after the chain, under
FastAPI's own span. The stack has no user id. No Greenflash-specific conversation setup.
"""

from __future__ import annotations

import os
from typing import Any

from langchain_core.messages import AIMessage  # type: ignore[import-not-found,unused-ignore]
from langchain_core.prompts import (  # type: ignore[import-not-found,unused-ignore]
    ChatPromptTemplate,
)
from langchain_core.runnables import (  # type: ignore[import-not-found,unused-ignore]
    RunnableConfig,
    RunnableLambda,
)
from langchain_openai import ChatOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry import trace
from opentelemetry.instrumentation.genai.langchain import (  # type: ignore[import-not-found,unused-ignore]
    LangChainInstrumentor,
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
LangChainInstrumentor().instrument()
otel_greenflash.configure()
dump_spans()

model = ChatOpenAI(
    model=MODEL,
    base_url=openai_base_url(),
    api_key="sk-test",
    max_retries=0,
    timeout=OPENAI_TIMEOUT,
    stream_usage=True,
)
prompt = ChatPromptTemplate.from_messages(
    [("system", "You are a helpful billing assistant."), ("user", "{question}")]
)


def _upgrade(reply: Any, config: RunnableConfig) -> Any:
    report_upgrade(Chat.model_validate(config["metadata"]["chat"]))
    return reply


chain = prompt | model | RunnableLambda(_upgrade)

app = make_app("langchain")


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    config: RunnableConfig = {
        "metadata": {"thread_id": body.conversation, "chat": body.model_dump()},
    }
    question = {"question": prompt_for(body)}
    if body.stream:
        parts: list[str] = []
        async for chunk in chain.astream(question, config):
            parts.append(str(chunk.content))
        reply: Any = AIMessage(content="".join(parts))
    else:
        reply = await chain.ainvoke(question, config)
    report_cancellation(body)
    return Answer(answer=str(reply.content), pid=os.getpid())
