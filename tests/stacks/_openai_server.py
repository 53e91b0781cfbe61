"""A small OpenAI-compatible server on loopback, for the GenAI stack tests.

It answers what the real ``openai`` package sends, in the shapes the real API returns, so the
package and the instrumentations wrapped around it parse real objects:

* ``POST /v1/chat/completions``: a ``chat.completion`` object, or with ``"stream": true`` a
  Server-Sent Events stream of ``chat.completion.chunk`` objects (role, content pieces, a last
  chunk with ``finish_reason``, with ``stream_options.include_usage`` a usage chunk with no
  choices) ended by ``data: [DONE]``;
* ``POST /v1/responses``: a ``response`` object, or with ``"stream": true`` the typed events
  ``response.created``, ``response.output_text.delta`` … ``response.completed``;
* ``GET /v1/models``: one model.

The answer text is built from the last user message, so a caller can check it got its own answer.
The server runs aiohttp (a dependency of this library) on its own loop in a daemon thread, binds
an ephemeral port on 127.0.0.1, and counts the requests it answered per kind.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
FINGERPRINT = "fp_greenflash_test"


def _words(messages: Any) -> str:
    """The text of the last user message (string content or a list of text parts)."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            parts = [
                str(part.get("text", ""))
                for part in content
                if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            ]
            return " ".join(parts)
    return ""


def answer_for(prompt: str) -> str:
    """The assistant's answer to ``prompt`` (deterministic, a few words)."""
    return f"Sure. You asked: {prompt.strip()[:200]}. The Pro plan covers that."


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _pieces(text: str) -> list[str]:
    """``text`` cut after each space, the way a model streams tokens."""
    pieces: list[str] = []
    current = ""
    for char in text:
        current += char
        if char == " ":
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


class OpenAIServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._port = 0

    # -- lifecycle

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None or not self._port:
            raise RuntimeError("the OpenAI-compatible server did not start") from (
                self._startup_error
            )
        return self

    def stop(self) -> None:
        loop, event, thread = self._loop, self._stop, self._thread
        if loop is not None and event is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(event.set)
            thread.join(15)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the ``base_url`` of an ``openai`` client."""
        return f"http://{HOST}:{self._port}/v1"

    @property
    def counts(self) -> Counter[str]:
        """Requests answered, by kind: ``chat``, ``chat-stream``, ``responses``, …"""
        with self._lock:
            return Counter(self._counts)

    @property
    def errors(self) -> list[str]:
        """Requests that could not be answered (bad JSON, unknown model fields), for failures."""
        with self._lock:
            return list(self._errors)

    # -- loop thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._startup_error = exc
        finally:
            loop.close()
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        self._port = int(sock.getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            with self._lock:
                self._errors.append(f"{request.path}: body is not a JSON object")
            return None
        return body

    @staticmethod
    def _bad(message: str) -> web.Response:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=400)

    # -- /v1/models

    async def _models(self, request: web.Request) -> web.Response:
        self._count("models")
        model = {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "test"}
        return web.json_response({"object": "list", "data": [model]})

    # -- /v1/chat/completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if body is None:
            return self._bad("body must be a JSON object")
        model = str(body.get("model") or "gpt-4o-mini")
        prompt = _words(body.get("messages"))
        text = answer_for(prompt)
        ident = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        usage = {
            "prompt_tokens": _tokens(prompt),
            "completion_tokens": _tokens(text),
            "total_tokens": _tokens(prompt) + _tokens(text),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if not body.get("stream"):
            self._count("chat")
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            message["annotations"] = []
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            completion = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }
            return web.json_response(completion)

        self._count("chat-stream")
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            piece: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                piece["usage"] = None
            return piece

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        chunks += [chunk({"content": piece}, None) for piece in _pieces(text)]
        chunks.append(chunk({}, "stop"))
        if include_usage:
            last = chunk({}, None)
            last["choices"] = []
            last["usage"] = usage
            chunks.append(last)
        for piece in chunks:
            await response.write(b"data: " + json.dumps(piece).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- /v1/responses

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if body is None:
            return self._bad("body must be a JSON object")
        model = str(body.get("model") or "gpt-4o-mini")
        prompt = _words(body.get("input"))
        text = answer_for(prompt)
        created = int(time.time())
        message_id = "msg_" + secrets.token_hex(12)
        conversation = body.get("conversation")
        if isinstance(conversation, str):
            conversation = {"id": conversation}
        usage = {
            "input_tokens": _tokens(prompt),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": _tokens(text),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": _tokens(prompt) + _tokens(text),
        }

        def response_object(status: str, done: bool) -> dict[str, Any]:
            content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
            item = {
                "type": "message",
                "id": message_id,
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
            return {
                "id": ident,
                "object": "response",
                "created_at": created,
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model,
                "output": [item] if done else [],
                "parallel_tool_calls": True,
                "previous_response_id": body.get("previous_response_id"),
                "conversation": conversation if isinstance(conversation, Mapping) else None,
                "reasoning": {"effort": None, "summary": None},
                "service_tier": "default",
                "store": True,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage if done else None,
                "user": body.get("user"),
                "metadata": body.get("metadata") or {},
            }

        ident = "resp_" + secrets.token_hex(12)
        if not body.get("stream"):
            self._count("responses")
            return web.json_response(response_object("completed", True))

        self._count("responses-stream")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        sequence = 0

        async def send(kind: str, fields: dict[str, Any]) -> None:
            nonlocal sequence
            event = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            data = json.dumps(event).encode()
            await response.write(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

        await send("response.created", {"response": response_object("in_progress", False)})
        item = {
            "type": "message",
            "id": message_id,
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        await send("response.output_item.added", {"output_index": 0, "item": item})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": message_id, "output_index": 0, "content_index": 0}
        await send("response.content_part.added", {**where, "part": part})
        for piece in _pieces(text):
            await send("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        await send("response.output_text.done", {**where, "text": text, "logprobs": []})
        done_part = {**part, "text": text}
        await send("response.content_part.done", {**where, "part": done_part})
        finished = response_object("completed", True)
        await send("response.output_item.done", {"output_index": 0, "item": finished["output"][0]})
        await send("response.completed", {"response": finished})
        await response.write_eof()
        return response
