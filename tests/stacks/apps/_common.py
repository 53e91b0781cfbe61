"""What every stack app shares: the chat model, the OpenAI call, the two business events, the
evaluation of an answer (a ``gen_ai.evaluation.result`` log event), the user's thumbs
(``POST /feedback``, ``otel_greenflash.rate()``) and ``GET /stats``.

The apps run under uvicorn inside the stack's own virtualenv (``.venv-stacks/<stack>``), so this
module imports only what every stack venv has: the OpenTelemetry API and SDK, FastAPI, the real
``openai`` package and this library. Each app differs only in how it sets up its stack and how
it names the conversation, the way that stack's users do.

Environment (set by ``tests/stacks/test_stacks.py``):

* ``STACK_OPENAI_BASE_URL``: the OpenAI-compatible server (``tests/stacks/_openai_server.py``);
* ``STACK_SPAN_DUMP``: when set, a file that receives one JSON line per ended span (name,
  instrumentation scope, whether it is a local root, its id-like attributes), to show where the
  stack writes conversation and user ids;
* ``STACK_READY_FILE``: touched when the app has started serving;
* ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, ``TRACELOOP_TRACE_CONTENT``: whether
  the stack records prompts and answers (``tests/stacks/test_stacks_conversations.py``);
* ``GREENFLASH_*``: read by ``otel_greenflash.configure()``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry import _logs, trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from pydantic import BaseModel, Field

import otel_greenflash

MODEL = "gpt-4o-mini"
PRICE = "149.00"
# The apps' OpenAI client timeout, connect included (the client's own connect timeout is 5 s).
# The OpenAI-compatible server runs in the pytest worker beside the traffic driver and the
# receiver; on a loaded CI machine 200 concurrent chats reopening connections each turn can wait
# longer than 5 s to be accepted, and a chat failing on that says nothing about this library.
# Under the tests' 60 s per chat request, so a call that never completes is the app's error.
OPENAI_TIMEOUT = 50.0

# Attribute names that look like a conversation, session, thread or user id, or ours.
_ID_WORDS = ("session", "conversation", "user", "thread", "association", "greenflash.")


class Chat(BaseModel):
    """``POST /chat`` body: the chat's conversation id and user id, streamed or not.

    A chat of several turns sends one body per turn: ``history`` the earlier turns' user and
    assistant messages (sent whole again, as chat clients do), ``message`` the user's new one,
    ``report`` False on the turns before the last (the events are reported once per chat), and
    on the last ``score``, the evaluation of its answer (see :func:`evaluate`). The defaults
    make a chat of one turn with :func:`prompt_for`'s question.
    """

    conversation: str
    user: str
    stream: bool = False
    history: list[dict[str, str]] = Field(default_factory=list)
    message: str | None = None
    report: bool = True
    score: float | None = None


class Feedback(BaseModel):
    """``POST /feedback`` body: the user's thumbs up or down on a chat, sent after its turns."""

    conversation: str
    up: bool


class Answer(BaseModel):
    answer: str
    pid: int


SYSTEM_PROMPT = "You are a helpful billing assistant."


def prompt_for(chat: Chat) -> str:
    """The user's message; the OpenAI-compatible server echoes it in its answer."""
    if chat.message is not None:
        return chat.message
    return f"Which plan fits conversation {chat.conversation}?"


def messages_for(chat: Chat) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        *chat.history,
        {"role": "user", "content": prompt_for(chat)},
    ]


async def ask(client: Any, chat: Chat) -> str:
    """One chat completion through the real ``openai`` client, streamed or not."""
    if chat.stream:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=messages_for(chat),
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(str(chunk.choices[0].delta.content))
        return "".join(parts)
    completion = await client.chat.completions.create(model=MODEL, messages=messages_for(chat))
    return str(completion.choices[0].message.content or "")


async def answer_chat(client: Any, chat: Chat) -> str:
    """:func:`ask`, then, when the chat gives a ``score``, :func:`evaluate` the answer on the
    LLM span the call made."""
    spans: list[ReadableSpan] = []
    token = _llm_spans.set(spans)
    try:
        text = await ask(client, chat)
    finally:
        _llm_spans.reset(token)
    if chat.score is not None:
        evaluate(chat, chat.score, spans)
    return text


def openai_base_url() -> str:
    return os.environ["STACK_OPENAI_BASE_URL"]


def report_upgrade(chat: Chat) -> None:
    """The upgrade, as docs/linking.md shows: ``track()`` on the current span."""
    otel_greenflash.track(
        "upgrade",
        PRICE,
        value_type="currency",
        influence="positive",
        properties={"chat": chat.conversation, "kind": "upgrade"},
    )


