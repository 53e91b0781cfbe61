"""An independent Events API receiver and a TCP fault proxy, for checking the client.

Stdlib only (asyncio streams, hand-written HTTP/1.1): nothing here imports the library, httpx
or aiohttp, so the receiver cannot share a bug with the client it checks.

* :class:`Receiver` answers ``POST /v1/events`` like the Events API (bearer key, dedup by
  ``insertId``), ``POST /v1/messages`` and ``POST /v1/ratings`` like the Messages and Ratings
  APIs (contract checked, messages deduplicated by ``externalMessageId`` within their
  conversation, ratings never), and applies a per-request plan of :class:`Fault` s.
* :class:`FaultProxy` sits between a client and any upstream and breaks connections in the
  network rather than in the server.

Both run an asyncio loop in a daemon thread, bind an ephemeral port on 127.0.0.1, work as
context managers, and close every socket and task on :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import math
import random
import re
import secrets
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "Fault",
    "FaultKind",
    "FaultProxy",
    "ProxyFault",
    "ProxyFaultKind",
    "Receiver",
    "RequestRecord",
    "messages_contract_errors",
    "rating_contract_errors",
]

FaultKind = Literal["status", "reset", "hang", "drip", "huge", "lost"]
ProxyFaultKind = Literal["reset_after_request", "blackhole", "delay"]

HOST = "127.0.0.1"
_HEAD_LIMIT = 64 * 1024
_BODY_LIMIT = 16 * 1024 * 1024
_CHUNK = 64 * 1024
_STOP_GRACE_SECONDS = 5.0

_S = TypeVar("_S", bound="_ServerThread")


# --------------------------------------------------------------------------- faults and records


@dataclass(frozen=True)
class Fault:
    """What the receiver does with one valid POST instead of a plain success.

    Build with the class methods. Only ``lost`` and a 2xx ``status`` record the event (the
    messages, the rating) as accepted; every other kind leaves it unaccepted.
    """

    kind: FaultKind
    code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    size: int = 0
    interval: float = 0.0

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"status code must be in 200..599, got {self.code}")
        if self.size < 0 or self.interval < 0:
            raise ValueError("size and interval must be >= 0")

    @classmethod
    def status(cls, code: int, headers: Mapping[str, str] | None = None) -> Fault:
        """Answer ``code`` (plus ``headers``, e.g. ``Retry-After``); 2xx accepts the event."""
        return cls("status", code=code, headers=tuple((headers or {}).items()))

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then close with a TCP RST and no answer."""
        return cls("reset")

    @classmethod
    def hang(cls) -> Fault:
        """Read the request and never answer; hold the socket until the client leaves or stop."""
        return cls("hang")

    @classmethod
    def drip(cls, size: int = 32, interval: float = 0.5, code: int = 200) -> Fault:
        """Send status line and headers (``Content-Length: size``), then 1 byte per interval."""
        return cls("drip", code=code, size=size, interval=interval)

    @classmethod
    def huge(cls, size: int = 200 * 1024 * 1024) -> Fault:
        """Answer 200 with a ``size``-byte body, streamed in chunks (never held in memory)."""
        return cls("huge", size=size)

    @classmethod
    def lost(cls) -> Fault:
        """Accept the event, then reset the connection before answering (a lost response)."""
        return cls("lost")


@dataclass(frozen=True)
class RequestRecord:
    """One request the receiver read, and what it did with it."""

    received_at: float
    """``time.monotonic()`` when the whole request had been read."""
    connection: int
    """Sequence number of the TCP connection (1-based) it came on."""
    method: str
    path: str
    insert_id: str | None
    status: int | None
    """Status code sent (``None`` when no status line was sent: reset, hang, lost)."""
    fault: FaultKind | None
    errors: tuple[str, ...] = ()
    """Contract violations of a ``/messages`` or ``/ratings`` body answered 422."""

    @property
    def outcome(self) -> int | str:
        """The status answered, or the fault kind when no plain status answer was given."""
        if self.fault is None or self.fault == "status":
            return self.status if self.status is not None else "none"
        return self.fault


@dataclass(frozen=True)
class ProxyFault:
    """What :class:`FaultProxy` does with one client connection."""

    kind: ProxyFaultKind
    delay_seconds: float = 0.0


