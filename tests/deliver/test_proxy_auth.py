"""Proxy credentials from ``HTTP_PROXY``/``HTTPS_PROXY`` reach an authenticating forward proxy,
encoded the same way by either HTTP client: events go through a small proxy written here (not
the library's) that answers 407 to a request without the right ``Proxy-Authorization`` and
forwards the others to the receiver; for an https URL it records the ``CONNECT``."""

from __future__ import annotations

import base64
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver

USER, PASSWORD = "proxy-user", "pr0xy-pässword"  # a non-ASCII password: httpx encodes UTF-8
EXPECTED = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PROXY_URL_USERINFO = "proxy-user:pr0xy-p%C3%A4ssword"


class AuthenticatingProxy(ThreadingHTTPServer):
    """A plain-HTTP forward proxy (absolute-form requests) that checks Basic credentials."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[str | None] = []
        self.forwarded = 0
        self.tunnels: list[tuple[str, str | None]] = []


class _ProxyHandler(BaseHTTPRequestHandler):
    server: AuthenticatingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        """Record the tunnel asked for and its credentials; open none (no TLS server here)."""
        self.server.tunnels.append((self.path, self.headers.get("Proxy-Authorization")))
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        credentials = self.headers.get("Proxy-Authorization")
        self.server.seen.append(credentials)
        if credentials != EXPECTED:
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = urlsplit(self.path)
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in ("proxy-authorization", "proxy-connection", "connection")
        }
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        try:
            upstream.request("POST", target.path, body=body, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        self.server.forwarded += 1
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthenticatingProxy]:
    """The proxy, with no proxy variable of the environment in the way (each test sets one)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = AuthenticatingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def deliver_one(
    receiver: Receiver, http_client: str, base_url: str | None = None, flush_millis: int = 10_000
) -> dict[str, object]:
    processor = GreenflashSpanProcessor(
        api_key=receiver.api_key,
        base_url=base_url or receiver.base_url,
        product_id=PRODUCT_ID,
        http_client=http_client,
        handle_sigterm=False,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("proxy").start_as_current_span("checkout") as span:
        span.set_attributes({"greenflash.event.type": "upgrade", "greenflash.event.value": "1"})
    processor.force_flush(flush_millis)
    stats = dict(processor.stats())
    processor.shutdown(1_000)
    return stats


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_events_reach_an_authenticating_proxy_with_its_credentials(
    http_client: str, proxy: AuthenticatingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{PROXY_URL_USERINFO}@127.0.0.1:{proxy.server_port}")
    with Receiver() as receiver:
        stats = deliver_one(receiver, http_client)
        assert receiver.wait_for(1, timeout=10), (stats, proxy.seen)
        assert [event["eventType"] for event in receiver.accepted] == ["upgrade"]
    assert proxy.forwarded == 1
    assert proxy.seen == [EXPECTED]


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_a_proxy_refusing_the_credentials_fails_the_delivery_and_says_so(
    http_client: str, proxy: AuthenticatingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:wrong@127.0.0.1:{proxy.server_port}")
    with Receiver() as receiver:
        stats = deliver_one(receiver, http_client)
        assert receiver.accepted == []
    wrong = "Basic " + base64.b64encode(b"proxy-user:wrong").decode()
    assert proxy.seen == [wrong]  # 407 is not retried
    assert proxy.forwarded == 0
    assert (stats["sent"], stats["failed"]) == (0, 1), stats


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_an_https_url_sends_the_credentials_on_the_connect_only(
    http_client: str, proxy: AuthenticatingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://{PROXY_URL_USERINFO}@127.0.0.1:{proxy.server_port}")
    with Receiver() as receiver:
        https_url = f"https://127.0.0.1:{receiver.port}/v1"
        deliver_one(receiver, http_client, base_url=https_url, flush_millis=1_500)
        assert receiver.accepted == []
    assert proxy.tunnels, "no CONNECT reached the proxy"
    assert set(proxy.tunnels) == {(f"127.0.0.1:{receiver.port}", EXPECTED)}
    assert proxy.seen == []  # nothing was sent to the proxy in clear
