"""Configuration: explicit argument, then environment variable, then default.

Every environment variable the library reads is declared here, parsed here and validated here;
a bad value fails at construction with a :class:`ConfigurationError` naming the setting, what is
wrong and what is allowed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from . import attributes as attr
from ._exceptions import ConfigurationError as ConfigurationError
from ._network import DEFAULT_BASE_URL as DEFAULT_BASE_URL
from ._network import check_base_url, check_transport_security

ENV_API_KEY = "GREENFLASH_API_KEY"
ENV_PRODUCT_ID = "GREENFLASH_PRODUCT_ID"
ENV_BASE_URL = "GREENFLASH_BASE_URL"
ENV_CUSTOM_HEADERS = "GREENFLASH_CUSTOM_HEADERS"
ENV_ENABLED = "GREENFLASH_ENABLED"
ENV_DRY_RUN = "GREENFLASH_DRY_RUN"
ENV_ALLOW_INSECURE_HTTP = "GREENFLASH_ALLOW_INSECURE_HTTP"
ENV_TIMEOUT = "GREENFLASH_TIMEOUT"
ENV_SCHEDULE_DELAY = "GREENFLASH_BSP_SCHEDULE_DELAY"
ENV_SEND_DELAY = "GREENFLASH_BSP_SEND_DELAY"
ENV_MAX_QUEUE_SIZE = "GREENFLASH_BSP_MAX_QUEUE_SIZE"
ENV_MAX_QUEUE_BYTES = "GREENFLASH_BSP_MAX_QUEUE_BYTES"
ENV_MAX_EXPORT_BATCH_SIZE = "GREENFLASH_BSP_MAX_EXPORT_BATCH_SIZE"
ENV_EXPORT_TIMEOUT = "GREENFLASH_BSP_EXPORT_TIMEOUT"
ENV_MAX_CONCURRENCY = "GREENFLASH_BSP_MAX_CONCURRENCY"
ENV_HTTP_CLIENT = "GREENFLASH_HTTP_CLIENT"
ENV_LINK_LINGER = "GREENFLASH_LINK_LINGER"
ENV_LINK_MAX_WAITING = "GREENFLASH_LINK_MAX_WAITING"
ENV_LINK_MAX_TRACES = "GREENFLASH_LINK_MAX_TRACES"
ENV_LINK_ALIASES = "GREENFLASH_LINK_ALIASES"
ENV_LINK_EXTRA_ALIASES = "GREENFLASH_LINK_EXTRA_ALIASES"
ENV_INSTALL_PROCESSOR = "GREENFLASH_INSTALL_PROCESSOR"
ENV_SPOOL_DIR = "GREENFLASH_SPOOL_DIR"
ENV_SPOOL_MAX_EVENTS = "GREENFLASH_SPOOL_MAX_EVENTS"
ENV_HANDLE_SIGTERM = "GREENFLASH_HANDLE_SIGTERM"
ENV_TERMINATION_TIMEOUT = "GREENFLASH_TERMINATION_TIMEOUT"
ENV_CAPTURE_CONVERSATIONS = "GREENFLASH_CAPTURE_CONVERSATIONS"
ENV_CAPTURE_MESSAGE_CONTENT = "GREENFLASH_CAPTURE_MESSAGE_CONTENT"
ENV_MAX_MESSAGE_BYTES = "GREENFLASH_MAX_MESSAGE_BYTES"
ENV_DEFAULT_EXTERNAL_USER_ID = "GREENFLASH_DEFAULT_EXTERNAL_USER_ID"
ENV_OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"

ENVIRONMENT_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        ENV_API_KEY: "Greenflash API key, sent as `Authorization: Bearer`. Unset: nothing is sent.",
        ENV_PRODUCT_ID: "Default `productId` (UUID) for events whose trace names none.",
        ENV_BASE_URL: f"Events API base URL; events go to `{{base_url}}/events`. "
        f"Default `{DEFAULT_BASE_URL}`.",
        ENV_CUSTOM_HEADERS: "Extra request headers, one `Name: value` per line.",
        ENV_ENABLED: "`false` turns the processor and exporter into no-ops. Default `true`.",
        ENV_DRY_RUN: "`true` prints each event as a JSON line on stdout instead of sending "
        "(no key needed). Default `false`.",
        ENV_ALLOW_INSECURE_HTTP: "`true` allows sending the key over plain `http://` to a "
        "non-loopback host. Default `false`.",
        ENV_TIMEOUT: "Per-request timeout, milliseconds. Default 10000.",
        ENV_SCHEDULE_DELAY: "How often the worker runs with nothing queued (expired waits, "
        "warnings), ms; also the longest a queued event waits for it. Default 1000.",
        ENV_SEND_DELAY: "How long the worker, woken by a queued event, lets more gather before "
        "taking them, ms (at most the schedule delay). Default 5.",
        ENV_MAX_QUEUE_SIZE: "Event spans the queue holds (then new ones are dropped). "
        "Default 16384.",
        ENV_MAX_QUEUE_BYTES: "Bytes the queued records may hold together, as estimated when "
        "each is queued (then new ones are dropped). Default 67108864 (64 MiB).",
        ENV_MAX_EXPORT_BATCH_SIZE: "Event spans handled per worker wake-up. Default 512.",
        ENV_EXPORT_TIMEOUT: "Retry window per event, from its first attempt, ms. Default 300000.",
        ENV_MAX_CONCURRENCY: "Most requests in flight (keep-alive connections); fewer while the "
        "API throttles. Default 64.",
        ENV_HTTP_CLIENT: "`aiohttp` (default: httpx over aiohttp's pool) or `httpx` (httpx's own "
        "async transport, one connection per request in flight).",
        ENV_LINK_LINGER: "Longest wait for a trace's local root span before an event is sent "
        "without a conversation id, ms. Default 300000 (5 minutes: long LLM turns).",
        ENV_LINK_MAX_WAITING: "Event spans that may wait for their conversation id. Default "
        "100000 (64 MiB together bound them first).",
        ENV_LINK_MAX_TRACES: "Traces whose ids are remembered for linking. Default 4096.",
        ENV_LINK_ALIASES: "Comma-separated `attribute=greenflash.key` pairs replacing the default "
        "aliases; empty: none.",
        ENV_LINK_EXTRA_ALIASES: "Comma-separated `attribute=greenflash.key` pairs added to the "
        "aliases (default or replaced), ahead of them.",
        ENV_INSTALL_PROCESSOR: "`true`: `opentelemetry-instrument` installs "
        "GreenflashSpanProcessor on the SDK TracerProvider. Default `false`.",
        ENV_OTEL_SDK_DISABLED: "OpenTelemetry's own switch; `true` disables this library too.",
        ENV_SPOOL_DIR: "Directory of the durable spool (sqlite); unset: no spool.",
        ENV_SPOOL_MAX_EVENTS: "Events the spool keeps per process (oldest evicted, counted). "
        "Default 100000.",
        ENV_HANDLE_SIGTERM: "`false`: no SIGTERM handler and no delivery before `os._exit` "
        "(see Deployments). Default `true`.",
        ENV_TERMINATION_TIMEOUT: "Longest time spent delivering (or spooling) held events when "
        "the process ends by SIGTERM or `os._exit`, ms. Default 5000.",
        ENV_CAPTURE_CONVERSATIONS: "`true`: LLM calls recorded by GenAI instrumentations become "
        "`POST /messages` requests and `gen_ai.evaluation.result` events `POST /ratings` "
        "(see Conversations and ratings). Default `false`.",
        ENV_CAPTURE_MESSAGE_CONTENT: "`false`: captured messages carry no content (roles, tool "
        "names, ids, times and usage only). Default `true` (content is sent only where the "
        "instrumentation recorded it).",
        ENV_MAX_MESSAGE_BYTES: "Longest captured message content, UTF-8 bytes; longer content is "
        "cut (counted). Default 32768.",
        ENV_DEFAULT_EXTERNAL_USER_ID: "`externalUserId` for captured messages whose trace names "
        "no user (the Messages API requires one). Unset: such calls are not sent (counted).",
    }
)
"""Every environment variable read by the library, with what it does and its default."""

T = TypeVar("T")

DEFAULT_MAX_QUEUE_SIZE = 16_384
"""Records the queue in front of the worker holds by default: a burst of 10,000 events fits."""
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
"""Bytes the queued records hold together at most by default, as estimated on the application
thread (:func:`._records.queue_bytes`). A typical event span is estimated at about 2.9 KB (as
much as it holds, measured), so 16,384 of them fit in about 47 MB and the count binds first;
records with large values (LLM calls with 256 KB prompts) meet this bound first, at about 250."""
MAX_PENDING_DELIVERIES = 2048
"""Events the delivery loop holds unsettled at most (see :attr:`GreenflashConfig.max_pending`)."""

Redactor = Callable[[str, str], "str | None"]
"""``redact(content, role) -> content``: the text to send instead, or None to send none."""


@dataclass(frozen=True, slots=True)
class GreenflashConfig:
    """Resolved settings shared by the processor, the exporter and the CLI.

    The API key and custom header values never appear in ``repr``.
    """

    api_key: str | None = field(repr=False)
    product_id: str | None
    base_url: str
    custom_headers: Mapping[str, str] = field(repr=False)
    enabled: bool
    dry_run: bool
    allow_insecure_http: bool
    timeout_seconds: float
    schedule_delay_seconds: float
    max_queue_size: int
    max_export_batch_size: int
    export_timeout_seconds: float
    max_concurrency: int
    linger_seconds: float
    max_waiting: int
    max_traces: int
    aliases: Mapping[str, str] | None
    spool_dir: str | None = None
    spool_max_events: int = 100_000
    http_client: str = "aiohttp"
    handle_sigterm: bool = True
    termination_timeout_seconds: float = 5.0
    capture_conversations: bool = False
    capture_message_content: bool = True
    max_message_bytes: int = 32_768
    default_external_user_id: str | None = None
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    send_delay_seconds: float = 0.005
    redact_message: Redactor | None = field(default=None, repr=False)
    """``redact(content, role)``: the text to send instead, or None for none (an argument only)."""

    @property
    def max_pending(self) -> int:
        """Events the delivery loop holds unsettled at most (the worker waits past it): the
        queue size, up to :data:`MAX_PENDING_DELIVERIES`."""
        return min(self.max_queue_size, MAX_PENDING_DELIVERIES)

    @property
    def events_url(self) -> str:
        return self.base_url.rstrip("/") + "/events"

    @property
    def api_key_redacted(self) -> str:
        return redact(self.api_key)

    @property
    def custom_header_names(self) -> tuple[str, ...]:
        return tuple(self.custom_headers)

    @property
    def sends(self) -> bool:
        """True when events will go somewhere (the API, or stdout in dry-run mode)."""
        return self.enabled and (self.dry_run or bool(self.api_key))

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **explicit: Any) -> GreenflashConfig:
        """Build a config from keyword arguments (``None`` = not given) and ``environ``."""
        return _Resolver(os.environ if environ is None else environ, explicit).config()


def redact(secret: str | None) -> str:
    """Show that a secret is set without showing it."""
    if not secret:
        return "<not set>"
    return f"****{secret[-4:]}" if len(secret) >= 16 else "****"


class _Resolver:
    def __init__(self, environ: Mapping[str, str], explicit: Mapping[str, Any]) -> None:
        unknown = set(explicit) - set(GreenflashConfig.__dataclass_fields__) - {"extra_aliases"}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        self._env = environ
        self._explicit = explicit

    def _get(
        self,
        argument: str,
        variable: str | None,
        default: T,
        parse: Callable[[str, str], T],
        check: Callable[[str, T], T] | None = None,
    ) -> T:
        value = self._explicit.get(argument)
        if value is not None:
            return check(argument, value) if check else value
        raw = self._env.get(variable) if variable else None
        if raw is None or not raw.strip():
            return default
        parsed = parse(variable or argument, raw.strip())
        return check(variable or argument, parsed) if check else parsed

    def _name(self, argument: str, variable: str) -> str:
        """How to call a setting in a message: the argument when one was given."""
        return argument if self._explicit.get(argument) is not None else variable

    def _aliases(self) -> Mapping[str, str] | None:
        """The aliases in force (None: the defaults): the replacing setting or the defaults,
        with the added ones ahead of them."""
        base: Mapping[str, str] | None
        if self._explicit.get("aliases") is not None:
            base = _check_aliases("aliases", self._explicit["aliases"])
        else:
            raw = self._env.get(ENV_LINK_ALIASES)
            base = None if raw is None else _parse_aliases(ENV_LINK_ALIASES, raw)
        extra: Mapping[str, str]
        if self._explicit.get("extra_aliases") is not None:
            extra = _check_aliases("extra_aliases", self._explicit["extra_aliases"])
        else:
            raw = self._env.get(ENV_LINK_EXTRA_ALIASES)
            extra = {} if raw is None else _parse_aliases(ENV_LINK_EXTRA_ALIASES, raw)
        if not extra:
            return base
        rest = attr.DEFAULT_ALIASES if base is None else base
        return {**extra, **{key: value for key, value in rest.items() if key not in extra}}

    def config(self) -> GreenflashConfig:
        disabled = _parse_bool(
            ENV_OTEL_SDK_DISABLED, self._env.get(ENV_OTEL_SDK_DISABLED) or "false"
        )
        enabled = self._get("enabled", ENV_ENABLED, True, _parse_bool, _check_bool) and not disabled
        api_key: str | None = self._get("api_key", ENV_API_KEY, None, _as_text, _check_key)
        api_key = api_key.strip() if api_key and api_key.strip() else None
        product_id: str | None = self._get(
            "product_id", ENV_PRODUCT_ID, None, _as_text, _check_uuid
        )
        base_url = self._get("base_url", ENV_BASE_URL, DEFAULT_BASE_URL, _as_text, check_base_url)
        headers: Mapping[str, str] = self._get(
            "custom_headers", ENV_CUSTOM_HEADERS, {}, _parse_headers, _check_headers
        )
        if api_key and any(api_key in header for header in headers):
            raise ConfigurationError(  # header names are shown by `otel-greenflash check`
                f"custom_headers / {ENV_CUSTOM_HEADERS}: a header name holds the API key; "
                "allowed: 'Name: value', with the key never in the name"
            )
        dry_run = self._get("dry_run", ENV_DRY_RUN, False, _parse_bool, _check_bool)
        allow_insecure = self._get(
            "allow_insecure_http", ENV_ALLOW_INSECURE_HTTP, False, _parse_bool, _check_bool
        )
        queue = self._get(
            "max_queue_size",
            ENV_MAX_QUEUE_SIZE,
            DEFAULT_MAX_QUEUE_SIZE,
            _parse_int,
            _count(1, 10**7),
        )
        batch = self._get(
            "max_export_batch_size", ENV_MAX_EXPORT_BATCH_SIZE, 512, _parse_int, _count(1, 10**7)
        )
        if batch > queue:
            batch_given = self._explicit.get("max_export_batch_size") is not None or bool(
                (self._env.get(ENV_MAX_EXPORT_BATCH_SIZE) or "").strip()
            )
            if batch_given:
                raise ConfigurationError(
                    f"max_export_batch_size / {ENV_MAX_EXPORT_BATCH_SIZE} ({batch}) is larger "
                    f"than max_queue_size / {ENV_MAX_QUEUE_SIZE} ({queue}); allowed: at most "
                    "the queue size"
                )
            batch = queue
        config = GreenflashConfig(
            api_key=api_key,
            product_id=product_id,
            base_url=base_url,
            custom_headers=MappingProxyType(dict(headers)),
            enabled=enabled,
            dry_run=dry_run,
            allow_insecure_http=allow_insecure,
            timeout_seconds=self._get(
                "timeout_seconds", ENV_TIMEOUT, 10.0, _parse_millis, _seconds(0.001, 600.0)
            ),
            schedule_delay_seconds=self._get(
                "schedule_delay_seconds",
                ENV_SCHEDULE_DELAY,
                1.0,
                _parse_millis,
                _seconds(0.001, 3600.0),
            ),
            send_delay_seconds=self._get(
                "send_delay_seconds",
                ENV_SEND_DELAY,
                0.005,
                _parse_millis,
                _seconds(0.0, 3600.0),
            ),
            max_queue_size=queue,
            max_queue_bytes=self._get(
                "max_queue_bytes",
                ENV_MAX_QUEUE_BYTES,
                DEFAULT_MAX_QUEUE_BYTES,
                _parse_int,
                _count(1024, 2**40),
            ),
            max_export_batch_size=batch,
            export_timeout_seconds=self._get(
                "export_timeout_seconds",
                ENV_EXPORT_TIMEOUT,
                300.0,
                _parse_millis,
                _seconds(0.001, 86400.0),
            ),
            max_concurrency=self._get(
                "max_concurrency", ENV_MAX_CONCURRENCY, 64, _parse_int, _count(1, 1024)
            ),
            linger_seconds=self._get(
                "linger_seconds", ENV_LINK_LINGER, 300.0, _parse_millis, _seconds(0.0, 3600.0)
            ),
            max_waiting=self._get(
                "max_waiting", ENV_LINK_MAX_WAITING, 100_000, _parse_int, _count(0, 10**7)
            ),
            max_traces=self._get(
                "max_traces", ENV_LINK_MAX_TRACES, 4096, _parse_int, _count(1, 10**7)
            ),
            aliases=self._aliases(),
            spool_dir=self._get("spool_dir", ENV_SPOOL_DIR, None, _as_text, _check_spool_dir),
            spool_max_events=self._get(
                "spool_max_events", ENV_SPOOL_MAX_EVENTS, 100_000, _parse_int, _count(1, 10**8)
            ),
            http_client=self._get(
                "http_client", ENV_HTTP_CLIENT, "aiohttp", _parse_choice, _check_http_client
            ),
            handle_sigterm=self._get(
                "handle_sigterm", ENV_HANDLE_SIGTERM, True, _parse_bool, _check_bool
            ),
            termination_timeout_seconds=self._get(
                "termination_timeout_seconds",
                ENV_TERMINATION_TIMEOUT,
                5.0,
                _parse_millis,
                _seconds(0.0, 600.0),
            ),
            capture_conversations=self._get(
                "capture_conversations", ENV_CAPTURE_CONVERSATIONS, False, _parse_bool, _check_bool
            ),
            capture_message_content=self._get(
                "capture_message_content",
                ENV_CAPTURE_MESSAGE_CONTENT,
                True,
                _parse_bool,
                _check_bool,
            ),
            max_message_bytes=self._get(
                "max_message_bytes", ENV_MAX_MESSAGE_BYTES, 32_768, _parse_int, _count(64, 10**7)
            ),
            default_external_user_id=self._get(
                "default_external_user_id",
                ENV_DEFAULT_EXTERNAL_USER_ID,
                None,
                _as_text,
                _check_external_user_id,
            ),
            redact_message=_check_redactor(self._explicit.get("redact_message")),
        )
        check_transport_security(
            config,
            self._env,
            base_url_name=self._name("base_url", ENV_BASE_URL),
            insecure_variable=ENV_ALLOW_INSECURE_HTTP,
            http_client_variable=ENV_HTTP_CLIENT,
        )
        return config


def _as_text(name: str, raw: str) -> str:
    return raw


HTTP_CLIENTS = ("aiohttp", "httpx")


def _parse_choice(name: str, raw: str) -> str:
    return raw.lower()


def _check_http_client(name: str, value: str) -> str:
    value = value.lower() if isinstance(value, str) else value
    if value not in HTTP_CLIENTS:
        raise ConfigurationError(
            f"{name} is {value!r}; allowed: {' or '.join(repr(c) for c in HTTP_CLIENTS)}"
        )
    return value


def _parse_bool(name: str, raw: str) -> bool:
    folded = raw.strip().lower()
    if folded in ("true", "1", "yes", "on"):
        return True
    if folded in ("false", "0", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; allowed: true or false")


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None


def _parse_millis(name: str, raw: str) -> float:
    try:
        millis = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number of milliseconds") from None
    if millis != millis:
        raise ConfigurationError(f"{name}={raw!r} is not a number of milliseconds")
    return millis / 1000.0


def _require_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigurationError(f"{name} has type {type(value).__name__}; allowed: a number")
    return value


def _seconds(low: float, high: float) -> Callable[[str, Any], float]:
    """Range check for a duration held in seconds (environment variables give milliseconds)."""

    def check(name: str, value: Any) -> float:
        seconds = float(_require_number(name, value))
        if low <= seconds <= high:
            return seconds
        if name.startswith("GREENFLASH_"):
            raise ConfigurationError(
                f"{name}={seconds * 1000:g} is out of range; "
                f"allowed: {low * 1000:g} to {high * 1000:g} milliseconds"
            )
        raise ConfigurationError(
            f"{name}={seconds:g} is out of range; allowed: {low:g} to {high:g} seconds"
        )

    return check


def _count(low: int, high: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        number = _require_number(name, value)
        if number != int(number) or not low <= number <= high:
            raise ConfigurationError(
                f"{name}={number:g} is out of range; allowed: a whole number from {low} to {high}"
            )
        return int(number)

    return check


def _check_key(name: str, value: object) -> str | None:
    """The key goes into a header: a string of visible ASCII. Never echoed in the error."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} has type {type(value).__name__}; allowed: a string")
    if not all(32 < ord(character) < 127 for character in value.strip()):
        raise ConfigurationError(
            f"{name} contains characters a header cannot carry; allowed: visible ASCII"
        )
    return value


