"""OTLP/gRPC on ``grpc.aio``: ``TraceService/Export`` and ``LogsService/Export``.

Status codes follow the OTLP specification: INVALID_ARGUMENT for a malformed message,
RESOURCE_EXHAUSTED above the size limit (as sent: gRPC's own receive limit; once inflated: the
handler's, as over HTTP, see :class:`_Message`), UNAUTHENTICATED without the
bearer token, UNAVAILABLE with a ``RetryInfo`` delay when the events cannot be made durable now
(or no worker frees up in time). Messages arrive as bytes and are parsed on the ingest pool,
not on the event loop.

``Export`` is unary, but it is served as a client-streaming method (the same on the wire): the
handler then runs before the request message is received, takes a worker slot, and only then
reads the message, so requests waiting for a slot do not hold their messages in memory (as over
HTTP, where the body is read with a slot). The calls held at once are bounded by the handler,
in all and per peer (:mod:`._grpc_budget`), not by gRPC's ``maximum_concurrent_rpcs``: a call
over a bound is answered UNAVAILABLE with a retry delay, as the spec asks of an overloaded
server, where gRPC would answer RESOURCE_EXHAUSTED without one (permanent for OTLP clients).
A call whose message does not arrive by its deadline is answered UNAVAILABLE and frees its
slot; one peer holds at most half the workers, so its stalled calls leave the rest to others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ._decode import MalformedRequestError, RequestTooLargeError
from ._grpc_budget import CallBudget, peer_host
from ._inflate import DEFLATE, GZIP, IDENTITY, _is_zlib_header, inflate
from ._ingest import (
    BUSY_RETRY_SECONDS,
    Accepted,
    Ingest,
    Payload,
    UnavailableError,
    _acquire,
)
from ._settings import DEFAULT_GRPC_CALLS_PER_PEER
from ._status import RETRY_INFO_TYPE_URL, any_message, retry_info, status_protobuf

PROTOCOL = "grpc"
LOOKAHEAD_BYTES = 1024 * 1024
"""What gRPC receives of a call's message before the handler reads it (HTTP/2 flow control):
a call waiting for a worker holds this much at most; 1 MiB per round trip is 20 MB/s per call
on a 50 ms link."""
CONCURRENT_RPCS_PER_WORKER = 16
"""Calls at once per worker slot (taken or waiting for one): 256 with 16 workers, so about
256 MiB of read-ahead at most; more are answered UNAVAILABLE with a retry delay. Far above
what senders open (the Collector's exporters use 10 consumers each)."""
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
_UNAVAILABLE = 14
_GZIP_MAGIC = b"\x1f\x8b"
"""How a gzip stream starts; never how a protobuf message does (0x1f is wire type 7)."""


def build_server(
    ingest: Ingest,
    *,
    token: str | None,
    max_request_bytes: int,
    workers: int,
    calls_per_peer: int = DEFAULT_GRPC_CALLS_PER_PEER,
) -> Any:  # grpc.aio.Server
    """A ``grpc.aio`` server with both services registered; ports are added by the caller."""
    server = grpc.aio.server(
        options=[
            # The limit then holds for the message as sent; the handler inflates it, bounded.
            ("grpc.max_receive_message_length", max_request_bytes),
            # gRPC would inflate each call's message on the thread that reads it, up to the
            # limit: 8 bombs at once took 3.3 x the limit. The handler gets it compressed.
            ("grpc.per_message_decompression", 0),
            ("grpc.so_reuseport", 0),
            # Receive at most this much of a message before the handler reads it (gRPC's
            # automatic window would take whole messages of calls waiting for a worker).
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", LOOKAHEAD_BYTES),
        ],
    )
    expected = f"bearer {token}" if token else None
    # One thread inflates every compressed message, one at a time (as over HTTP, see ._http).
    inflater = ThreadPoolExecutor(1, thread_name_prefix="greenflash-grpc-inflate")
    budget = CallBudget(
        total=CONCURRENT_RPCS_PER_WORKER * workers, per_peer=calls_per_peer, workers=workers
    )

    async def traces(messages: Any, context: Any) -> ExportTraceServiceResponse:
        accepted = await _take(
            ingest, budget, inflater, "traces", messages, context, expected, max_request_bytes
        )
        response = ExportTraceServiceResponse()
        if accepted.invalid:
            response.partial_success.rejected_spans = accepted.rejected
            response.partial_success.error_message = accepted.partial_message
        return response

    async def logs(messages: Any, context: Any) -> ExportLogsServiceResponse:
        accepted = await _take(
            ingest, budget, inflater, "logs", messages, context, expected, max_request_bytes
        )
        response = ExportLogsServiceResponse()
        if accepted.invalid:
            response.partial_success.rejected_log_records = accepted.rejected
            response.partial_success.error_message = accepted.partial_message
        return response

    server.add_generic_rpc_handlers(
        (
            _service(TRACE_SERVICE, traces, ExportTraceServiceResponse),
            _service(LOGS_SERVICE, logs, ExportLogsServiceResponse),
        )
    )
    return server


def _service(name: str, behavior: Callable[[Any, Any], Awaitable[Any]], response: Any) -> Any:
    handler = grpc.stream_unary_rpc_method_handler(
        behavior, request_deserializer=None, response_serializer=response.SerializeToString
    )
    return grpc.method_handlers_generic_handler(name, {"Export": handler})


async def _take(
    ingest: Ingest,
    budget: CallBudget,
    inflater: Executor,
    signal: str,
    messages: Any,
    context: Any,
    expected: str | None,
    limit: int,
) -> Accepted:
    metrics = ingest.metrics
    if expected is not None and not _authorized(context, expected):
        metrics.request(PROTOCOL, signal, "unauthenticated")
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
    peer = peer_host(context.peer() or "")
    refusal = budget.enter(peer)
    if refusal is not None:
        metrics.request(PROTOCOL, signal, "over_budget")
        over = UnavailableError(refusal, BUSY_RETRY_SECONDS)
        await context.abort(grpc.StatusCode.UNAVAILABLE, refusal, _retry_metadata(over))
    try:
        deadline = ingest.deadline(context.time_remaining())
        # The peer's share of the workers, then a worker; as over HTTP, before the message.
        async with _peer_slot(budget, peer, deadline), ingest.request(deadline):
            message = await _message(messages, deadline, ingest.timeout_seconds, limit)
            payload = Payload(message)
            del message  # the payload holds the only reference (see Payload)
            accepted = await _ingest(ingest, signal, _Message(payload, inflater, limit), deadline)
    except RequestTooLargeError as error:
        metrics.request(PROTOCOL, signal, "too_large")
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        raise  # not reached: abort raises
    except MalformedRequestError as error:
        metrics.request(PROTOCOL, signal, "malformed")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        raise  # not reached
    except UnavailableError as error:
        metrics.request(PROTOCOL, signal, "unavailable")
        await context.abort(grpc.StatusCode.UNAVAILABLE, error.reason, _retry_metadata(error))
        raise  # not reached
    finally:
        budget.leave(peer)
    metrics.request(PROTOCOL, signal, "partial" if accepted.invalid else "ok")
    metrics.accepted(signal, accepted.items, accepted.events, accepted.invalid)
    return accepted


@contextlib.asynccontextmanager
async def _peer_slot(budget: CallBudget, peer: str, deadline: float) -> AsyncIterator[None]:
    """One of the worker slots ``peer`` may hold; UnavailableError if none frees up by
    ``deadline`` (its other calls hold them all)."""
    slots = budget.slots(peer)
    if not await _acquire(slots, deadline):
        raise UnavailableError(
            f"the gateway is busy: this peer's calls hold {budget.slots_per_peer} workers",
            BUSY_RETRY_SECONDS,
        )
    try:
        yield
    finally:
        slots.release()


async def _message(messages: Any, deadline: float, timeout: float, limit: int) -> bytes:
    """The request message (the first; a unary client sends exactly one), by ``deadline``.

    None arrives when gRPC refused it above ``limit`` (and answered RESOURCE_EXHAUSTED
    itself), or from a client that sent none (not a unary client): RequestTooLargeError."""

    async def first() -> bytes:
        async for message in messages:
            return bytes(message)
        raise _NoMessageError(limit)

    try:
        return await asyncio.wait_for(first(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise UnavailableError(
            f"the request message did not arrive within {timeout:g} s", BUSY_RETRY_SECONDS
        ) from None


class _NoMessageError(RequestTooLargeError):
    """No message: gRPC refused it above the limit, or the client sent none."""

    def __str__(self) -> str:
        return f"{super().__str__()} (or none was sent)"


class _Message:
    """A call's message as received: compressed (``grpc-encoding`` gzip or deflate; gRPC's
    own inflating is off) or not. :meth:`body` inflates it on ``inflater``, up to ``limit``.

    gRPC does not tell the handler which: the bytes do. A gzip stream starts 1f 8b, a zlib
    one (gRPC's deflate) with a checked header; an OTLP export request with 0a (field 1)."""

    __slots__ = ("_inflater", "_limit", "_payload")

    def __init__(self, payload: Payload, inflater: Executor, limit: int) -> None:
        self._payload = payload
        self._inflater = inflater
        self._limit = limit

    def body(self) -> bytes:
        """The message inflated (once: it is handed over, see Payload); on the ingest pool."""
        data = self._payload.take()
        coding = _coding(data)
        if coding == IDENTITY:
            return data
        try:
            return self._inflater.submit(inflate, data, coding, self._limit).result()
        except (MalformedRequestError, RequestTooLargeError) as error:
            # Without the inflating frames, which hold the message until garbage collection.
            raise error.with_traceback(None) from None


def _coding(message: bytes) -> str:
    if message.startswith(_GZIP_MAGIC):
        return GZIP
    return DEFLATE if _is_zlib_header(message) else IDENTITY


async def _ingest(ingest: Ingest, signal: str, message: _Message, deadline: float) -> Accepted:
    if signal == "traces":
        return await ingest.traces(
            lambda: _parse(ExportTraceServiceRequest(), message.body()), deadline
        )
    return await ingest.logs(lambda: _parse(ExportLogsServiceRequest(), message.body()), deadline)


def _parse(message: Any, body: bytes) -> Any:
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise MalformedRequestError(
            f"the message is not a valid protobuf {type(message).__name__}"
        ) from None
    return message


def _authorized(context: Any, expected: str) -> bool:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, given = value.partition(" ")
            candidate = f"{scheme.lower()} {given.strip()}"
            return hmac.compare_digest(candidate.encode(errors="replace"), expected.encode())
    return False


def _retry_metadata(error: UnavailableError) -> tuple[tuple[str, bytes], ...]:
    """The delay as the Collector reads it (``grpc-status-details-bin``) and as the Python
    SDK's exporter reads it (``google.rpc.retryinfo-bin``)."""
    info = retry_info(error.retry_after_seconds)
    details = status_protobuf(_UNAVAILABLE, error.reason, (any_message(RETRY_INFO_TYPE_URL, info),))
    return (("grpc-status-details-bin", details), ("google.rpc.retryinfo-bin", info))
