"""The gateway's own settings: flag, then ``GREENFLASH_GATEWAY_*`` variable, then default.

Pipeline settings (API key, base URL, spool size, …) are the library's ``GREENFLASH_*``
variables, resolved by :class:`~otel_greenflash.GreenflashConfig`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._config import ENV_SPOOL_DIR, ConfigurationError

ENV_HOST = "GREENFLASH_GATEWAY_HOST"
ENV_HTTP_PORT = "GREENFLASH_GATEWAY_HTTP_PORT"
ENV_GRPC_PORT = "GREENFLASH_GATEWAY_GRPC_PORT"
ENV_SPOOL = "GREENFLASH_GATEWAY_SPOOL_DIR"
ENV_TOKEN = "GREENFLASH_GATEWAY_TOKEN"  # noqa: S105 (a variable name)
ENV_TLS_CERT = "GREENFLASH_GATEWAY_TLS_CERT"
ENV_TLS_KEY = "GREENFLASH_GATEWAY_TLS_KEY"
ENV_MAX_REQUEST_BYTES = "GREENFLASH_GATEWAY_MAX_REQUEST_BYTES"
ENV_REQUEST_TIMEOUT = "GREENFLASH_GATEWAY_REQUEST_TIMEOUT"
ENV_SHUTDOWN_TIMEOUT = "GREENFLASH_GATEWAY_SHUTDOWN_TIMEOUT"
ENV_GRPC_CALLS_PER_PEER = "GREENFLASH_GATEWAY_GRPC_CALLS_PER_PEER"

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The OTLP specification's recommended limit."""
MIN_TOKEN_LENGTH = 16
DEFAULT_GRPC_CALLS_PER_PEER = 64
"""OTLP/gRPC calls one peer address may hold at once: a quarter of the gateway's 256."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Resolved gateway settings; the token never appears in ``repr``."""

    host: str = "127.0.0.1"
    http_port: int = 4318
    grpc_port: int = 4317
    spool_dir: str = ""
    token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    request_timeout_seconds: float = 10.0
    shutdown_timeout_seconds: float = 20.0
    grpc_calls_per_peer: int = DEFAULT_GRPC_CALLS_PER_PEER

    @property
    def tls(self) -> tuple[str, str] | None:
        """``(certificate file, key file)``, or None for plain text."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return self.tls_cert, self.tls_key


def default_spool_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/otel-greenflash/gateway``, else ``~/.local/state/...``."""
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "otel-greenflash" / "gateway")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway's flags; each defaults to its ``GREENFLASH_GATEWAY_*`` variable."""
    parser.add_argument(
        "--host",
        help=f"address to listen on, IPv6 with or without brackets (default 127.0.0.1; {ENV_HOST})",
    )
    parser.add_argument("--http-port", type=int, help=f"OTLP/HTTP port (4318; {ENV_HTTP_PORT})")
    parser.add_argument("--grpc-port", type=int, help=f"OTLP/gRPC port (4317; {ENV_GRPC_PORT})")
    parser.add_argument(
        "--spool-dir",
        help=f"durable spool directory ({ENV_SPOOL}, then {ENV_SPOOL_DIR}; default "
        "$XDG_STATE_HOME/otel-greenflash/gateway)",
    )
    parser.add_argument(
        "--token",
        help=f"bearer token clients must send; required unless --host is loopback ({ENV_TOKEN}, "
        "preferred: a flag is visible to other users in the process list)",
    )
    parser.add_argument(
        "--tls-cert", help=f"PEM certificate file; needs --tls-key ({ENV_TLS_CERT})"
    )
    parser.add_argument("--tls-key", help=f"PEM private key file ({ENV_TLS_KEY})")
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        help="largest request body, as sent and once inflated from gzip or deflate "
        f"(default 64 MiB; {ENV_MAX_REQUEST_BYTES})",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        help="seconds a request may take (waiting for a worker, receiving its body, its events "
        "reaching the spool) before 503 / UNAVAILABLE with a retry delay "
        f"(default 10; {ENV_REQUEST_TIMEOUT} in ms)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        help="seconds SIGTERM may spend finishing requests (up to half of it) and delivering "
        f"acknowledged events (default 20; {ENV_SHUTDOWN_TIMEOUT} in ms); what is left stays "
        "in the spool",
    )
    add_grpc_arguments(parser)


