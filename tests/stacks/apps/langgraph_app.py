"""Support chat on LangGraph and LangChain, traced by the OpenTelemetry GenAI LangChain
instrumentation.

Stack: a LangGraph ``StateGraph`` (one ``respond`` node calling ``langchain-openai``'s
``ChatOpenAI``, an in-memory checkpointer keyed by thread), traced by
``opentelemetry-instrumentation-genai-langchain`` on ``opentelemetry-util-genai``, with the SDK's
``TracerProvider`` set up by the app. The instrumentation checks that the ``langchain``
*distribution* is installed (``langchain >= 0.3.22, < 2``, read from package metadata, not
imported): with only ``langchain-core`` and ``langgraph`` its ``instrument()`` logs a dependency
conflict and instruments nothing, so the stack installs ``langchain`` too.

Conversation id: the chat runs with ``config={"configurable": {"thread_id": conversation}}``,
LangGraph's own way to name a conversation (its checkpointer needs it). LangGraph copies
``thread_id`` from ``configurable`` into the run metadata of every run of the graph, and the
instrumentation maps run metadata ``thread_id`` (then ``session_id``, ``conversation_id``) to
``gen_ai.conversation.id`` on the spans it creates: the graph's workflow span and the model's
chat span. The upgrade is reported inside the node, the cancellation after the graph, under
FastAPI's own span: both are linked through their trace. The stack has no user id. No
Greenflash-specific conversation setup.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, TypedDict

from langchain_core.messages import (  # type: ignore[import-not-found,unused-ignore]
    AIMessage,
    AnyMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.runnables import (  # type: ignore[import-not-found,unused-ignore]
    RunnableConfig,
)
from langchain_openai import ChatOpenAI  # type: ignore[import-not-found,unused-ignore]
from langgraph.checkpoint.memory import (  # type: ignore[import-not-found,unused-ignore]
    InMemorySaver,
)
from langgraph.graph import (  # type: ignore[import-not-found,unused-ignore]
    START,
    StateGraph,
)
from langgraph.graph.message import (  # type: ignore[import-not-found,unused-ignore]
    add_messages,
)
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


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    chat: dict[str, Any]


async def respond(state: State, config: RunnableConfig) -> dict[str, Any]:
    chat = Chat.model_validate(state["chat"])
    if chat.stream:
        parts: list[str] = []
        async for chunk in model.astream(state["messages"], config):
            parts.append(str(chunk.content))
        reply: Any = AIMessage(content="".join(parts))
    else:
        reply = await model.ainvoke(state["messages"], config)
    report_upgrade(chat)
    return {"messages": [reply]}


builder = StateGraph(State)
builder.add_node("respond", respond)
builder.add_edge(START, "respond")
graph = builder.compile(checkpointer=InMemorySaver(), name="support_chat")

app = make_app("langgraph")


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    messages = [
        SystemMessage(content="You are a helpful billing assistant."),
        HumanMessage(content=prompt_for(body)),
    ]
    config: RunnableConfig = {"configurable": {"thread_id": body.conversation}}
    state = await graph.ainvoke({"messages": messages, "chat": body.model_dump()}, config)
    report_cancellation(body)
    return Answer(answer=str(state["messages"][-1].content), pid=os.getpid())
