"""OTLP/gRPC on ``grpc.aio``: ``TraceService/Export`` and ``LogsService/Export``.

Status codes follow the OTLP specification: INVALID_ARGUMENT for a malformed message,
RESOURCE_EXHAUSTED above the size limit (gRPC's own receive limit), UNAUTHENTICATED without the
bearer token, UNAVAILABLE with a ``RetryInfo`` delay when the events cannot be made durable now.
Messages arrive as bytes and are parsed on the ingest pool, not on the event loop.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
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

from ._decode import MalformedRequestError
from ._ingest import Accepted, Ingest, UnavailableError
from ._status import RETRY_INFO_TYPE_URL, any_message, retry_info, status_protobuf

PROTOCOL = "grpc"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
_UNAVAILABLE = 14


def build_server(
    ingest: Ingest, *, token: str | None, max_request_bytes: int
) -> Any:  # grpc.aio.Server
    """A ``grpc.aio`` server with both services registered; ports are added by the caller."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    expected = f"bearer {token}" if token else None

    async def traces(body: bytes, context: Any) -> ExportTraceServiceResponse:
        accepted = await _take(ingest, "traces", body, context, expected)
        response = ExportTraceServiceResponse()
        if accepted.invalid:
            response.partial_success.rejected_spans = min(accepted.invalid, accepted.items)
            response.partial_success.error_message = accepted.partial_message
        return response

    async def logs(body: bytes, context: Any) -> ExportLogsServiceResponse:
        accepted = await _take(ingest, "logs", body, context, expected)
        response = ExportLogsServiceResponse()
        if accepted.invalid:
            response.partial_success.rejected_log_records = min(accepted.invalid, accepted.items)
            response.partial_success.error_message = accepted.partial_message
        return response

    server.add_generic_rpc_handlers(
        (
            _service(TRACE_SERVICE, traces, ExportTraceServiceResponse),
            _service(LOGS_SERVICE, logs, ExportLogsServiceResponse),
        )
    )
    return server


def _service(name: str, behavior: Callable[[bytes, Any], Awaitable[Any]], response: Any) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=None, response_serializer=response.SerializeToString
    )
    return grpc.method_handlers_generic_handler(name, {"Export": handler})


async def _take(
    ingest: Ingest, signal: str, body: bytes, context: Any, expected: str | None
) -> Accepted:
    metrics = ingest.metrics
    if expected is not None and not _authorized(context, expected):
        metrics.request(PROTOCOL, signal, "unauthenticated")
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
    remaining = context.time_remaining()
    try:
        async with ingest.slots:  # as over HTTP: a bounded number of requests at once
            accepted = await _ingest(ingest, signal, body, remaining)
    except MalformedRequestError as error:
        metrics.request(PROTOCOL, signal, "malformed")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        raise  # not reached: abort raises
    except UnavailableError as error:
        metrics.request(PROTOCOL, signal, "unavailable")
        await context.abort(grpc.StatusCode.UNAVAILABLE, error.reason, _retry_metadata(error))
        raise  # not reached
    metrics.request(PROTOCOL, signal, "partial" if accepted.invalid else "ok")
    metrics.accepted(signal, accepted.items, accepted.events, accepted.invalid)
    return accepted


async def _ingest(ingest: Ingest, signal: str, body: bytes, remaining: float | None) -> Accepted:
    if signal == "traces":
        return await ingest.traces(lambda: _parse(ExportTraceServiceRequest(), body), remaining)
    return await ingest.logs(lambda: _parse(ExportLogsServiceRequest(), body), remaining)


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