def add_grpc_arguments(parser: argparse.ArgumentParser) -> None:
    """The OTLP/gRPC flags."""
    parser.add_argument(
        "--grpc-calls-per-peer",
        type=int,
        help="OTLP/gRPC calls one client address may hold at once, waiting or being taken "
        f"(default {DEFAULT_GRPC_CALLS_PER_PEER} of 256; more get UNAVAILABLE with a retry "
        f"delay; 256 turns the per-peer bound off; {ENV_GRPC_CALLS_PER_PEER})",
    )


def resolve(
    arguments: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Flags win over ``GREENFLASH_GATEWAY_*`` variables, which win over defaults."""
    env = os.environ if environ is None else environ

    def pick(flag: object, variable: str) -> str | None:
        if flag is not None:
            return str(flag)
        raw = env.get(variable, "").strip()
        return raw or None

    host = _host(pick(arguments.host, ENV_HOST) or "127.0.0.1")
    settings = GatewaySettings(
        host=host,
        http_port=_port(
            "--http-port", ENV_HTTP_PORT, pick(arguments.http_port, ENV_HTTP_PORT), 4318
        ),
        grpc_port=_port(
            "--grpc-port", ENV_GRPC_PORT, pick(arguments.grpc_port, ENV_GRPC_PORT), 4317
        ),
        spool_dir=pick(arguments.spool_dir, ENV_SPOOL)
        or env.get(ENV_SPOOL_DIR, "").strip()
        or default_spool_dir(env),
        token=_token(pick(arguments.token, ENV_TOKEN)),
        tls_cert=pick(arguments.tls_cert, ENV_TLS_CERT),
        tls_key=pick(arguments.tls_key, ENV_TLS_KEY),
        max_request_bytes=_max_bytes(arguments.max_request_bytes, env.get(ENV_MAX_REQUEST_BYTES)),
        request_timeout_seconds=_seconds(
            "--request-timeout", arguments.request_timeout, ENV_REQUEST_TIMEOUT, env, 10.0
        ),
        shutdown_timeout_seconds=_seconds(
            "--shutdown-timeout", arguments.shutdown_timeout, ENV_SHUTDOWN_TIMEOUT, env, 20.0
        ),
        grpc_calls_per_peer=_calls_per_peer(
            arguments.grpc_calls_per_peer, env.get(ENV_GRPC_CALLS_PER_PEER)
        ),
    )
    _check(settings)
    return settings


def _host(raw: str) -> str:
    """The address to bind, without the brackets of a URL's IPv6 literal (``[::1]`` → ``::1``):
    aiohttp and gRPC take the bare address."""
    host = raw.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1].strip()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigurationError(
                f"--host / {ENV_HOST}={raw!r}: brackets hold an IPv6 address only"
            ) from None
    if not host:
        raise ConfigurationError(f"--host / {ENV_HOST} is empty")
    return host


def is_loopback(host: str) -> bool:
    """True when ``host`` is only reachable from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check(settings: GatewaySettings) -> None:
    if settings.token is None and not is_loopback(settings.host):
        raise ConfigurationError(
            f"--host {settings.host} is reachable from other machines, so clients must "
            f"authenticate: set a bearer token with {ENV_TOKEN} (or --token), at least "
            f"{MIN_TOKEN_LENGTH} characters; without one the gateway only listens on loopback"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigurationError(
            f"--tls-cert ({ENV_TLS_CERT}) and --tls-key ({ENV_TLS_KEY}) go together: "
            "give both or neither"
        )
    for name, path in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
        if path is not None and not Path(path).is_file():
            raise ConfigurationError(f"{name}: no readable file at {path}")
    if settings.tls:
        server_ssl_context(settings.tls)
    if settings.http_port == settings.grpc_port:
        raise ConfigurationError(
            f"--http-port and --grpc-port are both {settings.http_port}; allowed: two ports"
        )


def server_ssl_context(files: tuple[str, str]) -> ssl.SSLContext:
    """The TLS context for ``(certificate file, key file)``; a clear ConfigurationError when
    they cannot be used (not PEM, a key that does not match, unreadable)."""
    cert, key = files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError) as error:
        reason = error.strerror or str(error)
        raise ConfigurationError(
            f"--tls-cert {cert} / --tls-key {key} ({ENV_TLS_CERT}, {ENV_TLS_KEY}) cannot be "
            f"used: {reason}; allowed: a PEM certificate (chain) and its PEM private key, "
            "unencrypted"
        ) from None
    return context


def _no_password() -> bytes:
    """An encrypted key cannot be used (OpenSSL would otherwise ask on the terminal)."""
    return b""


def _port(flag: str, variable: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigurationError(f"{flag} / {variable}={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"{flag} / {variable}={port} is out of range; allowed: 1 to 65535")
    return port


def _token(raw: str | None) -> str | None:
    """Visible ASCII (it travels in a header), long enough not to be guessed; never echoed."""
    if raw is None:
        return None
    if not all(32 < ord(character) < 127 for character in raw):
        raise ConfigurationError(
            f"the token ({ENV_TOKEN} / --token) contains characters a header cannot carry; "
            "allowed: visible ASCII without spaces"
        )
    if len(raw) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the token ({ENV_TOKEN} / --token) has {len(raw)} characters; allowed: at least "
            f"{MIN_TOKEN_LENGTH} (e.g. from `python -c 'import secrets; "
            "print(secrets.token_urlsafe())'`)"
        )
    return raw


def _max_bytes(flag: int | None, raw: str | None) -> int:
    name = "--max-request-bytes" if flag is not None else ENV_MAX_REQUEST_BYTES
    value: int
    if flag is not None:
        value = flag
    elif raw is None or not raw.strip():
        return DEFAULT_MAX_REQUEST_BYTES
    else:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not a whole number of bytes") from None
    if not 1024 <= value <= 1024**3:
        raise ConfigurationError(
            f"{name}={value} is out of range; allowed: 1024 to {1024**3} bytes (1 GiB)"
        )
    return value


def _seconds(
    flag_name: str,
    flag: float | None,
    variable: str,
    environ: Mapping[str, str],
    default: float,
) -> float:
    """Seconds from the flag, or milliseconds from the variable (as the library's variables)."""
    if flag is not None:
        name, seconds = flag_name, flag
    else:
        raw = environ.get(variable, "").strip()
        if not raw:
            return default
        try:
            name, seconds = variable, float(raw) / 1000
        except ValueError:
            raise ConfigurationError(
                f"{variable}={raw!r} is not a number of milliseconds"
            ) from None
    if not 0 < seconds <= 3600:  # NaN fails too
        raise ConfigurationError(
            f"{name} is out of range; allowed: more than 0 and at most 3600 seconds"
        )
    return seconds


def _calls_per_peer(flag: int | None, raw: str | None) -> int:
    name = "--grpc-calls-per-peer" if flag is not None else ENV_GRPC_CALLS_PER_PEER
    if flag is not None:
        value = flag
    elif raw is None or not raw.strip():
        return DEFAULT_GRPC_CALLS_PER_PEER
    else:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not a whole number of calls") from None
    if value < 1:
        raise ConfigurationError(f"{name}={value} is out of range; allowed: at least 1")
    return value


def describe(settings: GatewaySettings) -> str:
    """One line for the log at start (the token only as set / not set)."""
    scheme = "https" if settings.tls else "http"
    return (
        f"OTLP/HTTP on {scheme}://{hostport(settings.host, settings.http_port)}, "
        f"OTLP/gRPC on {hostport(settings.host, settings.grpc_port)}"
        f"{' (TLS)' if settings.tls else ''}; token {'required' if settings.token else 'not set'}; "
        f"spool {settings.spool_dir}"
    )


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
