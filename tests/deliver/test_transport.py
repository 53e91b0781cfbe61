"""The HTTP transport's own choices: proxies from the environment, dry-run output."""

from __future__ import annotations

import io
import json

import pytest

from otel_greenflash._deliver.transport import ConsoleTransport, proxy_for


def test_proxy_from_the_environment_like_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://www.greenflash.ai/api/v1/events") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_for("https://www.greenflash.ai/api/v1/events") == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "greenflash.ai")
    assert proxy_for("https://www.greenflash.ai/api/v1/events") is None


def test_console_transport_prints_one_json_line_per_event() -> None:
    stream = io.StringIO()
    outcome = ConsoleTransport(stream).send(b'{"eventType":"t"}')
    assert outcome.ok
    assert json.loads(stream.getvalue()) == {"eventType": "t"}


def test_every_transport_shares_one_tls_context() -> None:
    from otel_greenflash import GreenflashSpanProcessor

    processors = [
        GreenflashSpanProcessor(api_key="k", base_url="https://127.0.0.1:9/v1", http_client=client)
        for client in ("aiohttp", "httpx", "aiohttp")
    ]
    try:
        contexts = {
            id(processor._shared.engine._transport._connections._ssl_context)  # type: ignore[attr-defined]
            for processor in processors
        }
        assert len(contexts) == 1  # built once per process (≈ 30 ms of CPU each otherwise)
    finally:
        for processor in processors:
            processor.shutdown(1000)


def test_the_dry_run_names_the_endpoint_of_messages_and_ratings_on_each_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from otel_greenflash import GreenflashConfig
    from otel_greenflash._deliver.engine import DeliveryEngine
    from otel_greenflash._deliver.http import transport_for
    from otel_greenflash._stats import DeliveryStats
    from tests.support.api_requests import a_messages_request, a_rating, an_event
    from tests.support.common import PRODUCT_ID

    config = GreenflashConfig.resolve(
        {}, api_key="gf-secret-key", dry_run=True, product_id=PRODUCT_ID
    )
    engine = DeliveryEngine(transport_for(config), DeliveryStats())
    event, messages, rating = an_event("e-1"), a_messages_request(), a_rating(4)
    try:
        engine.submit([event, messages, rating])
        assert engine.flush(60.0)
    finally:
        engine.shutdown(5)

    out = capsys.readouterr().out
    lines = sorted((json.loads(line) for line in out.splitlines()), key=json.dumps)
    assert lines == sorted(
        [
            event.body,  # an event's line is its body, as it always was
            {"endpoint": "messages", "body": messages.body},
            {"endpoint": "ratings", "body": rating.body},
        ],
        key=json.dumps,
    )
    assert "gf-secret-key" not in out
