"""HTTP transport: one Events API request per event over a keep-alive httpx client."""

from __future__ import annotations

import json
import ssl
import sys
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import httpx
from opentelemetry import context as otel_context

from ._config import GreenflashConfig
from ._event import BusinessEvent
from ._version import __version__

USER_AGENT = f"otel-greenflash/{__version__} (python; httpx/{httpx.__version__})"

# The SDK's own exporters set this key so HTTP-client instrumentations skip their requests.
_SUPPRESS_INSTRUMENTATION_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY

_HINT_HEADERS = ("retry-after", "retry-after-ms")


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What happened to one request: an HTTP status, or a transport error's class name."""

    status: int | None
    error: str | None = None
    hints: dict[str, str] = field(default_factory=dict)
    """Retry hints from the response (``retry-after``, ``retry-after-ms``), lower-case names."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def encode_body(event: BusinessEvent) -> bytes:
    """Serialise an event body as compact JSON (raises ValueError for NaN/inf)."""
    return json.dumps(event.body, separators=(",", ":"), allow_nan=False).encode()


class Transport(Protocol):
    """Where event bodies go. ``send`` never raises."""

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome: ...

    def close(self) -> None: ...


class ConsoleTransport:
    """Dry-run: prints each body as one JSON line on stdout and reports success."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(body.decode() + "\n")
            stream.flush()
        return SendOutcome(200)

    def close(self) -> None:
        return None


class EventTransport:
    """Posts event bodies to ``{base_url}/events``; never raises.

    Each sending thread gets its own ``httpx.HTTPTransport`` holding one keep-alive
    connection. Measured here (README, Performance): one pooled client shared by many threads
    spends CPU growing with the square of the thread count in httpcore's pool bookkeeping,
    and going through ``httpx.Client`` (auth, redirects, cookies, URL merging) costs about
    a third more CPU per request than handing a prepared ``httpx.Request`` to the transport.
    Proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` are honoured as httpx would.
    """

    def __init__(self, config: GreenflashConfig) -> None:
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        headers.update(config.custom_headers)
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = httpx.Headers(headers)
        self._url = httpx.URL(config.events_url)
        self._proxy = _proxy_for(config.events_url)
        self._timeout = config.timeout_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._transports: list[httpx.HTTPTransport] = []
        self._closed = False
        self._ssl_context: ssl.SSLContext | None = None

    def _shared_ssl_context(self) -> ssl.SSLContext:
        """One TLS context for every thread: building one loads the CA bundle (milliseconds
        of CPU), which would otherwise be paid once per sender thread."""
        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return self._ssl_context

    def _transport(self) -> httpx.HTTPTransport:
        transport: httpx.HTTPTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = httpx.HTTPTransport(
                verify=self._shared_ssl_context(),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                proxy=self._proxy,
            )
            with self._lock:
                if self._closed:
                    transport.close()
                    raise RuntimeError("transport closed")
                self._transports.append(transport)
            self._local.transport = transport
        return transport

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        """POST one JSON body; ``timeout_seconds`` caps this request's timeouts."""
        timeout = self._timeout if timeout_seconds is None else min(timeout_seconds, self._timeout)
        timeouts = {
            "connect": min(5.0, timeout),
            "read": timeout,
            "write": timeout,
            "pool": timeout,
        }
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            request = httpx.Request(
                "POST",
                self._url,
                headers=self._headers,
                content=body,
                extensions={"timeout": timeouts},
            )
            response = self._transport().handle_request(request)
            try:
                response.read()
            finally:
                response.close()
            headers = response.headers
            hints = {name: headers[name] for name in _HINT_HEADERS if name in headers}
            return SendOutcome(response.status_code, hints=hints)
        except Exception as exc:  # network errors, or the transport closed by shutdown
            return SendOutcome(None, type(exc).__name__)
        finally:
            otel_context.detach(token)

    def close(self) -> None:
        """Close every thread's connection (cuts requests still hanging)."""
        with self._lock:
            self._closed = True
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()


def transport_for(config: GreenflashConfig) -> Transport:
    """Where events go for this configuration: stdout in dry-run mode, else the Events API."""
    return ConsoleTransport() if config.dry_run else EventTransport(config)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment asks for this URL, the way httpx's ``trust_env`` reads it."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies_environment()
    scheme = urllib.parse.urlsplit(url).scheme
    return proxies.get(scheme) or proxies.get("all")