_LIBRARY_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "authorization": f"carries the API key (api_key / {ENV_API_KEY})",
        "content-type": "is set by the library (the body is application/json)",
    }
)
_FRAMING_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "expect",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers HTTP itself sets from the request: a custom value would break every send."""

_TOKEN_CHARACTERS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_ALLOWED_HEADER_NAMES = "allowed: letters, digits and !#$%&'*+-.^_`|~"


def _check_headers(name: str, value: object) -> Mapping[str, str]:
    """Extra headers sent with every request. Messages name a header, never its value (custom
    headers often carry tokens)."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} has type {type(value).__name__}; allowed: a mapping")
    for header, header_value in value.items():
        _check_header_name(name, header)
        problem = _header_value_problem(header_value)
        if problem:
            raise ConfigurationError(
                f"{name}: the value of {header!r} {problem}; allowed: printable ASCII "
                "(spaces and tabs only between other characters)"
            )
    return value


def _check_header_name(name: str, header: object) -> None:
    if not isinstance(header, str):
        raise ConfigurationError(
            f"{name}: a header name has type {type(header).__name__}; allowed: a string"
        )
    if not header or not set(header) <= _TOKEN_CHARACTERS:  # never echoed: it may be a secret
        raise ConfigurationError(
            f"{name}: a header name ({_shape(header)}) is not a header name; "
            f"{_ALLOWED_HEADER_NAMES}"
        )
    folded = header.lower()
    if folded in _LIBRARY_HEADERS:
        raise ConfigurationError(
            f"{name}: {header!r} {_LIBRARY_HEADERS[folded]}; allowed: other headers"
        )
    if folded in _FRAMING_HEADERS:
        raise ConfigurationError(
            f"{name}: {header!r} is set by HTTP itself for each request; allowed: other headers"
        )


