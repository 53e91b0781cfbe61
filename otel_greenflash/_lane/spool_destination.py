"""Which key and endpoint a spool file's events were written for, without storing the key.

Each spool file records, at creation, the events endpoint (normalized URL: scheme, host, port
and path, never a user, password or query) and a *key check*: ``scrypt(api_key, salt, n=2**13,
r=8, p=1)`` with 16 random bytes of salt per file (a query, which the configuration refuses
anyway, would go into the check with the key, never into the file). A process adopts an
orphaned file only when both match its own; anything else stays for a process that has that
key and endpoint.

The check is not a password hash, and these parameters are below what is advised for
passwords: its premise is that API keys are long random tokens, which no offline guessing
reaches whatever each guess costs (here 8 MiB of memory and tens of milliseconds, per file,
since salts differ). An adopter computes its own key's check once per orphan's salt and
remembers it, so a file kept for another key costs nothing on later scans.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit, urlunsplit

from .._config import GreenflashConfig

KDF = "scrypt-n8192-r8-p1"
"""The key check's function and parameters, stored with it (another value never matches)."""
_SALT_BYTES = 16
_CHECKS_REMEMBERED = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS destination (
    endpoint TEXT NOT NULL,
    kdf TEXT NOT NULL,
    salt BLOB NOT NULL,
    key_check BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where this process's events go: its events endpoint (kept normalized, without a query)
    and API key (never shown)."""

    endpoint: str
    api_key: str = field(repr=False)
    query: str = field(default="", init=False, repr=False)
    """The endpoint's query, if any: part of the key check, never stored."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", urlsplit(self.endpoint.strip()).query)
        object.__setattr__(self, "endpoint", normalized_endpoint(self.endpoint))

    @property
    def secret(self) -> str:
        """What the key check is computed from: the key, and the query when there is one."""
        return f"{self.api_key}\x00{self.query}" if self.query else self.api_key

    @classmethod
    def of(cls, config: GreenflashConfig) -> Destination:
        """The destination of a configuration (an empty key for a custom transport)."""
        return cls(config.events_url, config.api_key or "")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a spool file says about its destination."""

    endpoint: str
    kdf: str
    salt: bytes = field(repr=False)
    key_check: bytes = field(repr=False)


class Match(Enum):
    SAME = "same"
    """Written under this key for this endpoint: adopted."""
    UNRECORDED = "unrecorded"
    """Written by a version that did not record it: adopted, with a warning."""
    OTHER_ENDPOINT = "other endpoint"
    OTHER_KEY = "other key"


def normalized_endpoint(url: str) -> str:
    """``url`` with its scheme and host in lower case, without a user or password, a default
    port, a trailing slash, a query or a fragment: the same endpoint written two ways compares
    equal, and what is stored holds no secret."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default_port = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default_port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def shown_endpoint(endpoint: str) -> str:
    """What a message may show of an endpoint: scheme, host and port (a path or a query may
    hold a token)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def key_check(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=8192, r=8, p=1, maxmem=32 * 1024 * 1024, dklen=32
    )


def record(destination: Destination) -> Recorded:
    """A new record of ``destination`` (a fresh salt)."""
    salt = os.urandom(_SALT_BYTES)
    return Recorded(destination.endpoint, KDF, salt, key_check(destination.secret, salt))


def write(db: sqlite3.Connection, recorded: Recorded) -> None:
    """Store the record (in the caller's transaction)."""
    db.execute(
        "INSERT INTO destination (endpoint, kdf, salt, key_check) VALUES (?, ?, ?, ?)",
        (recorded.endpoint, recorded.kdf, recorded.salt, recorded.key_check),
    )


def read(db: sqlite3.Connection) -> Recorded | None:
    """The file's record; None when it has none (written by a version before records)."""
    try:
        row = db.execute("SELECT endpoint, kdf, salt, key_check FROM destination").fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return None
        raise
    if row is None:
        return None
    endpoint, kdf, salt, check = row
    return Recorded(str(endpoint), str(kdf), bytes(salt), bytes(check))


class DestinationCheck:
    """Compares files' records with this process's destination; remembers its key's check per
    salt (so a file kept for another key is not checked at a cost again)."""

    def __init__(self, destination: Destination | None) -> None:
        self.destination = destination
        self._checks: dict[bytes, bytes] = {}

    def match(self, recorded: Recorded | None) -> Match:
        """How a file's record compares. Without a destination of its own (a spool made
        without one) only files without a record match."""
        own = self.destination
        if recorded is None:
            return Match.UNRECORDED
        if own is None or recorded.endpoint != own.endpoint:
            return Match.OTHER_ENDPOINT
        if recorded.kdf != KDF or not hmac.compare_digest(
            self._check(recorded.salt), recorded.key_check
        ):
            return Match.OTHER_KEY
        return Match.SAME

    def _check(self, salt: bytes) -> bytes:
        assert self.destination is not None
        known = self._checks.get(salt)
        if known is None:
            if len(self._checks) >= _CHECKS_REMEMBERED:
                self._checks.clear()
            known = self._checks[salt] = key_check(self.destination.secret, salt)
        return known
