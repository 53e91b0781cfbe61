"""httpx's transport interface over aiohttp's connection pool, lean enough for one request per
event: takes an ``httpx.Request``, returns an ``httpx.Response`` whose stream reads aiohttp's.

Per request it does only what the request needs: the aiohttp URL, the header set and the
timeout object are each built once and reused while they stay the same; no cookie jar; errors
are translated only when one happens. aiohttp's errors become httpx's (the nearest kind), the
aiohttp error kept as ``__cause__`` (``never_sent`` decides from it).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

_ERRORS: tuple[tuple[type[BaseException], type[httpx.HTTPError]], ...] = (
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.TimeoutException),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),
)
"""aiohttp error → httpx error, most specific first (the first match wins); any other
``aiohttp.ClientError`` becomes ``httpx.TransportError``. A connection lost after the
request was sent is a ``ReadError`` (``httpx_aiohttp`` named it ``ConnectTimeout``); whether
a request was sent is judged from the aiohttp cause either way."""

_CACHE_LIMIT = 64
"""Distinct URLs, header sets or timeouts remembered; past it the memo starts over."""


def _basic_credentials(username: str, password: str) -> str:
    """``Basic`` credentials encoded in UTF-8, as httpx sends them (aiohttp's own helper
    defaults to Latin-1: a non-ASCII proxy password would differ between the two clients)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _translated(error: aiohttp.ClientError) -> httpx.HTTPError:
    for aiohttp_kind, httpx_kind in _ERRORS:
        if isinstance(error, aiohttp_kind):
            return httpx_kind(str(error))
    return httpx.TransportError(str(error))


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's async byte stream; closing it before the end
    closes the connection, after the end returns it to the pool."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self  # no async generator: asyncio tracks each one it starts

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except aiohttp.ClientError as error:
            raise _translated(error) from error
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        try:
            await self._response.__aexit__(None, None, None)
        except aiohttp.ClientError as error:
            raise _translated(error) from error


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp ``ClientSession`` (created on the loop at the first request) behind
    ``handle_async_request``; honours the ``timeout`` extension (connect, read, pool)."""

    def __init__(
        self, ssl_context: ssl.SSLContext, max_connections: int, proxy: httpx.Proxy | None
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxy: dict[str, Any] = {}
        self._proxy_authorization: str | None = None
        if proxy is not None:
            self._proxy["proxy"] = str(proxy.url)
            proxy_headers = dict(proxy.headers)
            if proxy.auth:
                self._proxy_authorization = _basic_credentials(*proxy.auth)
                proxy_headers["Proxy-Authorization"] = self._proxy_authorization
            if proxy_headers:
                self._proxy["proxy_headers"] = proxy_headers  # sent on CONNECT (https) only
        self._urls: dict[str, URL] = {}
        self._headers: dict[tuple[tuple[bytes, bytes], ...], CIMultiDict[str]] = {}
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, ssl=self._ssl_context, keepalive_timeout=5.0
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._client()
        try:
            data = request.content
        except httpx.RequestNotRead:  # a stream: a ByteStream is read without an async generator
            stream = request.stream
            data = (
                request.read()
                if isinstance(stream, httpx.SyncByteStream)
                else await request.aread()
            )
        extensions = request.extensions
        headers = self._header_set(request.headers)
        if self._proxy_authorization is not None and request.url.scheme == "http":
            # A plain-http request goes to the proxy whole (no CONNECT): the credentials ride
            # on it. Never on an https request: through the tunnel they would reach the origin.
            headers = headers.copy()
            headers["Proxy-Authorization"] = self._proxy_authorization
        try:
            response = await session.request(
                request.method,
                self._url(request.url),
                headers=headers,
                data=data or None,
                allow_redirects=False,
                timeout=self._timeout(extensions.get("timeout")),
                server_hostname=extensions.get("sni_hostname"),
                **self._proxy,
            )
        except aiohttp.ClientError as error:
            raise _translated(error) from error
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _url(self, url: httpx.URL) -> URL:
        text = str(url)
        found = self._urls.get(text)
        if found is None:
            if len(self._urls) >= _CACHE_LIMIT:
                self._urls.clear()
            found = self._urls[text] = URL(text, encoded=True)
        return found

    def _header_set(self, headers: httpx.Headers) -> CIMultiDict[str]:
        """The request's headers but ``Content-Length`` (aiohttp sets it from the body)."""
        key = tuple(item for item in headers.raw if item[0].lower() != b"content-length")
        found = self._headers.get(key)
        if found is None:
            if len(self._headers) >= _CACHE_LIMIT:
                self._headers.clear()
            encoding = headers.encoding
            found = self._headers[key] = CIMultiDict(
                (name.decode(encoding), value.decode(encoding)) for name, value in key
            )
        return found

    def _timeout(self, phases: Any) -> aiohttp.ClientTimeout:
        phases = phases or {}
        key = (phases.get("connect"), phases.get("read"), phases.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            if len(self._timeouts) >= _CACHE_LIMIT:
                self._timeouts.clear()
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return found

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
