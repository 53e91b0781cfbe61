"""What every stack app shares: the chat model, the OpenAI call, the two business events.

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
* ``GREENFLASH_*``: read by ``otel_greenflash.configure()``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from pydantic import BaseModel

import otel_greenflash

MODEL = "gpt-4o-mini"
PRICE = "149.00"

# Attribute names that look like a conversation, session, thread or user id, or ours.
_ID_WORDS = ("session", "conversation", "user", "thread", "association", "greenflash.")


class Chat(BaseModel):
    """``POST /chat`` body: the chat's conversation id and user id, streamed or not."""

    conversation: str
    user: str
    stream: bool = False


class Answer(BaseModel):
    answer: str
    pid: int


def prompt_for(chat: Chat) -> str:
    """The user's message; the OpenAI-compatible server echoes it in its answer."""
    return f"Which plan fits conversation {chat.conversation}?"


def messages_for(chat: Chat) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful billing assistant."},
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


def make_app(title: str) -> FastAPI:
    """A FastAPI app with ``GET /health``; the stack module adds ``POST /chat``."""

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

    return app
