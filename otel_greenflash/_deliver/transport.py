"""A request's outcome, how bodies are encoded, and blocking transports (the dry-run console)."""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TextIO

from .._event import DeliveryItem
from .._network import proxy_from_environment
from .._version import __version__


@functools.cache
def user_agent() -> str:
    """The ``User-Agent`` of our requests; imports httpx (only where requests are made)."""
    import httpx  # not at package import (see .http)

    return f"otel-greenflash/{__version__} (python; httpx/{httpx.__version__})"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What happened to one request: an HTTP status, or a transport error's class name."""

    status: int | None
    error: str | None = None
    hints: Mapping[str, str] | None = None
    """Retry hints from the response (``retry-after``, ``retry-after-ms``), lower-case names."""
    unsent: bool = False
    """True when the request surely never reached the server (no connection was made: name
    resolution, connect or TLS handshake failed, or no connection was free): whatever the
    endpoint, it was not stored. False when it may have been (or there was an answer)."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


UNSUPPORTED_ENDPOINT = "TransportTakesEventsOnly"
"""The error of a blocking transport asked to send to an endpoint it has no ``send_to`` for."""


def encode_body(item: DeliveryItem) -> bytes:
    """Serialise a request body as compact JSON (raises ValueError for NaN/inf)."""
    return json.dumps(item.body, separators=(",", ":"), allow_nan=False).encode()


class Transport(Protocol):
    """A blocking destination for event bodies (the dry-run console, ``MemoryTransport``, a
    user's own). ``send`` never raises; the delivery loop runs it on a small thread pool.

    Messages and ratings bodies go to an optional ``send_to(endpoint, body, timeout_seconds)``
    (``endpoint``: ``"messages"`` or ``"ratings"``); a transport without one takes events
    only (the others are refused, counted as failed)."""

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome: ...

    def close(self) -> None: ...


class ConsoleTransport:
    """Dry-run: prints each body as one JSON line on stdout and reports success. An event's
    line is its body, as always; a messages or ratings request's line names its endpoint:
    ``{"endpoint":"ratings","body":{...}}``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        return self._print(body.decode())

    def send_to(
        self, endpoint: str, body: bytes, timeout_seconds: float | None = None
    ) -> SendOutcome:
        """Messages and ratings bodies: one JSON line each, naming the endpoint (the body as
        it would be sent; the transport never holds the API key)."""
        return self._print(f'{{"endpoint":{json.dumps(str(endpoint))},"body":{body.decode()}}}')

    def _print(self, line: str) -> SendOutcome:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()
        return SendOutcome(200)

    def close(self) -> None:
        return None


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment names for this URL (``<scheme>_PROXY``, else ``ALL_PROXY``,
    unless ``NO_PROXY`` covers its host; ``http://`` added to a value without a scheme), read
    as urllib and httpx's ``trust_env`` read them. The configuration checks the same proxy at
    construction (see ``_network.proxy_from_environment``)."""
    setting = proxy_from_environment(url, os.environ if environ is None else environ)
    return setting.url if setting is not None else None
