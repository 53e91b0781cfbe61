"""A search for secrets: drive every failure path with every logger at DEBUG, then look for the
API key, proxy and base-URL passwords (never anywhere) and event values (never in logs, reprs,
errors or stats) in everything the library lets out.

The spool is the one place event values are expected: it stores event bodies (files are 0600).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_greenflash import (
    AuthenticationError,
    ConfigurationError,
    EventRejectedError,
    GreenflashSpanExporter,
    GreenflashSpanProcessor,
    PermissionDeniedError,
    RetriesExhaustedError,
)
from otel_greenflash._config import GreenflashConfig
from otel_greenflash._event import BusinessEvent
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Fault, FaultProxy, Receiver
from tests.support.processes import clean_env, run

KEY = "gf-SECRET-KEY-1234567890abcdef"
PROXY_PASSWORD = "PROXY-PASS-5150"
URL_PASSWORD = "URL-PASS-8086"
NEVER_ANYWHERE = (KEY, PROXY_PASSWORD, URL_PASSWORD)
pytestmark = pytest.mark.receiver(api_key=KEY)

PROPERTY = "PROPVALUE-4111"
VALUE = "VALUE-777"
USER = "USER-EXT-31337"
INSERT_ID = "ORDER-INSERT-4242"
VALUES = (PROPERTY, VALUE, USER, INSERT_ID)
"""Application data: in the spool's event bodies, nowhere else."""

EVENT = {
    "greenflash.event.type": "checkout",
    "greenflash.event.value": VALUE,
    "greenflash.event.properties.card": PROPERTY,
    "greenflash.user.external_id": USER,
    "greenflash.event.insert_id": INSERT_ID,
}
EVENT_WITHOUT_INSERT_ID = {k: v for k, v in EVENT.items() if k != "greenflash.event.insert_id"}

LOGGERS = ("", "otel_greenflash", "httpx", "httpcore", "aiohttp", "asyncio", "py.warnings")


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Every record of every logger (root included, warnings routed in) as formatted text,
    tracebacks included."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield text
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- what gets out


