"""A fast loopback Events API receiver, in its own process, so delivery benchmarks measure the
client and not the server (stdlib ``asyncio.Protocol``, one thread, HTTP/1.1 keep-alive).

``python -m benchmarks._receiver --latency-ms 20 [--fault-mix SPEC --seed N] [--port P]``

Prints ``base_url api_key`` on its first stdout line, then serves until stdin reaches end of file
or it gets SIGTERM/SIGINT. ``base_url`` is ``http://127.0.0.1:PORT/api/v1``, shaped like the real
default, so clients ``POST {base_url}/events``.

Endpoints:

- ``POST …/events`` (any path ending in ``/events``): after ``latency_ms`` (``call_later``, never
  blocking), 200 ``{"success":true,"eventId":"…"}``, or 401 without ``Authorization: Bearer
  <key>``. The ``insertId`` is read from the body with a regex (the body is not otherwise parsed
  or validated); a repeated ``insertId`` is counted as a duplicate and answered with the first
  ``eventId``. A request without ``insertId`` always counts as accepted.
- ``POST …/messages`` and ``POST …/ratings``: the same latency, faults and key check, then 200
  ``{"success":true}``; counted apart (``messages_requests``, ``messages``: the
  ``externalMessageId`` keys in accepted bodies, ``ratings``), never as events.
- ``GET /stats`` (any path ending in ``/stats``): ``{"accepted", "duplicates", "requests",
  "peak_concurrency"}`` plus ``unauthorized``, ``faults`` (per kind), ``in_flight``,
  ``connections``, ``cpu_seconds`` (user + system CPU of this process), ``messages_requests``,
  ``messages``, ``ratings`` and ``last_received`` (``time.monotonic()``, system-wide on Linux,
  when the last event request was read: latency benchmarks compare it with the sender's).
- ``POST /reset`` (any path ending in ``/reset``): zeroes the counters, forgets the insertIds and
  re-seeds the fault draw, so every run after a reset sees the same fault sequence.

Faults (``--fault-mix reset=0.06,hang=0.06,drip=0.06,429=0.06,503=0.06``: shares of POST
requests, drawn per request in arrival order from ``random.Random(seed)``): ``429`` answers with
``Retry-After: 1``; ``503`` answers 503; ``hang`` never answers and keeps the socket; ``drip``
sends 503 headers announcing a 64-byte body, then one byte every 0.5 s (32 s in all: a per-read
timeout never fires); ``reset`` closes the connection with an RST (``SO_LINGER`` 0) without
answering. Faults apply after the latency, like answers. A faulted request is never accepted.

Each connection handles one request at a time, in order (pipelined requests wait in its buffer),
so responses always come back in request order.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import re
import resource
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from contextlib import suppress
from typing import Final

FAULT_KINDS: Final = ("reset", "hang", "drip", "429", "503")
DRIP_BODY_BYTES: Final = 64
DRIP_INTERVAL_SECONDS: Final = 0.5
MAX_HEAD_BYTES: Final = 64 * 1024

_INSERT_ID = re.compile(rb'"insertId"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CONTENT_LENGTH = b"\r\ncontent-length:"
_AUTHORIZATION = b"\r\nauthorization:"
_JSON = b"Content-Type: application/json\r\n"
_OK_BODY = b'{"success":true,"eventId":"00000000-0000-4000-8000-%012x"}'
_OK = b"HTTP/1.1 200 OK\r\n" + _JSON + b"Content-Length: %d\r\n\r\n" % len(_OK_BODY % 0) + _OK_BODY


def _response(status: str, body: bytes, extra: bytes = b"", close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %s\r\n%s%sContent-Length: %d\r\n%s\r\n%s" % (
        status.encode(),
        _JSON,
        extra,
        len(body),
        connection,
        body,
    )


_UNAUTHORIZED = _response("401 Unauthorized", b'{"success":false,"error":"invalid API key"}')
_RATE_LIMITED = _response(
    "429 Too Many Requests", b'{"success":false,"error":"rate limited"}', b"Retry-After: 1\r\n"
)
_UNAVAILABLE = _response("503 Service Unavailable", b'{"success":false,"error":"unavailable"}')
_NOT_FOUND = _response("404 Not Found", b'{"success":false,"error":"not found"}')
_RESET_DONE = _response("200 OK", b'{"success":true}')
_OTHER_OK = _RESET_DONE
_MESSAGE_ID_KEY = b'"externalMessageId"'
_OTHER_ENDPOINTS = (b"/messages", b"/ratings")
_BAD_REQUEST = _response("400 Bad Request", b'{"success":false,"error":"bad request"}', close=True)
_NOT_IMPLEMENTED = _response(
    "501 Not Implemented", b'{"success":false,"error":"no chunked bodies"}', close=True
)
_DRIP_HEAD = b"HTTP/1.1 503 Service Unavailable\r\n%sContent-Length: %d\r\n\r\n" % (
    _JSON,
    DRIP_BODY_BYTES,
)
_DRIP_BODY = b'{"success":false,"error":"slow"}'.ljust(DRIP_BODY_BYTES)
_LINGER_ZERO = struct.pack("ii", 1, 0)

# What happens to one event request once its latency has passed.
_ACCEPT, _REJECT = "accept", "401"


def parse_fault_mix(spec: str | None) -> list[tuple[float, str]]:
    """``"reset=0.06,429=0.1"`` → cumulative thresholds ``[(0.06, "reset"), (0.16, "429")]``."""
    thresholds: list[tuple[float, str]] = []
    total = 0.0
    for item in (spec or "").replace(" ", "").split(","):
        if not item or item == "none":
            continue
        kind, _, share_text = item.partition("=")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}: use {', '.join(FAULT_KINDS)}")
        share = float(share_text)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share of {kind} must be in [0, 1], not {share}")
        total += share
        thresholds.append((total, kind))
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault shares add up to {total} > 1")
    return thresholds


class Receiver:
    """Counters and settings shared by every connection (one event-loop thread: no locks)."""

    def __init__(
        self, api_key: str, latency_seconds: float, fault_mix: str | None, seed: int
    ) -> None:
        self.api_key = api_key
        self.expected_authorization = b"Bearer " + api_key.encode()
        self.latency_seconds = latency_seconds
        self.faults = parse_fault_mix(fault_mix)
        self.seed = seed
        self.connections: set[_Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._random = random.Random(seed)
        self._event_numbers: dict[bytes, int] = {}
        self._next_event = 0
        self.accepted = 0
        self.duplicates = 0
        self.requests = 0
        self.unauthorized = 0
        self.fault_counts = dict.fromkeys(FAULT_KINDS, 0)
        self.in_flight = 0
        self.peak_concurrency = 0
        self.messages_requests = 0
        self.messages = 0
        self.ratings = 0
        self.last_received = 0.0
        """``time.monotonic()`` (system-wide on Linux) when the last event request was read."""

    def reset(self) -> None:
        self._random = random.Random(self.seed)
        self._event_numbers.clear()
        self.accepted = self.duplicates = self.requests = self.unauthorized = 0
        self.messages_requests = self.messages = self.ratings = 0
        self.fault_counts = dict.fromkeys(FAULT_KINDS, 0)
        self.peak_concurrency = self.in_flight

    def draw_fault(self) -> str | None:
        if not self.faults:
            return None
        draw = self._random.random()
        for threshold, kind in self.faults:
            if draw < threshold:
                self.fault_counts[kind] += 1
                return kind
        return None

    def accept(self, insert_id: bytes | None) -> bytes:
        """Counts one accepted event; returns the whole 200 response."""
        if insert_id is None:
            number = self._next_event
            self._next_event += 1
            self.accepted += 1
        else:
            known = self._event_numbers.get(insert_id)
            if known is None:
                number = self._next_event
                self._next_event += 1
                self._event_numbers[insert_id] = number
                self.accepted += 1
            else:
                number = known
                self.duplicates += 1
        return _OK % number

    def accept_other(self, endpoint: bytes, messages: int) -> bytes:
        """Counts one accepted ``/messages`` (with its ``messages``) or ``/ratings`` request."""
        if endpoint == b"/messages":
            self.messages_requests += 1
            self.messages += messages
        else:
            self.ratings += 1
        return _OTHER_OK

    def stats(self) -> bytes:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        body = json.dumps(
            {
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "requests": self.requests,
                "peak_concurrency": self.peak_concurrency,
                "unauthorized": self.unauthorized,
                "faults": self.fault_counts,
                "in_flight": self.in_flight,
                "connections": len(self.connections),
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "messages_requests": self.messages_requests,
                "messages": self.messages,
                "ratings": self.ratings,
                "last_received": self.last_received,
            }
        ).encode()
        return _response("200 OK", body)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parses requests from its buffer, one at a time."""

    __slots__ = ("_buffer", "_busy", "_closed", "_in_flight", "_other", "_receiver", "_transport")

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._busy = False  # a request is waiting for its answer: parse nothing further
        self._closed = False
        self._in_flight = False  # this connection's request counts in receiver.in_flight
        self._other: tuple[bytes, int] | None = None
        """A ``/messages`` or ``/ratings`` request is being answered: its endpoint's path
        suffix and message count; None for an event request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._receiver.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._busy = True
        self._buffer = b""
        self._leave()
        self._receiver.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        if not self._busy:
            self._process()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- parsing -----------------------------------------------------------------------------

    def _process(self) -> None:
        """Answers every complete request in the buffer until one must wait (latency, fault)."""
        transport = self._transport
        assert transport is not None
        receiver = self._receiver
        buffer = self._buffer
        position = 0
        out: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n\r\n", position)
            if end < 0:
                if len(buffer) - position > MAX_HEAD_BYTES:
                    self._fail(out, _BAD_REQUEST)
                    return
                break
            head = buffer[position:end]
            lower = head.lower()
            if b"\r\ntransfer-encoding:" in lower:
                self._fail(out, _NOT_IMPLEMENTED)
                return
            length = 0
            at = lower.find(_CONTENT_LENGTH)
            if at >= 0:
                line_end = lower.find(b"\r\n", at + 17)
                try:
                    length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
                except ValueError:
                    self._fail(out, _BAD_REQUEST)
                    return
            body_end = end + 4 + length
            if body_end > len(buffer):
                break  # the rest of the body is still on its way
            line_end = head.find(b"\r\n")
            parts = (head if line_end < 0 else head[:line_end]).split(b" ")
            if len(parts) != 3:
                self._fail(out, _BAD_REQUEST)
                return
            method, target, version = parts
            if b"?" in target:
                target = target.split(b"?", 1)[0]
            keep_alive = version == b"HTTP/1.1" and b"\r\nconnection: close" not in lower
            body = buffer[end + 4 : body_end]
            position = body_end

            other = target.endswith(_OTHER_ENDPOINTS)
            if method == b"POST" and (other or target.endswith(b"/events")):
                if other:
                    self._other = (target[target.rfind(b"/") :], body.count(_MESSAGE_ID_KEY))
                else:
                    self._other = None
                    receiver.requests += 1
                    receiver.last_received = time.monotonic()
                fault = receiver.draw_fault()
                if fault is None:
                    at = lower.find(_AUTHORIZATION)
                    if at >= 0:
                        line_end = head.find(b"\r\n", at + 16)
                        given = head[at + 16 : line_end if line_end >= 0 else len(head)].strip()
                    else:
                        given = b""
                    fault = _ACCEPT if given == receiver.expected_authorization else _REJECT
                found = None if other else _INSERT_ID.search(body)
                insert_id = found.group(1) if found else None
                receiver.in_flight += 1
                self._in_flight = True
                if receiver.in_flight > receiver.peak_concurrency:
                    receiver.peak_concurrency = receiver.in_flight
                if receiver.latency_seconds <= 0 and fault in (_ACCEPT, _REJECT):
                    out.append(self._finish(fault, insert_id))  # the fast path: no timer
                else:
                    self._buffer = buffer[position:]
                    self._busy = True
                    if out:
                        transport.write(b"".join(out))
                    if fault != "hang":  # a hung request keeps its connection until it closes
                        loop = receiver.loop
                        assert loop is not None
                        loop.call_later(
                            receiver.latency_seconds, self._answer, fault, insert_id, keep_alive
                        )
                    return
            elif method == b"GET" and target.endswith(b"/stats"):
                out.append(receiver.stats())
            elif method == b"POST" and target.endswith(b"/reset"):
                receiver.reset()
                out.append(_RESET_DONE)
            else:
                out.append(_NOT_FOUND)
            if not keep_alive:
                self._buffer = b""
                self._fail(out, b"")
                return
        self._buffer = buffer[position:] if position else buffer
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _fail(self, out: list[bytes], last: bytes) -> None:
        """Writes what is answered so far and ``last``, then closes the connection."""
        assert self._transport is not None
        self._busy = True
        self._transport.write(b"".join(out) + last)
        self._transport.close()

    # -- answers -----------------------------------------------------------------------------

    def _leave(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self._receiver.in_flight -= 1

    def _finish(self, outcome: str, insert_id: bytes | None) -> bytes:
        self._leave()
        if outcome == _ACCEPT:
            if self._other is not None:
                return self._receiver.accept_other(*self._other)
            return self._receiver.accept(insert_id)
        self._receiver.unauthorized += 1
        return _UNAUTHORIZED

    def _answer(self, outcome: str, insert_id: bytes | None, keep_alive: bool) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return  # the client gave up first: nothing is accepted
        if outcome == "reset":
            self._leave()
            self._closed = True
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            transport.abort()
            return
        if outcome == "drip":
            transport.write(_DRIP_HEAD)
            self._drip(0, keep_alive)
            return
        if outcome == "429":
            self._leave()
            data = _RATE_LIMITED
        elif outcome == "503":
            self._leave()
            data = _UNAVAILABLE
        else:
            data = self._finish(outcome, insert_id)
        self._resume(data, keep_alive)

    def _drip(self, sent: int, keep_alive: bool) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return
        if sent:
            transport.write(_DRIP_BODY[sent - 1 : sent])
        if sent == DRIP_BODY_BYTES:
            self._leave()
            self._resume(b"", keep_alive)
            return
        loop = self._receiver.loop
        assert loop is not None
        loop.call_later(DRIP_INTERVAL_SECONDS, self._drip, sent + 1, keep_alive)

    def _resume(self, data: bytes, keep_alive: bool) -> None:
        """Sends ``data``, then goes on with whatever requests arrived meanwhile."""
        transport = self._transport
        assert transport is not None
        if data:
            transport.write(data)
        if not keep_alive:
            self._closed = True
            transport.close()
            return
        self._busy = False
        if self._buffer:
            self._process()


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Reads stdin to its end (the parent closed it or died), then stops the server."""
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError):
        pass
    with suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(stop.set)


async def serve(arguments: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    receiver = Receiver(
        arguments.api_key or f"gf-bench-{secrets.token_hex(8)}",
        arguments.latency_ms / 1000,
        arguments.fault_mix,
        arguments.seed,
    )
    receiver.loop = loop
    server = await loop.create_server(
        lambda: _Connection(receiver),
        arguments.host,
        arguments.port,
        backlog=4096,
        reuse_address=True,
    )
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    gc.freeze()  # what exists now lives for the whole run: keep it out of collections
    print(f"http://{arguments.host}:{port}/api/v1 {receiver.api_key}", flush=True)
    await stop.wait()
    server.close()
    for connection in list(receiver.connections):
        connection.abort()  # hung requests included: do not wait for clients


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._receiver")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-mix", default=None, help="e.g. reset=0.06,hang=0.06,429=0.06")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="default: a random key")
    arguments = parser.parse_args(argv)
    try:
        parse_fault_mix(arguments.fault_mix)
    except ValueError as error:
        parser.error(str(error))
    asyncio.run(serve(arguments))


if __name__ == "__main__":
    main()
