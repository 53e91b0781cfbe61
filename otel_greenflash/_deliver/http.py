"""Async delivery transports: where the delivery loop's requests go, and the pieces they share.

The Events API transport (:mod:`.events_api`) needs httpx and aiohttp, which take a quarter of a
second to import: it is imported when the first delivery engine is built (``transport_for``,
on the thread constructing the processor), never at ``import otel_greenflash``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from opentelemetry import context as otel_context

from .._config import GreenflashConfig
from .._event import Endpoint
from .executor import DaemonExecutor
from .transport import (
    UNSUPPORTED_ENDPOINT,
    ConsoleTransport,
    SendOutcome,
    Transport,
)

if TYPE_CHECKING:
    import ssl

# The SDK's own exporters set this key so HTTP-client instrumentations skip their requests.
_SUPPRESS_INSTRUMENTATION_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY


class _SharedTls:
    """The process's one TLS context, built on first use under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.context: ssl.SSLContext | None = None


_tls = _SharedTls()


def after_fork_in_child() -> None:
    """In a forked child: a new lock (see :mod:`.._lifecycle.fork`); a thread of the parent
    may have held the old one at the fork."""
    _tls.lock = threading.Lock()


def suppress_instrumentation() -> None:
    """Set OpenTelemetry's suppress-instrumentation flag in the current context (as the SDK's
    own exporters do), so HTTP-client instrumentations do not trace our requests."""
    otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for the process: building one loads the CA bundle (≈ 30 ms of CPU)."""
    with _tls.lock:
        if _tls.context is None:
            import httpx  # first delivery engine only (see the module)

            _tls.context = httpx.create_ssl_context()
        return _tls.context


class AsyncTransport(Protocol):
    """Where the delivery loop sends bodies, each to its endpoint. ``send`` never raises and
    never outlives ``timeout_seconds`` (connect, upload and the whole response together)."""

    async def send(
        self, body: bytes, timeout_seconds: float, endpoint: Endpoint = Endpoint.EVENTS
    ) -> SendOutcome: ...

    async def aclose(self) -> None: ...


class ThreadedTransport:
    """Runs a blocking :class:`~otel_greenflash._deliver.transport.Transport` (e.g. the dry-run
    console or ``testing.MemoryTransport``) on a small thread pool, off the delivery loop."""

    def __init__(self, transport: Transport, threads: int) -> None:
        self._transport = transport
        self._executor = DaemonExecutor(threads, "otel-greenflash-transport", prestart=True)

    async def send(
        self, body: bytes, timeout_seconds: float, endpoint: Endpoint = Endpoint.EVENTS
    ) -> SendOutcome:
        import asyncio  # loaded with the engine's loop: no import runs on this thread

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, self._send, body, timeout_seconds, endpoint
            )
        except Exception as exc:
            return SendOutcome(None, type(exc).__name__)

    def _send(self, body: bytes, timeout_seconds: float, endpoint: Endpoint) -> SendOutcome:
        send_to: Callable[[str, bytes, float], object] | None = None
        if endpoint is not Endpoint.EVENTS:
            send_to = getattr(self._transport, "send_to", None)
            if send_to is None:
                return SendOutcome(None, UNSUPPORTED_ENDPOINT, unsent=True)
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            if send_to is None:
                return self._transport.send(body, timeout_seconds)
            outcome = send_to(endpoint.value, body, timeout_seconds)
            if not isinstance(outcome, SendOutcome):
                raise TypeError("send_to must return a SendOutcome")
            return outcome
        finally:
            otel_context.detach(token)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)
        with contextlib.suppress(Exception):
            self._transport.close()


def transport_for(config: GreenflashConfig, custom: Transport | None = None) -> AsyncTransport:
    """Where events go: a given blocking transport, stdout in dry-run mode, else the API."""
    if custom is not None:
        return ThreadedTransport(custom, min(config.max_concurrency, 16))
    if config.dry_run:
        return ThreadedTransport(ConsoleTransport(), 1)
    from .events_api import EventsApiTransport  # imported here, not with the package

    return EventsApiTransport(config)