def report_cancellation(chat: Chat) -> None:
    """The cancellation, as docs/linking.md shows: a span carrying ``greenflash.event.*``."""
    tracer = trace.get_tracer("stack_app.billing")
    with tracer.start_as_current_span("billing.cancellation") as span:
        span.set_attributes(
            {
                "greenflash.event.type": "cancellation",
                "greenflash.event.value": PRICE,
                "greenflash.event.value_type": "currency",
                "greenflash.event.influence": "negative",
                "greenflash.event.properties.chat": chat.conversation,
                "greenflash.event.properties.kind": "cancellation",
            }
        )


# --------------------------------------------------------------------------- evaluations

EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "relevance"

_llm_spans: ContextVar[list[ReadableSpan] | None] = ContextVar("stack_llm_spans", default=None)


def is_llm_span(span: ReadableSpan) -> bool:
    """An LLM call's span, in any of the stacks' conventions."""
    attributes = span.attributes or {}
    return (
        attributes.get("gen_ai.operation.name") == "chat"
        or attributes.get("openinference.span.kind") == "LLM"
        or "llm.request.type" in attributes
    )


class LlmSpans(SpanProcessor):
    """Hands the LLM spans that end inside :func:`answer_chat` to it (the instrumentation creates
    them; the evaluation is emitted on their context)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        found = _llm_spans.get()
        if found is not None and is_llm_span(span):
            found.append(span)


def set_up_logs() -> None:
    """The SDK's ``LoggerProvider`` as the global one, as an application recording log events
    sets up before ``otel_greenflash.configure()`` (which adds its log record processor to it);
    and :class:`LlmSpans` on the global tracer provider (call after the stack set it up)."""
    _logs.set_logger_provider(LoggerProvider())
    add = getattr(trace.get_tracer_provider(), "add_span_processor", None)
    if add is not None:
        add(LlmSpans())


def evaluate(chat: Chat, score: float, spans: list[ReadableSpan]) -> None:
    """An evaluator's verdict on the answer, as the GenAI conventions record one: a
    ``gen_ai.evaluation.result`` log event on the evaluated LLM span's context (its span
    context only: the evaluator has no handle on the ended span)."""
    if len(spans) != 1:
        raise RuntimeError(f"{len(spans)} LLM spans ended during the call, expected 1")
    context = spans[0].get_span_context()
    if context is None:
        raise RuntimeError("the LLM span has no span context")
    evaluated = trace.NonRecordingSpan(context)
    _logs.get_logger("stack_app.evaluator").emit(
        event_name=EVALUATION_EVENT,
        context=trace.set_span_in_context(evaluated),
        attributes={
            "gen_ai.evaluation.name": EVALUATION_NAME,
            "gen_ai.evaluation.score.value": score,
            "gen_ai.evaluation.score.label": label_for(score),
            "gen_ai.evaluation.explanation": explanation_for(chat),
        },
    )


def label_for(score: float) -> str:
    return "relevant" if score >= 0.5 else "not_relevant"


def explanation_for(chat: Chat) -> str:
    return f"the answer is about conversation {chat.conversation}"


def user_feedback_for(conversation: str) -> str:
    """What the user wrote with the thumbs (the test finds the chat by the last word)."""
    return f"thumbs from the user of conversation {conversation}"


# --------------------------------------------------------------------------- span dump


class SpanDump(SpanProcessor):
    """Write each ended span's name and id-like attributes to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 (closed at shutdown)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        attributes = dict(span.attributes or {})
        ids = {
            key: str(value)
            for key, value in attributes.items()
            if any(word in key for word in _ID_WORDS)
        }
        scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
        parent = span.parent
        record = {
            "name": span.name,
            "scope": scope,
            "root": parent is None or parent.is_remote,
            "ids": ids,
            "events": [event.name for event in span.events],
        }
        line = json.dumps(record) + "\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()  # the process may end by SIGTERM's default action

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return True


def dump_spans() -> None:
    """Add :class:`SpanDump` to the global SDK provider when ``STACK_SPAN_DUMP`` is set."""
    path = os.environ.get("STACK_SPAN_DUMP")
    provider = trace.get_tracer_provider()
    add = getattr(provider, "add_span_processor", None)
    if path and add is not None:
        add(SpanDump(path))


# --------------------------------------------------------------------------- the app


def make_app(title: str, processor: Any = None) -> FastAPI:
    """A FastAPI app with ``GET /health``, ``POST /feedback`` and, given the processor
    ``configure()`` returned, ``GET /stats`` (its ``stats()``); the stack module adds
    ``POST /chat``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ready = os.environ.get("STACK_READY_FILE")
        if ready:
            Path(ready).write_text(str(os.getpid()))
        yield

    app = FastAPI(title=title, lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.post("/feedback")
    async def feedback(body: Feedback) -> dict[str, int]:
        # A request of its own, as a chat UI sends it: the conversation is named explicitly.
        otel_greenflash.rate(
            body.up,
            feedback=user_feedback_for(body.conversation),
            external_conversation_id=body.conversation,
        )
        return {"pid": os.getpid()}

    if processor is not None:

        @app.get("/stats")
        async def stats() -> dict[str, Any]:
            return dict(processor.stats())

    return app
