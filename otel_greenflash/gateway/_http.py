"""OTLP/HTTP on ``aiohttp.web``: ``POST /v1/traces`` and ``/v1/logs``, plus operations endpoints.

Answers follow the OTLP specification: 200 with an ``Export*ServiceResponse`` (in the request's
encoding; ``partial_success`` when business events were invalid), 400 for a malformed body,
413 above the size limit (as sent, or once inflated from ``gzip``, ``x-gzip`` or ``deflate``),
415 for an unknown content type or encoding (``zstd``, ``br``, stacked codings), 401 without
the bearer token, 503 with ``Retry-After`` when the events cannot be made durable now, no
worker frees up, or the body does not arrive within ``--request-timeout``. Error bodies are a
``google.rpc.Status``. Only ``GET /healthz`` needs no token; ``/readyz`` answers 503 while the
spool is full or unusable.

Memory for bodies: a request reads its body (as sent, at most the limit L) only once it holds
one of the ``workers`` slots. Its decoding on the pool (one request at a time, see
:class:`~._ingest.Ingest`) hands the body to one inflating thread (:mod:`._inflate`), never the
event loop. So at most ``workers`` times L bytes as sent, and one inflated body (L, plus a copy
of it for a moment, or L + one chunk for a body that turns out too large) exist at once,
however many bombs arrive.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from aiohttp import web
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from ._decode import (
    JSON,
    PROTOBUF,
    MalformedRequestError,
    RequestTooLargeError,
    parse_logs,
    parse_traces,
)
from ._inflate import IDENTITY, UnsupportedEncodingError, content_coding, inflate
from ._ingest import BUSY_RETRY_SECONDS, Accepted, Ingest, Payload, UnavailableError
from ._status import status_json, status_protobuf

PROTOCOL = "http"
_INVALID_ARGUMENT, _RESOURCE_EXHAUSTED, _UNAUTHENTICATED, _UNAVAILABLE = 3, 8, 16, 14

StatusSource = Callable[[], tuple[bool, str]]
StatsSource = Callable[[], Mapping[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    ingest: Ingest,
    *,
    token: str | None,
    max_request_bytes: int,
    readiness: StatusSource,
    pipeline_stats: StatsSource,
    queue_stats: StatsSource,
) -> web.Application:
    """The OTLP/HTTP application; ``readiness``, ``pipeline_stats`` and ``queue_stats`` (queue
    depth and capacities) are read per request."""
    metrics = ingest.metrics
    # One thread inflates every body: the C library keeps memory a thread freed for that
    # thread's next use, so one thread keeps one inflated body's worth at most (inflating on
    # the pool, each of its ``workers`` threads could keep as much: 8 bombs, 0.5 GB).
    inflater = ThreadPoolExecutor(1, thread_name_prefix="greenflash-inflate")

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path == "/healthz" or _has_token(request, token):
            return await handler(request)
        if request.path in ("/v1/traces", "/v1/logs"):
            metrics.request(PROTOCOL, request.path[4:], "unauthenticated")
        answer = _error(request, 401, _UNAUTHENTICATED, "missing or wrong bearer token")
        answer.headers["WWW-Authenticate"] = 'Bearer realm="otel-greenflash gateway"'
        return answer

    async def export(request: web.Request, signal: str) -> web.StreamResponse:
        outcome, answer = await _export(request, signal, ingest, max_request_bytes, inflater)
        metrics.request(PROTOCOL, signal, outcome)
        return answer

    async def traces(request: web.Request) -> web.StreamResponse:
        return await export(request, "traces")

    async def logs(request: web.Request) -> web.StreamResponse:
        return await export(request, "logs")

    async def healthz(request: web.Request) -> web.StreamResponse:
        alive, reason = ingest.liveness()  # 503 only when a restart is the way out
        if alive:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failed", "reason": reason}, status=503)

    async def readyz(request: web.Request) -> web.StreamResponse:
        ready, reason = _readiness(ingest, readiness)
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def stats(request: web.Request) -> web.StreamResponse:
        ready = _readiness(ingest, readiness)
        return web.json_response(metrics.snapshot(pipeline_stats(), ready, queue_stats()))

    async def prometheus(request: web.Request) -> web.StreamResponse:
        ready = _readiness(ingest, readiness)
        text = metrics.prometheus(pipeline_stats(), ready, queue_stats())
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    # aiohttp's own body limit stays above ours, so that _export answers 413 itself.
    app = web.Application(middlewares=[authenticate], client_max_size=max_request_bytes + 1)
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/logs", logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", prometheus)

    async def stop_inflating(app: web.Application) -> None:
        inflater.shutdown(wait=False)  # after the drain: no request is being taken

    app.on_cleanup.append(stop_inflating)
    return app


async def _export(
    request: web.Request, signal: str, ingest: Ingest, limit: int, inflater: Executor
) -> tuple[str, web.StreamResponse]:
    """Take one export request; return the outcome's name and the answer."""
    content_type = request.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in (PROTOBUF, JSON):
        message = (
            f"unsupported Content-Type {media_type or '(none)'!r}; allowed: {PROTOBUF}, {JSON}"
        )
        return "malformed", _error(request, 415, _INVALID_ARGUMENT, message)
    try:
        coding = content_coding(request.headers.get("Content-Encoding", ""))
    except UnsupportedEncodingError as error:
        return "malformed", _error(request, 415, _INVALID_ARGUMENT, str(error))
    if request.content_length is not None and request.content_length > limit:
        return "too_large", _too_large(request, limit)
    deadline = ingest.deadline()
    try:
        async with ingest.request(deadline):
            payload = Payload(await _read(request, limit, deadline, ingest.timeout_seconds))
            if len(payload) > limit:
                return "too_large", _too_large(request, limit)

            def body() -> bytes:  # on the pool, under Ingest's one-at-a-time decoding
                if coding == IDENTITY:
                    return payload.take()
                try:
                    return inflater.submit(inflate, payload.take(), coding, limit).result()
                except (MalformedRequestError, RequestTooLargeError) as error:
                    # Without the inflating frames, which hold the body until garbage collection.
                    raise error.with_traceback(None) from None

            if signal == "traces":
                accepted = await ingest.traces(lambda: parse_traces(body(), media_type), deadline)
            else:
                accepted = await ingest.logs(lambda: parse_logs(body(), media_type), deadline)
    except RequestTooLargeError:
        return "too_large", _too_large(request, limit)
    except MalformedRequestError as error:
        return "malformed", _error(request, 400, _INVALID_ARGUMENT, str(error))
    except UnavailableError as error:
        answer = _error(request, 503, _UNAVAILABLE, error.reason)
        answer.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_seconds)))
        if isinstance(error, _BodyTimeoutError):
            answer.force_close()  # the rest of the body must not be read as a next request
        return "unavailable", answer
    ingest.metrics.accepted(signal, accepted.items, accepted.events, accepted.invalid)
    return ("partial" if accepted.invalid else "ok"), _success(media_type, signal, accepted)


