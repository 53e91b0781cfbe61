"""The local Events API server in ``otel_greenflash.testing``, spoken to with plain httpx."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.common import PRODUCT_ID

VALID = {"eventType": "signup_completed", "productId": PRODUCT_ID, "value": "1"}


def post(server: EventsApiServer, body: Any, key: str | None = None) -> httpx.Response:
    return httpx.post(
        server.base_url + "/events",
        json=body,
        headers={"Authorization": f"Bearer {key or server.api_key}"},
        timeout=5,
    )


def test_accepts_a_valid_event_like_the_api(server: EventsApiServer) -> None:
    response = post(server, VALID)
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["eventId"]
    assert server.events == [VALID]


def test_rejects_a_wrong_key_with_401(server: EventsApiServer) -> None:
    assert post(server, VALID, key="nope").status_code == 401
    assert server.events == []


def test_rejects_contract_violations_with_422_naming_the_field(server: EventsApiServer) -> None:
    response = post(server, {**VALID, "influence": "great"})
    assert response.status_code == 422
    assert "influence" in response.json()["error"]
    assert server.requests[-1].errors


def test_rejects_non_json_with_400(server: EventsApiServer) -> None:
    response = httpx.post(
        server.base_url + "/events",
        content=b"{not json",
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_deduplicates_by_insert_id(server: EventsApiServer) -> None:
    first = post(server, {**VALID, "insertId": "once"})
    second = post(server, {**VALID, "insertId": "once"})
    assert first.json()["eventId"] == second.json()["eventId"]
    assert len(server.events) == 1
    assert server.duplicates == 1


def test_injected_status_with_retry_after_then_normal(server: EventsApiServer) -> None:
    server.inject(Fault(status=429, retry_after="2"), times=2)
    assert [post(server, VALID).status_code for _ in range(3)] == [429, 429, 200]
    assert server.requests[0].status == 429
    assert len(server.events) == 1


def test_injected_retry_after_header_is_sent(server: EventsApiServer) -> None:
    server.inject(Fault(status=503, retry_after="3", headers={"retry-after-ms": "3000"}))
    response = post(server, VALID)
    assert response.headers["Retry-After"] == "3"
    assert response.headers["retry-after-ms"] == "3000"


def test_injected_drop_closes_the_connection_without_answer(server: EventsApiServer) -> None:
    server.inject(Fault(drop=True))
    with pytest.raises(httpx.TransportError):
        post(server, VALID)
    assert server.requests[0].status is None
    assert post(server, VALID).status_code == 200


def test_injected_delay_outlasts_a_short_client_timeout(server: EventsApiServer) -> None:
    server.inject(Fault(delay_seconds=1.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/events", json=VALID, timeout=0.2)


def test_never_records_the_authorization_header(server: EventsApiServer) -> None:
    post(server, VALID)
    assert "authorization" not in server.requests[0].headers


def test_wait_for_events_times_out_with_false(server: EventsApiServer) -> None:
    assert server.wait_for_events(1, timeout_seconds=0.1) is False
    post(server, VALID)
    assert server.wait_for_events(1, timeout_seconds=1) is True


def test_fixture_is_available_to_users_tests_without_configuration(tmp_path: Path) -> None:
    test_file = tmp_path / "test_user_app.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import httpx

            def test_user(greenflash_server):
                body = {{"eventType": "t", "productId": "{PRODUCT_ID}", "value": "1"}}
                headers = {{"Authorization": "Bearer " + greenflash_server.api_key}}
                httpx.post(greenflash_server.base_url + "/events", json=body, headers=headers)
                assert greenflash_server.events == [body]
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