@dataclass
class Run:
    """What one processor let out: texts by where they were found, and what it reported."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[Exception, list[BusinessEvent]]] = field(default_factory=list)
    drops: list[tuple[list[BusinessEvent], str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def on_error(self, error: Exception, events: Sequence[BusinessEvent]) -> None:
        self.errors.append((error, list(events)))

    def on_drop(self, events: Sequence[BusinessEvent], reason: str) -> None:
        self.drops.append((list(events), reason))

    def collect(self, *objects: object) -> None:
        for thing in objects:
            self.texts.append((f"repr({type(thing).__name__})", repr(thing)))
        for error, events in self.errors:
            self.texts += [
                ("repr(on_error exception)", repr(error)),
                ("str(on_error exception)", str(error)),
                ("repr(on_error events)", repr(events)),
            ]
        for events, reason in self.drops:
            self.texts.append(("repr(on_drop events)", f"{events!r} {reason}"))
        self.texts.append(("stats()", repr(self.stats)))


def drive(
    base_url: str,
    *,
    events: int = 1,
    attributes: dict[str, Any] | None = None,
    flush_millis: int = 10_000,
    shutdown_millis: int = 2_000,
    **settings: Any,
) -> Run:
    """One processor (dry run off) at ``base_url``: ``events`` event spans, flush, shutdown."""
    result = Run()
    options: dict[str, Any] = {
        "api_key": KEY,
        "base_url": base_url,
        "product_id": PRODUCT_ID,
        "dry_run": False,
        "schedule_delay_seconds": 0.05,
        "export_timeout_seconds": 1.0,
        "handle_sigterm": False,
        **settings,
    }
    processor = GreenflashSpanProcessor(on_error=result.on_error, on_drop=result.on_drop, **options)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("secrets")
    for _ in range(events):
        with tracer.start_as_current_span("checkout") as span:
            span.set_attributes(attributes if attributes is not None else EVENT)
    processor.force_flush(flush_millis)
    result.stats = dict(processor.stats())
    processor.shutdown(shutdown_millis)
    result.texts.append(("stats() after shutdown", repr(processor.stats())))
    result.collect(processor, processor.config)
    return result


def assert_nothing_leaks(
    run_: Run, log: io.StringIO, captured: pytest.CaptureFixture[str], *, values: bool = True
) -> None:
    out, err = captured.readouterr()
    places = [*run_.texts, ("log", log.getvalue()), ("stdout", out), ("stderr", err)]
    searched = (*NEVER_ANYWHERE, *VALUES) if values else NEVER_ANYWHERE
    leaks = [(where, secret) for where, text in places for secret in searched if secret in text]
    assert leaks == [], leaks
    assert log.getvalue(), "nothing was logged: the DEBUG capture is not working"


def error_types(run_: Run) -> set[type[Exception]]:
    return {type(error) for error, _ in run_.errors}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- failure paths


def test_401_key_rejected(debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]) -> None:
    with Receiver(api_key="another-key-entirely") as other:
        result = drive(other.base_url)
    assert error_types(result) == {AuthenticationError}
    assert "HTTP 401" in debug_log.getvalue()
    assert_nothing_leaks(result, debug_log, capfd)


@pytest.mark.parametrize(
    ("status", "expected"), [(403, PermissionDeniedError), (400, EventRejectedError)]
)
def test_403_and_400_refusals(
    receiver: Receiver,
    debug_log: io.StringIO,
    capfd: pytest.CaptureFixture[str],
    status: int,
    expected: type[Exception],
) -> None:
    receiver.inject(Fault.status(status))
    result = drive(receiver.base_url)
    assert error_types(result) == {expected}
    assert_nothing_leaks(result, debug_log, capfd)


def test_422_refusal_with_the_httpx_client(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    receiver.inject(Fault.status(422))
    result = drive(receiver.base_url, http_client="httpx")
    assert error_types(result) == {EventRejectedError}
    assert_nothing_leaks(result, debug_log, capfd)


def test_429_with_retry_after(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    receiver.inject(Fault.status(429, {"Retry-After": "30"}), times=5)
    result = drive(receiver.base_url, export_timeout_seconds=0.5)
    assert error_types(result) == {RetriesExhaustedError}
    assert_nothing_leaks(result, debug_log, capfd)


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_500_retried_then_exhausted(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str], client: str
) -> None:
    receiver.inject(Fault.status(500), times=100)
    result = drive(receiver.base_url, http_client=client)
    assert error_types(result) == {RetriesExhaustedError}
    assert result.stats["retried"] >= 1
    assert_nothing_leaks(result, debug_log, capfd)


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_connection_refused(
    debug_log: io.StringIO, capfd: pytest.CaptureFixture[str], client: str
) -> None:
    result = drive(f"http://127.0.0.1:{closed_port()}/v1", http_client=client)
    assert error_types(result) == {RetriesExhaustedError}
    assert_nothing_leaks(result, debug_log, capfd)


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_timeout_on_a_server_that_hangs(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str], client: str
) -> None:
    receiver.inject(Fault.hang(), times=20)
    result = drive(
        receiver.base_url, http_client=client, timeout_seconds=0.2, export_timeout_seconds=0.5
    )
    assert error_types(result) == {RetriesExhaustedError}
    assert_nothing_leaks(result, debug_log, capfd)


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers 500, then 400, with the whole request (headers and body) in the response."""

    protocol_version = "HTTP/1.1"
    statuses: ClassVar[list[int]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        echo = json.dumps({"headers": dict(self.headers), "body": raw.decode()}).encode()
        status = self.statuses.pop(0) if self.statuses else 400
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)


