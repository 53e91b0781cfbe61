"""The Events API transport: one POST per item through httpx's transport interface.

The default transport is :class:`.aiohttp_transport.AiohttpTransport` (aiohttp's connection
pool under httpx's request and response types), measured fastest and cheapest here; the pure-httpx
fallback gives each request in flight its own ``httpx.AsyncHTTPTransport`` with one
keep-alive connection, reused by later requests (one shared httpcore pool costs CPU growing
with the square of the requests in flight).

Imported when the first delivery engine is built, not with the package (see :mod:`.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import httpx

from .._config import GreenflashConfig
from .._event import Endpoint
from .aiohttp_transport import AiohttpTransport
from .http import shared_ssl_context
from .transport import SendOutcome, proxy_for, user_agent

MAX_RESPONSE_BYTES = 64 * 1024
"""Response bodies are read up to this much; past it the connection is closed (the status
still counts). The Events API answers with a few dozen bytes."""

_HINT_HEADERS = ("retry-after", "retry-after-ms")

_timeout_scope = getattr(asyncio, "timeout", None)
"""``asyncio.timeout`` where it exists (3.11+); ``wait_for`` costs a task per request."""


class EventsApiTransport:
    """Posts each body to ``{base_url}/events``, ``/messages`` or ``/ratings`` with one total
    deadline per request."""

    def __init__(self, config: GreenflashConfig) -> None:
        headers = {"User-Agent": user_agent(), "Content-Type": "application/json"}
        headers.update(config.custom_headers)
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        base = config.base_url.rstrip("/")
        self._urls = {endpoint: httpx.URL(f"{base}/{endpoint.value}") for endpoint in Endpoint}
        self._urls[Endpoint.EVENTS] = httpx.URL(config.events_url)
        common = httpx.Headers(headers).raw
        self._headers = {
            endpoint: [(b"Host", url.netloc), *common] for endpoint, url in self._urls.items()
        }
        """Each endpoint's headers but ``Content-Length``, encoded once (httpx's request takes
        them as they are: no parsing per request)."""
        proxy_url = proxy_for(config.events_url)
        self._proxy = httpx.Proxy(proxy_url) if proxy_url else None
        self._timeout = config.timeout_seconds
        self._extensions = _extensions(self._timeout)
        self._connections = _Connections(config.http_client, config.max_concurrency, self._proxy)

    async def send(
        self, body: bytes, timeout_seconds: float, endpoint: Endpoint = Endpoint.EVENTS
    ) -> SendOutcome:
        """Called in the delivery loop's context, which carries the suppress flag."""
        timeout = min(timeout_seconds, self._timeout)
        try:
            if _timeout_scope is not None:  # Python 3.11+: no extra task per request
                async with _timeout_scope(timeout):
                    return await self._post(endpoint, body, timeout)
            return await asyncio.wait_for(self._post(endpoint, body, timeout), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return SendOutcome(None, "Timeout")
        except Exception as exc:  # network errors, or the transport closed by shutdown
            return SendOutcome(None, type(exc).__name__, unsent=never_sent(exc))

    async def _post(self, endpoint: Endpoint, body: bytes, timeout: float) -> SendOutcome:
        # A stream and complete headers: httpx adds and checks nothing (Host, Content-Length).
        request = httpx.Request(
            "POST",
            self._urls[endpoint],
            headers=[*self._headers[endpoint], (b"Content-Length", b"%d" % len(body))],
            stream=httpx.ByteStream(body),
            extensions=self._extensions if timeout == self._timeout else _extensions(timeout),
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
            self._shared = AiohttpTransport(self._ssl_context, concurrency, proxy)
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


def _extensions(timeout: float) -> dict[str, dict[str, float | None]]:
    """httpx's ``timeout`` extension for a request with ``timeout`` seconds in all: only the
    connect phase has its own (shorter) limit; reading, writing and waiting for a connection
    are bounded by the one ``asyncio.timeout`` around the request (a timer per phase would
    only repeat it, each costing the loop a timer per request)."""
    phases = {"connect": min(5.0, timeout), "read": None, "write": None, "pool": None}
    return {"timeout": phases}


def _nothing() -> None:
    return None


_NEVER_SENT_HTTPX = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""httpcore raises these before a byte of the request is written (no connection, or none
free); DNS and TLS handshake failures are ``ConnectError``."""
_NEVER_SENT_AIOHTTP = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
"""aiohttp's failures to make a connection (name resolution, TCP connect, TLS handshake, the
connect phase's timeout). Under an aiohttp transport the aiohttp error the httpx one was
raised from decides, not the httpx name: ``httpx_aiohttp`` calls a server disconnecting after
the request was sent a ``ConnectTimeout`` too (:mod:`.aiohttp_transport` keeps the cause)."""


def never_sent(error: BaseException) -> bool:
    """True when ``error`` proves the request never reached the server (see
    :attr:`SendOutcome.unsent`); False when it may have."""
    cause = error.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, _NEVER_SENT_AIOHTTP)
    return isinstance(error, _NEVER_SENT_HTTPX)
