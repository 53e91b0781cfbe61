"""Async HTTP to the Events API: one POST per event through httpx's transport interface.

The default transport is ``httpx_aiohttp.AiohttpTransport`` (aiohttp's connection pool under
httpx's request and response types), measured fastest and cheapest here; the pure-httpx
fallback gives each request in flight its own ``httpx.AsyncHTTPTransport`` with one
keep-alive connection, reused by later requests (one shared httpcore pool costs CPU growing
with the square of the requests in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from typing import Protocol

import aiohttp
import httpx
import httpx_aiohttp
from opentelemetry import context as otel_context

from .._config import GreenflashConfig
from .._event import Endpoint
from .executor import DaemonExecutor
from .transport import (
    UNSUPPORTED_ENDPOINT,
    USER_AGENT,
    ConsoleTransport,
    SendOutcome,
    Transport,
    proxy_for,
)

MAX_RESPONSE_BYTES = 64 * 1024
"""Response bodies are read up to this much; past it the connection is closed (the status
still counts). The Events API answers with a few dozen bytes."""


# The SDK's own exporters set this key so HTTP-client instrumentations skip their requests.
_SUPPRESS_INSTRUMENTATION_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY

_HINT_HEADERS = ("retry-after", "retry-after-ms")

_timeout_scope = getattr(asyncio, "timeout", None)
"""``asyncio.timeout`` where it exists (3.11+); ``wait_for`` costs a task per request."""


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
            _tls.context = httpx.create_ssl_context()
        return _tls.context


class AsyncTransport(Protocol):
    """Where the delivery loop sends bodies, each to its endpoint. ``send`` never raises and
    never outlives ``timeout_seconds`` (connect, upload and the whole response together)."""

    async def send(
        self, body: bytes, timeout_seconds: float, endpoint: Endpoint = Endpoint.EVENTS
    ) -> SendOutcome: ...

    async def aclose(self) -> None: ...


class EventsApiTransport:
    """Posts each body to ``{base_url}/events``, ``/messages`` or ``/ratings`` with one total
    deadline per request."""

    def __init__(self, config: GreenflashConfig) -> None:
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        headers.update(config.custom_headers)
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = httpx.Headers(headers)
        base = config.base_url.rstrip("/")
        self._urls = {endpoint: httpx.URL(f"{base}/{endpoint.value}") for endpoint in Endpoint}
        self._urls[Endpoint.EVENTS] = httpx.URL(config.events_url)
        proxy_url = proxy_for(config.events_url)
        self._proxy = httpx.Proxy(proxy_url) if proxy_url else None
        self._timeout = config.timeout_seconds
        self._connections = _Connections(config.http_client, config.max_concurrency, self._proxy)

    async def send(
        self, body: bytes, timeout_seconds: float, endpoint: Endpoint = Endpoint.EVENTS
    ) -> SendOutcome:
        """Called in the delivery loop's context, which carries the suppress flag."""
        timeout = min(timeout_seconds, self._timeout)
        url = self._urls[endpoint]
        try:
            if _timeout_scope is not None:  # Python 3.11+: no extra task per request
                async with _timeout_scope(timeout):
                    return await self._post(url, body, timeout)
            return await asyncio.wait_for(self._post(url, body, timeout), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return SendOutcome(None, "Timeout")
        except Exception as exc:  # network errors, or the transport closed by shutdown
            return SendOutcome(None, type(exc).__name__, unsent=never_sent(exc))

    async def _post(self, url: httpx.URL, body: bytes, timeout: float) -> SendOutcome:
        phases = {"connect": min(5.0, timeout), "read": timeout, "write": timeout, "pool": timeout}
        request = httpx.Request(
            "POST", url, headers=self._headers, content=body, extensions={"timeout": phases}
        )
        transport, release = self._connections.take()
        try:
            response = await transport.handle_async_request(request)
            stream = response.stream
            if not isinstance(stream, httpx.AsyncByteStream):
                raise TypeError("an async transport returned a blocking stream")
            try:
                received = 0
                async for chunk in stream:
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break  # closing an unfinished response closes its connection
            finally:
                await stream.aclose()
        finally:
            release()
        status = response.status_code
        if 200 <= status < 300:
            return SendOutcome(status)
        headers = response.headers
        return SendOutcome(status, hints={n: headers[n] for n in _HINT_HEADERS if n in headers})

    async def aclose(self) -> None:
        await self._connections.aclose()


class _Connections:
    """The httpx transports requests go through: one aiohttp pool, or one httpcore
    connection per request in flight, handed out from a free list."""

    def __init__(self, client: str, concurrency: int, proxy: httpx.Proxy | None) -> None:
        self._proxy = proxy
        self._ssl_context = shared_ssl_context()  # here, not on the loop thread
        self._free: list[httpx.AsyncBaseTransport] = []
        self._all: list[httpx.AsyncBaseTransport] = []
        self._shared: httpx.AsyncBaseTransport | None = None
        if client == "aiohttp":
            self._shared = httpx_aiohttp.AiohttpTransport(
                verify=self._ssl_context,
                limits=httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                ),
                proxy=proxy,
            )
            self._all.append(self._shared)

    def take(self) -> tuple[httpx.AsyncBaseTransport, Callable[[], None]]:
        if self._shared is not None:
            return self._shared, _nothing
        transport = self._free.pop() if self._free else self._new_httpx_connection()
        return transport, lambda: self._free.append(transport)

    def _new_httpx_connection(self) -> httpx.AsyncBaseTransport:
        transport = httpx.AsyncHTTPTransport(
            verify=self._ssl_context,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            proxy=self._proxy,
        )
        self._all.append(transport)
        return transport

    async def aclose(self) -> None:
        transports, self._all, self._free = self._all, [], []
        for transport in transports:
            with contextlib.suppress(Exception):
                await transport.aclose()


class ThreadedTransport:
    """Runs a blocking :class:`~otel_greenflash._deliver.transport.Transport` (e.g. the dry-run
    console or ``testing.MemoryTransport``) on a small thread pool, off the delivery loop."""

    def __init__(self, transport: Transport, threads: int) -> None:
        self._transport = transport
        self._executor = DaemonExecutor(threads, "otel-greenflash-transport", prestart=True)

    async def send(
        self, body: bytes, timeout_seconds: float, endpoint: Endpoint = Endpoint.EVENTS
    ) -> SendOutcome:
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


def _nothing() -> None:
    return None


_NEVER_SENT_HTTPX = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""httpcore raises these before a byte of the request is written (no connection, or none
free); DNS and TLS handshake failures are ``ConnectError``."""
_NEVER_SENT_AIOHTTP = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
"""aiohttp's failures to make a connection (name resolution, TCP connect, TLS handshake, the
connect phase's timeout). ``httpx_aiohttp`` maps every ``ClientConnectionError`` — a server
disconnecting after the request was sent too — to ``httpx.ConnectTimeout``, so the aiohttp
error it was raised from decides."""


def never_sent(error: BaseException) -> bool:
    """True when ``error`` proves the request never reached the server (see
    :attr:`SendOutcome.unsent`); False when it may have."""
    cause = error.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, _NEVER_SENT_AIOHTTP)
    return isinstance(error, _NEVER_SENT_HTTPX)


def transport_for(config: GreenflashConfig, custom: Transport | None = None) -> AsyncTransport:
    """Where events go: a given blocking transport, stdout in dry-run mode, else the API."""
    if custom is not None:
        return ThreadedTransport(custom, min(config.max_concurrency, 16))
    if config.dry_run:
        return ThreadedTransport(ConsoleTransport(), 1)
    return EventsApiTransport(config)
