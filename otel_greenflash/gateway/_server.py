"""One asyncio loop running OTLP/HTTP and OTLP/gRPC in front of one durable intake.

SIGTERM (or SIGINT) drains: both servers stop listening, requests already being taken finish
(their bodies may still be arriving; new ones on open connections get 503 / UNAVAILABLE, so the
client sends them elsewhere), then the intake delivers what it acknowledged; events not
delivered by the end of ``--shutdown-timeout`` stay in the spool for the next start. Requests
get at most half of the timeout (each is bounded by ``--request-timeout`` anyway); the intake
always gets at least the other half, so a stalled upload cannot use it up. A second signal
ends the process at once (acknowledged events are in the spool already).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from aiohttp import web

from ._grpc import build_server
from ._http import build_app
from ._ingest import Ingest
from ._intake import DurableIntake
from ._metrics import GatewayMetrics
from ._settings import GatewaySettings, describe, hostport, server_ssl_context

logger = logging.getLogger("otel_greenflash.gateway")

WORKERS = 16
"""Requests decoded or waiting for the spool at once (more wait for a slot, unread): the
bodies held, each at most ``--max-request-bytes`` as sent; one at a time is inflated."""
_MIN_INTAKE_SHUTDOWN_SECONDS = 1.0
_INTAKE_SHARE = 0.5
"""The share of ``--shutdown-timeout`` kept for delivering acknowledged events, whatever
requests being taken need."""
_CLOSE_SECONDS = 0.25
"""aiohttp's wait for a handler when closing its connection (then again after cancelling it):
by then the drain has waited for every request being taken."""


class ListenError(OSError):
    """A port could not be bound; the message names it."""


async def serve(
    settings: GatewaySettings, intake: DurableIntake, linking_keys: Collection[str]
) -> None:
    """Run until SIGTERM/SIGINT, then drain and shut the intake down."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for number in signals:
        loop.add_signal_handler(number, _on_signal, stop)
    ingest = Ingest(
        intake,
        GatewayMetrics(),
        workers=WORKERS,
        timeout_seconds=settings.request_timeout_seconds,
        linking_keys=linking_keys,
        llm_call_keys=intake.llm_call_keys,
    )
    app = build_app(
        ingest,
        token=settings.token,
        max_request_bytes=settings.max_request_bytes,
        readiness=intake.readiness,
        pipeline_stats=intake.stats,
        queue_stats=intake.queue_depth,
    )
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=_CLOSE_SECONDS,
        auto_decompress=False,  # bodies are inflated off the loop, bounded (see _inflate)
    )
    await runner.setup()
    grpc_server = build_server(
        ingest,
        token=settings.token,
        max_request_bytes=settings.max_request_bytes,
        workers=WORKERS,
        calls_per_peer=settings.grpc_calls_per_peer,
    )
    site: web.TCPSite | None = None
    started = time.monotonic()
    budget = settings.shutdown_timeout_seconds
    try:
        site = await _listen_http(runner, settings)
        _listen_grpc(grpc_server, settings)
        await grpc_server.start()
        logger.info("otel-greenflash gateway: %s", describe(settings))
        await stop.wait()
        logger.info("stopping: no new connections; finishing requests being taken")
        started = time.monotonic()
    finally:
        # Requests being taken get up to half of the budget (each ends by its own deadline
        # anyway); what is left, at least the other half, is for delivering.
        drain_until = started + budget * (1 - _INTAKE_SHARE)
        ingest.close()
        if site is not None:
            await site.stop()  # the listening socket only: open connections stay
        grpc_stopped = asyncio.ensure_future(grpc_server.stop(_until(drain_until)))
        if not await ingest.finished(_until(drain_until) - 2 * _CLOSE_SECONDS):
            logger.warning("requests still being taken at the end of the drain: closing them")
        await runner.cleanup()  # idle connections; handlers still running are cancelled
        await grpc_stopped
        await ingest.work_done(_until(drain_until))
    left = max(_MIN_INTAKE_SHUTDOWN_SECONDS, budget * _INTAKE_SHARE, _until(started + budget))
    logger.info("delivering acknowledged events (up to %.1f s)", left)
    await asyncio.to_thread(intake.shutdown, int(left * 1000))
    for number in signals:
        loop.remove_signal_handler(number)
    logger.info("stopped")


def _until(moment: float) -> float:
    return max(0.0, moment - time.monotonic())


def _on_signal(stop: asyncio.Event) -> None:
    if stop.is_set():
        logger.warning("second signal: ending now; acknowledged events stay in the spool")
        sys.stderr.flush()
        os._exit(1)
    stop.set()


async def _listen_http(runner: web.AppRunner, settings: GatewaySettings) -> web.TCPSite:
    context = server_ssl_context(settings.tls) if settings.tls else None
    site = web.TCPSite(runner, settings.host, settings.http_port, ssl_context=context)
    try:
        await site.start()
    except OSError as error:
        raise ListenError(
            f"cannot listen for OTLP/HTTP on {hostport(settings.host, settings.http_port)}: "
            f"{error.strerror or error}"
        ) from None
    return site


def _listen_grpc(server: Any, settings: GatewaySettings) -> None:
    address = hostport(settings.host, settings.grpc_port)
    try:
        if settings.tls:
            cert, key = settings.tls
            credentials = grpc.ssl_server_credentials(
                [(Path(key).read_bytes(), Path(cert).read_bytes())]
            )
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ListenError(
            f"cannot listen for OTLP/gRPC on {address}: the port is in use or not available"
        )