def _shape(header: str) -> str:
    """What is wrong with an invalid header name, without any of its characters."""
    if not header:
        return "empty"
    bad = [c for c in header if c not in _TOKEN_CHARACTERS]
    kinds = sorted(
        {
            "a non-ASCII character"
            if not c.isascii()
            else "a control character"
            if not c.isprintable()
            else "a space"
            if c == " "
            else "a separator such as ':' or '='"
            for c in bad
        }
    )
    return f"{len(header)} characters, with {' and '.join(kinds)}"


def _header_value_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"has type {type(value).__name__}, not str"
    if "\r" in value or "\n" in value:
        return "contains a line break"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return "contains a control character"
    if not value.isascii():
        return "contains non-ASCII characters"
    if value != value.strip(" \t"):
        return "starts or ends with a space or tab"
    return None


def _check_bool(name: str, value: object) -> bool:
    if isinstance(value, int) and value in (0, 1):  # bool is an int too
        return bool(value)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} has type {type(value).__name__}; allowed: True or False")
    return value


def _check_spool_dir(name: str, value: object) -> str | None:
    """Checked without touching the disk (the spool creates its directory on first use): the
    path is a directory, or can become one, that this process may create files in."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{name} has type {type(value).__name__}; allowed: a directory path (str)"
        )
    if not value:
        return value
    path = Path(value)
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    allowed = "allowed: a directory, or a path where one can be created"
    if not existing.is_dir():
        if existing == path:
            raise ConfigurationError(f"{name}: {value!r} exists and is not a directory; {allowed}")
        raise ConfigurationError(
            f"{name}: {str(existing)!r} is not a directory, so {value!r} cannot be created "
            f"under it; {allowed}"
        )
    # Not writable now is not refused: a volume may be mounted or given its owner after start
    # (and a read-only root file system must not stop the app). The spool then says so at its
    # first use and events stay in memory.
    return value


def _check_aliases(name: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} has type {type(value).__name__}; allowed: a mapping")
    aliases: dict[str, str] = {}
    for source, target in value.items():
        if not isinstance(source, str) or not source.strip() or target not in attr.ID_KEYS:
            raise ConfigurationError(
                f"{name}: {source!r} -> {target!r} is not 'attribute -> greenflash id key'; "
                f"allowed targets: {', '.join(attr.ID_KEYS)}"
            )
        aliases[source] = target
    return aliases


def _check_external_user_id(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ConfigurationError(
            f"{name} is not usable as an externalUserId; allowed: a non-empty string of at "
            "most 256 characters"
        )
    return value.strip()


def _check_redactor(value: object) -> Redactor | None:
    if value is None or callable(value):
        return value
    raise ConfigurationError(
        f"redact_message has type {type(value).__name__}; allowed: a function "
        "(content, role) -> str | None"
    )


def _check_uuid(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        raise ConfigurationError(
            f"{name} is not a UUID; allowed: a Greenflash product id such as "
            "'123e4567-e89b-12d3-a456-426614174000'"
        ) from None


def _parse_headers(name: str, raw: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        header, separator, value = line.partition(":")
        if not separator or not header.strip() or any(c.isspace() for c in header.strip()):
            raise ConfigurationError(
                f"{name} line {number} is not 'Name: value'; allowed: one 'Name: value' per line"
            )
        headers[header.strip()] = value.strip()
    return headers


def _parse_aliases(name: str, raw: str) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        source, separator, target = item.partition("=")
        if not separator or not source.strip() or target.strip() not in attr.ID_KEYS:
            raise ConfigurationError(
                f"{name} item {item.strip()!r} is not 'attribute=greenflash.key'; allowed "
                f"targets: {', '.join(attr.ID_KEYS)}"
            )
        aliases[source.strip()] = target.strip()
    return aliases