# --------------------------------------------------------------------------- helpers


class _BadRequestError(Exception):
    """The request cannot be parsed: answer ``code`` and close the connection."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close at once; SO_LINGER 0 makes the kernel send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Status"


def _head(
    code: int,
    length: int | None,
    keep_alive: bool,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    lines = [f"HTTP/1.1 {code} {_reason(code)}", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _padded_json(size: int, chunk: int) -> Iterator[bytes]:
    """Yield a ``size``-byte JSON object (``{`` spaces ``}``) in pieces of at most ``chunk``."""
    if size < 2:
        if size:
            yield b" "
        return
    spaces = b" " * chunk
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        first, last = sent == 0, sent + n == size
        if first or last:
            piece = bytearray(spaces[:n])
            if first:
                piece[0] = ord("{")
            if last:
                piece[-1] = ord("}")
            yield bytes(piece)
        else:
            yield spaces if n == chunk else spaces[:n]
        sent += n


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequestError(400, "bad chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields are ignored
            return b"".join(parts)
        total += size
        if total > _BODY_LIMIT:
            raise _BadRequestError(413, "body too large")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequestError(400, "bad chunk terminator")


# --------------------------------------------------------------------------- contracts

_ROLES = frozenset({"user", "assistant", "system"})
_KINDS = frozenset(
    {
        *("user_message", "assistant_message", "system_message", "final_response", "thought"),
        *("tool_call", "observation", "retrieval", "memory_read", "memory_write"),
        *("chain_start", "chain_end", "embedding", "tool_error", "callback", "llm"),
        *("task", "workflow"),
    }
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Field kinds: "text" any string, "name" a non-empty string, "uuid", "object", "unit" a number
# in [0, 1], "flag" a boolean, "time" an ISO 8601 date-time with a zone, "any" checked apart.
_BODY_FIELDS = {
    "externalUserId": "name",
    "messages": "any",
    "conversationId": "uuid",
    "externalConversationId": "name",
    "productId": "uuid",
    "externalOrganizationId": "text",
    "model": "text",
    "properties": "object",
    "systemPrompt": "any",
    "sampleRate": "unit",
    "forceSample": "flag",
    "voiceCall": "object",
}
_MESSAGE_FIELDS = {
    "content": "text",
    "role": "any",
    "messageType": "any",
    "toolName": "name",
    "input": "object",
    "output": "object",
    "context": "any",
    "createdAt": "time",
    "externalMessageId": "name",
    "parentMessageId": "uuid",
    "parentExternalMessageId": "name",
    "model": "text",
    "properties": "object",
    "voice": "object",
}
_RATING_FIELDS = {
    "productId": "uuid",
    "rating": "number",
    "ratingMin": "number",
    "ratingMax": "number",
    "conversationId": "uuid",
    "externalConversationId": "name",
    "messageId": "uuid",
    "externalMessageId": "name",
    "feedback": "text",
    "ratedAt": "time",
}
_RATING_TARGETS = ("conversationId", "externalConversationId", "messageId", "externalMessageId")


def _fits(kind: str, value: Any) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "name":
        return isinstance(value, str) and value.strip() != ""
    if kind == "uuid":
        return isinstance(value, str) and _UUID.fullmatch(value) is not None
    if kind == "object":
        return isinstance(value, dict)
    if kind == "flag":
        return isinstance(value, bool)
    if kind in ("unit", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return math.isfinite(value) and (kind == "number" or 0 <= value <= 1)
    if kind == "time":
        return _is_zoned_time(value)
    return True


def _is_zoned_time(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _field_errors(obj: Mapping[str, Any], kinds: Mapping[str, str], prefix: str) -> list[str]:
    """Unknown fields, and known ones whose value is not of their kind."""
    problems: list[str] = []
    for name, value in obj.items():
        kind = kinds.get(name)
        if kind is None:
            problems.append(f"{prefix}{name}: unknown field")
        elif not _fits(kind, value):
            problems.append(f"{prefix}{name}: must be {_KIND_WORDS[kind]}")
    return problems


_KIND_WORDS = {
    "text": "a string",
    "name": "a non-empty string",
    "uuid": "a UUID",
    "object": "an object",
    "unit": "a number from 0 to 1",
    "flag": "a boolean",
    "number": "a finite number",
    "time": "an ISO 8601 date-time with a zone",
}


def messages_contract_errors(body: Mapping[str, Any]) -> list[str]:
    """What is wrong with a ``POST /messages`` body (empty: nothing)."""
    problems = _field_errors(body, _BODY_FIELDS, "")
    if "externalUserId" not in body:
        problems.append("externalUserId: required")
    if all(key not in body for key in ("conversationId", "externalConversationId", "productId")):
        problems.append("conversationId, externalConversationId or productId: one is required")
    prompt = body.get("systemPrompt")
    if "systemPrompt" in body and not isinstance(prompt, str):
        if not isinstance(prompt, dict):
            problems.append("systemPrompt: must be a string or an object")
        elif not {"content", "components", "promptId", "externalPromptId"} & prompt.keys():
            problems.append("systemPrompt: needs content, components, promptId or externalPromptId")
        elif {"content", "components"} <= prompt.keys():
            problems.append("systemPrompt: content or components, not both")
    if "messages" not in body:
        problems.append("messages: required")
        return problems
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        problems.append("messages: must be a non-empty array")
        return problems
    for position, message in enumerate(messages):
        problems.extend(_one_message_errors(message, f"messages[{position}]."))
    return problems


def _one_message_errors(message: Any, prefix: str) -> list[str]:
    if not isinstance(message, dict):
        return [f"{prefix[:-1]}: must be an object"]
    problems = _field_errors(message, _MESSAGE_FIELDS, prefix)
    if "content" not in message:
        problems.append(f"{prefix}content: required")
    has_role, has_type = "role" in message, "messageType" in message
    if has_role == has_type:
        problems.append(f"{prefix}role / messageType: exactly one is required")
    elif has_role and message["role"] not in _ROLES:
        problems.append(f"{prefix}role: must be user, assistant or system")
    elif has_type and message["messageType"] not in _KINDS:
        problems.append(f"{prefix}messageType: not a known message type")
    elif message.get("messageType") == "tool_call" and "toolName" not in message:
        problems.append(f"{prefix}toolName: required for a tool_call")
    if "parentMessageId" in message and "parentExternalMessageId" in message:
        problems.append(f"{prefix}parentMessageId / parentExternalMessageId: at most one")
    if message.get("context") is not None and not isinstance(message["context"], str):
        problems.append(f"{prefix}context: must be a string or null")
    return problems


def rating_contract_errors(body: Mapping[str, Any]) -> list[str]:
    """What is wrong with a ``POST /ratings`` body (empty: nothing)."""
    problems = _field_errors(body, _RATING_FIELDS, "")
    problems.extend(
        f"{name}: required"
        for name in ("productId", "rating", "ratingMin", "ratingMax")
        if name not in body
    )
    targets = [name for name in _RATING_TARGETS if name in body]
    if len(targets) != 1:
        problems.append(f"{' / '.join(_RATING_TARGETS)}: exactly one is required, got {targets}")
    scale = {
        key: value for key, value in body.items() if key in ("ratingMin", "rating", "ratingMax")
    }
    scale = {key: value for key, value in scale.items() if _fits("number", value)}
    if "ratingMin" in scale and "ratingMax" in scale:
        if not scale["ratingMin"] < scale["ratingMax"]:
            problems.append("ratingMin: must be below ratingMax")
        elif "rating" in scale and not scale["ratingMin"] <= scale["rating"] <= scale["ratingMax"]:
            problems.append("rating: must lie within ratingMin..ratingMax")
    return problems


# --------------------------------------------------------------------------- server thread


class _ServerThread:
    """A TCP server on 127.0.0.1, run by a private asyncio loop in a daemon thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port = 0
        # Loop-thread only:
        self._stopping = False
        self._handlers: set[asyncio.Task[Any]] = set()
        # Guarded by _lock:
        self._open = 0
        self._opened = 0
        self._errors: list[str] = []

    # -- lifecycle

    def start(self: _S) -> _S:
        """Bind the port and start serving; returns self. A server starts only once."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} can only be started once")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise RuntimeError(f"{self._name} failed to start") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, end the loop and join the thread."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None or not thread.is_alive():
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self._name} did not stop within {timeout} s")

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive() and self._port != 0

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """The bound port (only after :meth:`start`)."""
        if not self._port:
            raise RuntimeError(f"{self._name} is not started")
        return self._port

    # -- accounting shared by both servers

    @property
    def open_connections(self) -> int:
        """Client connections currently open."""
        with self._lock:
            return self._open

    @property
    def connections_opened(self) -> int:
        """Client connections accepted since start."""
        with self._lock:
            return self._opened

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inside connection handlers (a bug here; should stay empty)."""
        with self._lock:
            return list(self._errors)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` (called under no lock) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.05))
        return True

    def _notify(self) -> None:
        """Wake waiters; call with ``_lock`` held."""
        self._changed.notify_all()

    # -- loop thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by start(), or recorded after it
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                with self._lock:
                    self._errors.append(f"loop: {exc!r}")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._ready.set()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._on_connect, HOST, 0, limit=_HEAD_LIMIT)
        try:
            self._port = int(server.sockets[0].getsockname()[1])
            self._ready.set()
            await self._stop_event.wait()
        finally:
            self._stopping = True
            server.close()
            await self._finish_handlers()
            await server.wait_closed()

    async def _finish_handlers(self) -> None:
        """Cancel running handlers once each; handlers not started yet see ``_stopping``."""
        me = asyncio.current_task()
        cancelled: set[asyncio.Task[Any]] = set()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while True:
            for task in self._handlers - cancelled:
                task.cancel()
                cancelled.add(task)
            others = {task for task in asyncio.all_tasks() if task is not me}
            if not others or time.monotonic() > deadline:
                break
            await asyncio.wait(others, timeout=0.05)
        for _ in range(3):  # let connection_lost callbacks close the last sockets
            await asyncio.sleep(0)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        with self._lock:
            self._open += 1
            self._opened += 1
            connection = self._opened
            self._notify()
        try:
            if not self._stopping:
                await self._handle(reader, writer, connection)
        except asyncio.CancelledError:
            pass  # stop() cancelled us; the socket is closed below
        except (OSError, EOFError):
            pass  # the peer went away or reset: normal for fault tests
        except Exception as exc:
            with self._lock:
                self._errors.append(f"connection {connection}: {exc!r}")
        finally:
            await self._close(writer)
            if task is not None:
                self._handlers.discard(task)
            with self._lock:
                self._open -= 1
                self._notify()

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close gracefully (abort while stopping) and wait until the socket is closed."""
        if self._stopping:
            writer.transport.abort()
        else:
            writer.close()
        try:
            await writer.wait_closed()
        except asyncio.CancelledError:
            writer.transport.abort()
        except Exception:  # a reset peer is fine here
            pass

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- receiver


class Receiver(_ServerThread):
    """A Greenflash API look-alike with ``Authorization: Bearer <api_key>``: ``POST /v1/events``,
    ``POST /v1/messages`` and ``POST /v1/ratings``.

    Each valid request follows the plan: the next :meth:`inject` ed fault for its endpoint
    (FIFO), else a draw from the :meth:`mix`, else success. Events succeed with ``ok_status``
    and ``{"success": true, "eventId"}``, and are deduplicated by ``insertId``: a repeat is
    answered like the first (same ``eventId``) and counted in :attr:`duplicates`. Messages
    succeed with 200 and the Messages API's answer; a message whose ``externalMessageId`` is
    already stored in its conversation is not stored again and is answered ``deduplicated``.
    Ratings succeed with 200 and ``{"success": true}``, and every accepted rating is stored,
    repeats included. ``latency_seconds`` is slept after reading each request and before
    answering it. Wrong path or method: 404; missing or wrong key: 401; body not a JSON object:
    400; a messages or ratings body breaking its contract: 422 listing the problems. None of
    these consumes a fault.
    """

    EVENTS_PATH = "/v1/events"
    MESSAGES_PATH = "/v1/messages"
    RATINGS_PATH = "/v1/ratings"
    _ENDPOINTS: ClassVar[Mapping[str, str]] = {
        EVENTS_PATH: "events",
        MESSAGES_PATH: "messages",
        RATINGS_PATH: "ratings",
    }

    def __init__(
        self,
        *,
        latency_seconds: float = 0.0,
        faults: Iterable[Fault] = (),
        mix: Mapping[Fault, float] | None = None,
        seed: int = 0,
        ok_status: int = 200,
        api_key: str | None = None,
    ) -> None:
        super().__init__("independent-receiver")
        if latency_seconds < 0:
            raise ValueError("latency_seconds must be >= 0")
        if not 200 <= ok_status <= 299:
            raise ValueError("ok_status must be 2xx")
        self._latency = latency_seconds
        self._ok_status = ok_status
        self._api_key = api_key or "rk-" + secrets.token_urlsafe(24)
        self._queue: deque[tuple[str | None, Fault]] = deque((None, f) for f in faults)
        self._mix: list[tuple[Fault, float]] = []
        self._rng = random.Random(seed)
        if mix:
            self.mix(mix, seed)
        self._accepted: list[dict[str, Any]] = []
        self._event_ids: dict[str, str] = {}
        self._duplicates = 0
        self._requests: list[RequestRecord] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._threads: dict[str, dict[str, Any]] = {}
        self._thread_keys: dict[tuple[Any, Any], str] = {}
        self._message_count = 0
        self._message_repeats = 0
        self._ratings: list[dict[str, Any]] = []

    # -- addresses

    @property
    def api_key(self) -> str:
        """The only key accepted (random unless given)."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: pass this as the client's base URL."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def events_url(self) -> str:
        """``base_url + "/events"``."""
        return self.base_url + "/events"

    # -- plan

    def inject(self, fault: Fault, times: int = 1, *, endpoint: str | None = None) -> None:
        """Give the next ``times`` valid requests ``fault`` (after faults already queued).

        ``endpoint`` (``"events"``, ``"messages"``, ``"ratings"``) reserves them for requests
        to that endpoint; without it, a request to any endpoint takes the next one.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if endpoint is not None and endpoint not in self._ENDPOINTS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}")
        with self._lock:
            self._queue.extend([(endpoint, fault)] * times)

    def mix(self, weights: Mapping[Fault, float], seed: int) -> None:
        """Give each valid request (not served from the queue) a random fault.

        ``weights`` are probabilities (summing to at most 1; the rest succeed), drawn from
        ``random.Random(seed)`` once per such request, so the n-th draw is reproducible.
        An empty mapping turns the mix off.
        """
        items = list(weights.items())
        if any(weight < 0 for _, weight in items) or sum(w for _, w in items) > 1 + 1e-9:
            raise ValueError("weights must be >= 0 and sum to at most 1")
        with self._lock:
            self._mix = items
            self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        """Drop queued faults and the mix."""
        with self._lock:
            self._queue.clear()
            self._mix = []

    @property
    def pending_faults(self) -> int:
        """Faults still queued by :meth:`inject`."""
        with self._lock:
            return len(self._queue)

    # -- accounting

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Distinct accepted event bodies, in order (first request for each ``insertId``)."""
        with self._lock:
            return list(self._accepted)

    @property
    def accepted_insert_ids(self) -> list[str]:
        """``insertId`` of each accepted event that has one, in order."""
        with self._lock:
            ids = (event.get("insertId") for event in self._accepted)
            return [i for i in ids if isinstance(i, str)]

    @property
    def duplicates(self) -> int:
        """Accepting requests whose ``insertId`` had already been accepted."""
        with self._lock:
            return self._duplicates

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request read (any path or outcome), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        """Requests read and not yet answered (or given up on)."""
        with self._lock:
            return self._in_flight

    @property
    def max_concurrency(self) -> int:
        """Peak of :attr:`in_flight` since start."""
        with self._lock:
            return self._max_in_flight

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` distinct events are accepted; False on timeout."""
        return self.wait_until(lambda: len(self.accepted) >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests have been read; False on timeout."""
        return self.wait_until(lambda: len(self.requests) >= n, timeout)

    @property
    def conversations(self) -> list[dict[str, Any]]:
        """Conversations in creation order: ``conversationId``, ``productId``,
        ``externalConversationId``, ``externalUserId`` and ``messages``, the stored messages in
        order (each ``messageId``, ``messageType``, ``content``, ``externalMessageId``,
        ``parentMessageId``, ``parentExternalMessageId`` and the ``sent`` message)."""
        with self._lock:
            return [
                {**thread, "messages": [dict(m) for m in thread["messages"]]}
                for thread in self._threads.values()
            ]

    def messages_of(self, external_conversation_id: str) -> list[dict[str, Any]]:
        """The stored messages of the only conversation with this external id."""
        found = [
            thread
            for thread in self.conversations
            if thread["externalConversationId"] == external_conversation_id
        ]
        if len(found) != 1:
            raise LookupError(f"{len(found)} conversations are {external_conversation_id!r}")
        messages: list[dict[str, Any]] = found[0]["messages"]
        return messages

    @property
    def stored_messages(self) -> int:
        """Messages stored, over all conversations."""
        with self._lock:
            return self._message_count

    @property
    def deduplicated_messages(self) -> int:
        """Messages not stored because their ``externalMessageId`` was already there."""
        with self._lock:
            return self._message_repeats

    @property
    def ratings(self) -> list[dict[str, Any]]:
        """Every accepted rating body, in order (repeats included: ratings are not deduped)."""
        with self._lock:
            return list(self._ratings)

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` messages are stored; False on timeout."""
        return self.wait_until(lambda: self.stored_messages >= n, timeout)

    def wait_for_ratings(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` ratings are stored; False on timeout."""
        return self.wait_until(lambda: len(self.ratings) >= n, timeout)

    # -- serving

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> None:
        while True:
            try:
                request = await self._read_request(reader, writer)
            except _BadRequestError as bad:
                body = json.dumps({"success": False, "error": str(bad)}).encode()
                writer.write(_head(bad.code, len(body), keep_alive=False) + body)
                await writer.drain()
                return
            if request is None or not await self._answer(request, reader, writer, connection):
                return

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # closed between requests (or mid-head)
        except asyncio.LimitOverrunError:
            raise _BadRequestError(431, "request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # tolerate stray CRLFs before a request line
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequestError(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequestError(400, "bad header line")
            key, value = name.lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise _BadRequestError(501, "only chunked transfer-encoding is supported")
            self._continue(headers, writer)
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise _BadRequestError(400, "bad content-length")
            if int(length) > _BODY_LIMIT:
                raise _BadRequestError(413, "body too large")
            self._continue(headers, writer)
            body = await reader.readexactly(int(length))
        else:
            body = b""
        return _Request(method, target, headers, body, keep_alive)

    @staticmethod
    def _continue(headers: Mapping[str, str], writer: asyncio.StreamWriter) -> None:
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _authorized(self, header: str) -> bool:
        expected = f"Bearer {self._api_key}".encode()
        return hmac.compare_digest(header.encode("latin-1", "replace"), expected)

    def _next_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for queued in self._queue:
                if queued[0] in (None, endpoint):
                    self._queue.remove(queued)
                    return queued[1]
            if self._mix:
                draw, total = self._rng.random(), 0.0
                for fault, weight in self._mix:
                    total += weight
                    if draw < total:
                        return fault
        return None

    def _accept(self, event: dict[str, Any], insert_id: str | None) -> str:
        """Record ``event`` unless its ``insertId`` was seen; return its ``eventId``."""
        with self._lock:
            if insert_id is not None and insert_id in self._event_ids:
                self._duplicates += 1
                return self._event_ids[insert_id]
            event_id = str(uuid.uuid4())
            if insert_id is not None:
                self._event_ids[insert_id] = event_id
            self._accepted.append(event)
            self._notify()
            return event_id

    def _store_messages(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a valid messages body in its conversation; return the API's answer."""
        with self._lock:
            thread = self._thread_for(body)
            stored = thread["messages"]
            results = []
            for sent in body["messages"]:
                external = sent.get("externalMessageId")
                earlier = next(
                    (m for m in stored if external and m["externalMessageId"] == external), None
                )
                if earlier is None:
                    kind = sent["role"] + "_message" if "role" in sent else sent["messageType"]
                    parent = sent.get("parentMessageId")
                    parent_external = sent.get("parentExternalMessageId")
                    if parent_external is not None:
                        parent = next(
                            (
                                m["messageId"]
                                for m in stored
                                if m["externalMessageId"] == parent_external
                            ),
                            None,
                        )
                    record = {
                        "messageId": str(uuid.uuid4()),
                        "messageType": kind,
                        "content": sent["content"],
                        "externalMessageId": external,
                        "parentMessageId": parent,
                        "parentExternalMessageId": parent_external,
                        "sent": sent,
                    }
                    stored.append(record)
                    self._message_count += 1
                    status = "created"
                else:
                    record = earlier
                    self._message_repeats += 1
                    status = "deduplicated"
                results.append(
                    {
                        "messageId": record["messageId"],
                        "messageType": record["messageType"],
                        "status": status,
                        "externalMessageId": external,
                    }
                )
            self._notify()
            return {
                "success": True,
                "conversationId": thread["conversationId"],
                "messages": results,
                "systemPromptComponentIds": [],
                "systemPromptPromptId": str(uuid.uuid4()),
            }

    def _thread_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """The conversation ``body`` names: by ``conversationId``, else by (``productId``,
        ``externalConversationId``), else a new one. Call with ``_lock`` held."""
        key = (body.get("productId"), body.get("externalConversationId"))
        conversation_id = body.get("conversationId")
        if conversation_id is None and key[1] is not None:
            conversation_id = self._thread_keys.get(key)
        conversation_id = conversation_id or str(uuid.uuid4())
        if conversation_id not in self._threads:
            self._threads[conversation_id] = {
                "conversationId": conversation_id,
                "productId": key[0],
                "externalConversationId": key[1],
                "externalUserId": body["externalUserId"],
                "messages": [],
            }
        if key[1] is not None and key not in self._thread_keys:
            self._thread_keys[key] = conversation_id
        return self._threads[conversation_id]

    def _store_rating(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._ratings.append(body)
            self._notify()
        return {"success": True}

    async def _answer(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: int,
    ) -> bool:
        """Answer one request; True to keep reading from the connection."""
        path = urlsplit(request.target).path
        accept: Callable[[], dict[str, Any]] | None = None
        insert_id: str | None = None
        fault: Fault | None = None
        problems: list[str] = []
        endpoint = self._ENDPOINTS.get(path)
        if request.method != "POST" or endpoint is None:
            status: int | None = 404
        elif not self._authorized(request.headers.get("authorization", "")):
            status = 401
        else:
            try:
                parsed = json.loads(request.body)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                status = 400
            elif endpoint == "messages":
                problems = messages_contract_errors(parsed)
                accept = functools.partial(self._store_messages, parsed)
            elif endpoint == "ratings":
                problems = rating_contract_errors(parsed)
                accept = functools.partial(self._store_rating, parsed)
            else:
                raw_id = parsed.get("insertId")
                insert_id = raw_id if isinstance(raw_id, str) else None
                accept = functools.partial(self._event_answer, parsed, insert_id)
            if problems:
                status, accept = 422, None
            elif accept is not None:
                fault = self._next_fault(endpoint)
                status = self._ok_status if endpoint == "events" else 200
                if fault is not None:
                    status = {"status": fault.code, "drip": fault.code, "huge": 200}.get(fault.kind)
        record = RequestRecord(
            time.monotonic(),
            connection,
            request.method,
            path,
            insert_id,
            status,
            fault.kind if fault else None,
            tuple(problems),
        )
        with self._lock:
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._notify()
        try:
            if self._latency:
                await asyncio.sleep(self._latency)
            return await self._perform(request, reader, writer, accept, fault, status, problems)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._notify()

    def _event_answer(self, event: dict[str, Any], insert_id: str | None) -> dict[str, Any]:
        return {"success": True, "eventId": self._accept(event, insert_id)}

    async def _perform(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        accept: Callable[[], dict[str, Any]] | None,
        fault: Fault | None,
        status: int | None,
        problems: list[str],
    ) -> bool:
        """Carry out the plan; ``accept`` stores the request's content and gives the answer."""
        keep = request.keep_alive
        kind = fault.kind if fault else None
        if kind in ("reset", "lost"):
            if kind == "lost" and accept is not None:
                accept()
            _rst(writer)
            return False
        if kind == "hang":
            while await reader.read(_CHUNK):
                pass  # hold the socket, unanswered, until the client leaves (or stop)
            return False
        if fault is not None and kind in ("drip", "huge"):
            writer.write(_head(status or 200, fault.size, keep))
            await writer.drain()
            chunk, pause = (1, fault.interval) if kind == "drip" else (_CHUNK, 0.0)
            for piece in _padded_json(fault.size, chunk):
                if pause:
                    await asyncio.sleep(pause)
                    if reader.at_eof() or writer.is_closing():
                        return False
                writer.write(piece)
                await writer.drain()
            return keep
        # A plain answer: success, an injected status, or a routing/auth/body error.
        code = status or 500
        if accept is not None and 200 <= code <= 299:
            payload = accept()
        else:
            payload = {"success": False, "error": "; ".join(problems) or _reason(code)}
        body = b"" if code in (204, 304) else json.dumps(payload).encode()
        length = None if code in (204, 304) else len(body)
        writer.write(_head(code, length, keep, fault.headers if fault else ()) + body)
        await writer.drain()
        return keep


# --------------------------------------------------------------------------- proxy


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``src`` to ``dst`` until EOF, holding each chunk ``delay`` seconds; then half-close."""
    while True:
        data = await src.read(_CHUNK)
        if not data:
            break
        if delay:
            await asyncio.sleep(delay)
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof() and not dst.is_closing():
        dst.write_eof()


class FaultProxy(_ServerThread):
    """A TCP proxy on 127.0.0.1 to ``upstream_host:upstream_port`` that breaks connections.

    Each new client connection takes the next :meth:`inject` ed fault (FIFO), else passes
    through (with ``delay_seconds`` on the way back, 0 by default). Faults:
    ``reset_after_request`` reads the client's first bytes, forwards nothing and sends RST;
    ``blackhole`` reads and discards, never connecting upstream or answering; ``delay`` holds
    each chunk coming back from upstream ``delay_seconds``. A reset on one side is passed on as
    a reset to the other.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, delay_seconds: float = 0.0
    ) -> None:
        super().__init__("independent-fault-proxy")
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        self._upstream = (upstream_host, upstream_port)
        self._delay = delay_seconds
        self._queue: deque[ProxyFault] = deque()
        self._log: list[str] = []

    @classmethod
    def in_front_of(cls, receiver: Receiver, *, delay_seconds: float = 0.0) -> FaultProxy:
        """A (not yet started) proxy to a started :class:`Receiver`."""
        return cls(receiver.host, receiver.port, delay_seconds=delay_seconds)

    def base_url_for(self, path: str = "/v1") -> str:
        """``http://127.0.0.1:PORT`` + ``path``."""
        return f"http://{HOST}:{self.port}{path}"

    def inject(self, kind: ProxyFaultKind, times: int = 1, *, delay_seconds: float = 1.0) -> None:
        """Give the next ``times`` connections fault ``kind`` (``delay_seconds`` for "delay")."""
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind not in ("reset_after_request", "blackhole", "delay"):
            raise ValueError(f"unknown proxy fault {kind!r}")
        with self._lock:
            self._queue.extend([ProxyFault(kind, delay_seconds)] * times)

    @property
    def connection_faults(self) -> list[str]:
        """Per accepted connection, in order: the fault kind applied, or ``"pass"``."""
        with self._lock:
            return list(self._log)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> None:
        with self._lock:
            fault = self._queue.popleft() if self._queue else None
            self._log.append(fault.kind if fault else "pass")
        if fault is not None and fault.kind == "reset_after_request":
            await reader.read(_CHUNK)
            _rst(writer)
            return
        if fault is not None and fault.kind == "blackhole":
            while await reader.read(_CHUNK):
                pass
            return
        delay = fault.delay_seconds if fault is not None else self._delay
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream, limit=_CHUNK)
        except OSError:
            _rst(writer)
            return
        try:
            await self._splice(reader, writer, up_reader, up_writer, delay)
        finally:
            await self._close(up_writer)

    @staticmethod
    async def _splice(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        delay: float,
    ) -> None:
        tasks = {
            asyncio.ensure_future(_pump(reader, up_writer, 0.0)),
            asyncio.ensure_future(_pump(up_reader, writer, delay)),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(not task.cancelled() and task.exception() for task in done):
                _rst(writer)
                _rst(up_writer)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
