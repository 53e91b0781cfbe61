"""A request's outcome, how bodies are encoded, and blocking transports (the dry-run console)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TextIO

import httpx

from ._event import BusinessEvent
from ._version import __version__

USER_AGENT = f"otel-greenflash/{__version__} (python; httpx/{httpx.__version__})"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What happened to one request: an HTTP status, or a transport error's class name."""

    status: int | None
    error: str | None = None
    hints: Mapping[str, str] | None = None
    """Retry hints from the response (``retry-after``, ``retry-after-ms``), lower-case names."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def encode_body(event: BusinessEvent) -> bytes:
    """Serialise an event body as compact JSON (raises ValueError for NaN/inf)."""
    return json.dumps(event.body, separators=(",", ":"), allow_nan=False).encode()


class Transport(Protocol):
    """A blocking destination for event bodies (the dry-run console, ``MemoryTransport``, a
    user's own). ``send`` never raises; the delivery loop runs it on a small thread pool."""

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


def proxy_for(url: str) -> str | None:
    """The proxy the environment asks for this URL, the way httpx's ``trust_env`` reads it."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies_environment()
    scheme = urllib.parse.urlsplit(url).scheme
    return proxies.get(scheme) or proxies.get("all")