@contextlib.contextmanager
def echo_server(statuses: list[int]) -> Iterator[str]:
    handler = type("Echo", (_EchoHandler,), {"statuses": list(statuses)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_a_response_body_echoing_the_request(
    debug_log: io.StringIO, capfd: pytest.CaptureFixture[str], client: str
) -> None:
    with echo_server([500]) as base_url:
        result = drive(base_url, http_client=client, export_timeout_seconds=5.0)
    assert error_types(result) == {EventRejectedError}  # 500, retried, then 400
    assert_nothing_leaks(result, debug_log, capfd)


def test_invalid_events(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = [
        {**EVENT, "greenflash.event.value_type": PROPERTY},
        {**EVENT, "greenflash.event.influence": VALUE},
        {**EVENT, "greenflash.event.quality_impact_score": USER},
        {**EVENT, "greenflash.event.force_sample": INSERT_ID},
    ]
    processor_runs = [drive(receiver.base_url, attributes=attributes) for attributes in bad]
    assert all(run_.stats["invalid"] == 1 for run_ in processor_runs)
    assert "not sent" in debug_log.getvalue()
    merged = Run(texts=[text for run_ in processor_runs for text in run_.texts])
    assert_nothing_leaks(merged, debug_log, capfd)


def test_queue_full(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    receiver.inject(Fault.hang(), times=100)
    result = drive(
        receiver.base_url,
        events=50,
        max_queue_size=1,
        max_batch_size=1,
        timeout_seconds=0.3,
        export_timeout_seconds=0.3,
        flush_millis=100,
        shutdown_millis=100,
    )
    assert result.stats["dropped"].get("queue_full", 0) >= 1
    assert "queue_full" in {reason for _, reason in result.drops}
    assert_nothing_leaks(result, debug_log, capfd)


def test_shutdown_with_undelivered_events(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    receiver.inject(Fault.hang(), times=100)
    result = drive(
        receiver.base_url,
        events=3,
        timeout_seconds=30.0,
        export_timeout_seconds=60.0,
        flush_millis=200,
        shutdown_millis=200,
    )
    assert "shutdown" in {reason for _, reason in result.drops}
    assert_nothing_leaks(result, debug_log, capfd)


def test_spool_warnings_and_files(
    receiver: Receiver,
    debug_log: io.StringIO,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    receiver.inject(Fault.status(500), times=1000)
    result = drive(
        receiver.base_url,
        events=5,
        attributes=EVENT_WITHOUT_INSERT_ID,
        spool_dir=str(spool),
        spool_max_events=2,
        export_timeout_seconds=0.3,
        flush_millis=3_000,
    )
    assert result.stats["spool"]["evicted"] >= 1
    assert_nothing_leaks(result, debug_log, capfd)
    files = {path.name: path.read_bytes() for path in spool.iterdir() if path.is_file()}
    assert any(name.endswith(".db") for name in files)
    everything = b"".join(files.values())
    assert PROPERTY.encode() in everything  # the bodies are there, so the search is real
    for secret in NEVER_ANYWHERE:
        assert secret.encode() not in everything


def test_proxy_credentials(
    receiver: Receiver,
    debug_log: io.StringIO,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver.inject(Fault.status(500), times=100)
    with FaultProxy.in_front_of(receiver) as proxy:
        monkeypatch.setenv(
            "HTTP_PROXY", f"http://proxy-user:{PROXY_PASSWORD}@{proxy.host}:{proxy.port}"
        )
        # the events host is loopback, so is the proxy: plain http is allowed
        result = drive(receiver.base_url, http_client="httpx")
        assert proxy.connections_opened >= 1  # the requests really went through the proxy
    assert error_types(result) == {RetriesExhaustedError}
    assert_nothing_leaks(result, debug_log, capfd)


def test_exporter(
    receiver: Receiver, debug_log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    receiver.inject(Fault.status(403))
    result = Run()
    exporter = GreenflashSpanExporter(
        KEY,
        PRODUCT_ID,
        receiver.base_url,
        on_error=result.on_error,
        dry_run=False,
        handle_sigterm=False,
        timeout_seconds=2.0,
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("secrets").start_as_current_span("checkout") as span:
        span.set_attributes(EVENT)
    exporter.force_flush(5_000)
    result.stats = dict(exporter.stats())
    exporter.shutdown(2_000)
    result.collect(exporter, exporter.config)
    assert error_types(result) == {PermissionDeniedError}
    assert_nothing_leaks(result, debug_log, capfd)


def test_the_repr_of_an_event_hides_a_custom_insert_id() -> None:
    event = BusinessEvent({"eventType": "checkout"}, INSERT_ID, "checkout")
    assert INSERT_ID not in repr(event)


# --------------------------------------------------------------------------- configuration


URLS_WITH_A_PASSWORD = [
    f"https://user:{URL_PASSWORD}@events.example.test/v1",
    f"https:/user:{URL_PASSWORD}@events.example.test/v1",
    f"user:{URL_PASSWORD}@events.example.test/v1",
    f"//user:{URL_PASSWORD}@events.example.test",
    f"https:///user:{URL_PASSWORD}@events.example.test",
    f"https://user:{URL_PASSWORD}%40events.example.test/v1",
    f"https://user%3A{URL_PASSWORD}%40events.example.test/v1",
    f"https://events.example.test:{URL_PASSWORD}/v1",
    f"https://events.example.test/v1?token={URL_PASSWORD}",
    f"https://events.example.test/v1#{URL_PASSWORD}",
    f"https://[{URL_PASSWORD}]/v1",
    f"https://[::1/{URL_PASSWORD}",
    f"ftp://user:{URL_PASSWORD}@events.example.test",
    f"http://user:{URL_PASSWORD}@events.example.test/v1",
    f"http://events.example.test/{URL_PASSWORD}",
]


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
def test_a_refused_base_url_is_never_quoted(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as as_argument:
        GreenflashConfig.resolve(environ={}, api_key=KEY, base_url=url)
    assert str(as_argument.value).startswith("base_url")
    monkeypatch.setenv("GREENFLASH_BASE_URL", url)
    with pytest.raises(ConfigurationError) as from_environment:
        GreenflashSpanProcessor(api_key=KEY)
    assert str(from_environment.value).startswith("GREENFLASH_BASE_URL")
    for error in (as_argument.value, from_environment.value):
        for text in (str(error), repr(error)):
            assert URL_PASSWORD not in text
            assert KEY not in text


PROXIES_WITH_A_PASSWORD = [
    ("HTTP_PROXY", f"http://proxy-user:{PROXY_PASSWORD}@proxy.example.test:3128"),
    ("http_proxy", f"proxy-user:{PROXY_PASSWORD}@proxy.example.test:3128"),
    ("ALL_PROXY", f"socks5://proxy-user:{PROXY_PASSWORD}@proxy.example.test:1080"),
    ("HTTP_PROXY", f"ftp://proxy-user:{PROXY_PASSWORD}@proxy.example.test"),
    ("HTTP_PROXY", f"http://proxy-user:{PROXY_PASSWORD}@proxy.example.test:99999"),
    ("HTTP_PROXY", f"http://proxy-user:{PROXY_PASSWORD}@proxy example.test"),
    ("HTTP_PROXY", f"proxy-user:{PROXY_PASSWORD}"),
]


@pytest.mark.parametrize(("variable", "proxy"), PROXIES_WITH_A_PASSWORD)
def test_a_refused_proxy_is_named_never_quoted(
    variable: str, proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, proxy)
    with pytest.raises(ConfigurationError) as caught:
        GreenflashSpanProcessor(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    assert str(caught.value).startswith(variable)
    for text in (str(caught.value), repr(caught.value)):
        assert PROXY_PASSWORD not in text
        assert KEY not in text


# --------------------------------------------------------------------------- the command


def cli(*args: str, **env: str) -> tuple[int, str]:
    result = run([sys.executable, "-m", "otel_greenflash.cli", *args], clean_env(**env))
    return result.returncode, result.stdout + result.stderr


def never_a_secret(output: str) -> None:
    for secret in NEVER_ANYWHERE:
        assert secret not in output, output


def test_the_cli_never_prints_a_secret(receiver: Receiver) -> None:
    """``check`` against the API, a wrong key and a closed port, and a rejected ``send``."""
    with Receiver(api_key="another-key-entirely") as other:
        outputs = [
            cli("check", GREENFLASH_API_KEY=KEY, GREENFLASH_BASE_URL=receiver.base_url),
            cli("check", GREENFLASH_API_KEY=KEY, GREENFLASH_BASE_URL=other.base_url),
            cli(
                "check",
                GREENFLASH_API_KEY=KEY,
                GREENFLASH_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1",
            ),
        ]
    receiver.inject(Fault.status(400))
    outputs.append(
        cli(
            "send",
            "checkout",
            VALUE,
            "--property",
            f"card={PROPERTY}",
            "--user-external-id",
            USER,
            GREENFLASH_API_KEY=KEY,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        )
    )
    assert [code for code, _ in outputs] == [0, 1, 1, 1]
    for _, text in outputs:
        never_a_secret(text)


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD[:8])
def test_the_cli_never_prints_a_secret_of_a_refused_base_url(url: str) -> None:
    code, text = cli("check", GREENFLASH_API_KEY=KEY, GREENFLASH_BASE_URL=url)
    assert code == 2, text
    never_a_secret(text)


@pytest.mark.parametrize(("variable", "proxy"), PROXIES_WITH_A_PASSWORD)
def test_the_cli_never_prints_a_secret_of_a_refused_proxy(variable: str, proxy: str) -> None:
    code, text = cli(
        "check",
        GREENFLASH_API_KEY=KEY,
        GREENFLASH_BASE_URL="http://127.0.0.1:9/v1",
        **{variable: proxy},
    )
    assert code == 2, text
    never_a_secret(text)
