"""HTTP transport: one Events API request per event over a keep-alive httpx client."""

from __future__ import annotations

import json
import sys
import threading
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

    Each sending thread gets its own ``httpx.Client`` holding one keep-alive connection:
    measured here, one pooled client shared by many threads spends CPU growing with the
    square of the thread count in httpcore's pool bookkeeping, while a client per thread
    stays flat (see the README's Performance section).
    """

    def __init__(self, config: GreenflashConfig) -> None:
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        headers.update(config.custom_headers)
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        self._url = config.events_url
        self._timeout = config.timeout_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[httpx.Client] = []
        self._closed = False

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                headers=self._headers,
                timeout=httpx.Timeout(self._timeout, connect=min(5.0, self._timeout)),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            with self._lock:
                if self._closed:
                    client.close()
                    raise RuntimeError("transport closed")
                self._clients.append(client)
            self._local.client = client
        return client

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        """POST one JSON body; ``timeout_seconds`` caps this request's timeouts."""
        timeout = self._timeout if timeout_seconds is None else min(timeout_seconds, self._timeout)
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            client = self._client()
            request = client.build_request(
                "POST",
                self._url,
                content=body,
                timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            )
            response = client.send(request)
            response.read()
            headers = response.headers
            hints = {name: headers[name] for name in _HINT_HEADERS if name in headers}
            return SendOutcome(response.status_code, hints=hints)
        except Exception as exc:  # network errors, or the client closed by shutdown mid-request
            return SendOutcome(None, type(exc).__name__)
        finally:
            otel_context.detach(token)

    def close(self) -> None:
        """Close every thread's client (cuts requests still hanging)."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