class _BodyTimeoutError(UnavailableError):
    """The body did not arrive by the request's deadline."""


async def _read(request: web.Request, limit: int, deadline: float, timeout: float) -> bytes:
    """The whole body as sent (the server does not inflate it) by ``deadline``
    (``time.monotonic()``)."""
    try:
        return await asyncio.wait_for(request.read(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise _BodyTimeoutError(
            f"the request body did not arrive within {timeout:g} s", BUSY_RETRY_SECONDS
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLargeError(limit) from None
    except Exception as error:  # aiohttp's PayloadEncodingError (bad chunked encoding), …
        raise MalformedRequestError(
            f"the body could not be read ({type(error).__name__})"
        ) from None


def _success(media_type: str, signal: str, accepted: Accepted) -> web.Response:
    response: Message
    if signal == "traces":
        response = ExportTraceServiceResponse()
        if accepted.invalid:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=accepted.rejected,
                    error_message=accepted.partial_message,
                )
            )
    else:
        response = ExportLogsServiceResponse()
        if accepted.invalid:
            response.partial_success.CopyFrom(
                ExportLogsPartialSuccess(
                    rejected_log_records=accepted.rejected,
                    error_message=accepted.partial_message,
                )
            )
    if media_type == JSON:
        # Exactly ``application/json``, no charset: the Collector's OTLP/HTTP exporter reads a
        # partial success only under the bare media type (JSON is UTF-8 anyway).
        body = json.dumps(json_format.MessageToDict(response)).encode("utf-8")
        return web.Response(body=body, content_type=JSON)
    return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)


def _too_large(request: web.Request, limit: int) -> web.Response:
    message = f"the request body is larger than the gateway's limit of {limit} bytes"
    return _error(request, 413, _RESOURCE_EXHAUSTED, message)


def _error(request: web.Request, status: int, code: int, message: str) -> web.Response:
    """A ``google.rpc.Status`` body, as JSON for JSON requests and protobuf otherwise."""
    if request.headers.get("Content-Type", "").lower().startswith(JSON):
        return web.Response(status=status, body=status_json(code, message), content_type=JSON)
    return web.Response(status=status, body=status_protobuf(code, message), content_type=PROTOBUF)


def _has_token(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(errors="replace"), token.encode()
    )


def _readiness(ingest: Ingest, readiness: StatusSource) -> tuple[bool, str]:
    if ingest.closing:
        return False, "shutting down"
    return readiness()
