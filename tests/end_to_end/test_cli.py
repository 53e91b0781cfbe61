"""The ``otel-greenflash`` command, run as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID
from tests.support.processes import clean_env, command, run

KEY_TAIL = "9z9z"


def server_env(server: EventsApiServer, **extra: str) -> dict[str, str]:
    settings = {
        "GREENFLASH_API_KEY": server.api_key,
        "GREENFLASH_BASE_URL": server.base_url,
        "GREENFLASH_PRODUCT_ID": PRODUCT_ID,
    }
    return clean_env(**{**settings, **extra})


def test_check_summarises_with_the_key_redacted_and_probes_the_url(
    server: EventsApiServer,
) -> None:
    result = run([command("otel-greenflash"), "check"], server_env(server))
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.api_key not in result.stdout
    assert f"{PRODUCT_ID} (valid UUID)" in result.stdout
    assert "key accepted" in result.stdout
    assert server.events == []  # the probe creates nothing


def test_check_reports_a_rejected_key(server: EventsApiServer) -> None:
    secret = "gf_wrong_key_000000" + KEY_TAIL
    env = server_env(server, GREENFLASH_API_KEY=secret)
    result = run([command("otel-greenflash"), "check"], env)
    assert result.returncode == 1
    assert "API key was rejected" in result.stdout
    assert secret not in result.stdout
    assert f"****{KEY_TAIL}" in result.stdout


def test_check_reports_an_unreachable_url_and_a_bad_product_id() -> None:
    env = clean_env(GREENFLASH_API_KEY="k", GREENFLASH_BASE_URL="http://127.0.0.1:9/api/v1")
    result = run([command("otel-greenflash"), "check"], env)
    assert result.returncode == 1
    assert "unreachable" in result.stdout
    env["GREENFLASH_PRODUCT_ID"] = "not-a-uuid"
    result = run([command("otel-greenflash"), "check"], env)
    assert result.returncode == 2
    assert "GREENFLASH_PRODUCT_ID is not a UUID" in result.stderr


def test_send_delivers_one_event(server: EventsApiServer) -> None:
    result = run(
        [
            command("otel-greenflash"),
            "send",
            "upgrade_purchased",
            "149",
            "--value-type",
            "currency",
            "--external-conversation-id",
            "chat-1",
            "--property",
            "plan=pro",
        ],
        server_env(server),
    )
    assert result.returncode == 0, result.stderr
    [event] = server.events
    assert event["value"] == "149.00"  # currency: written with two decimals
    assert event["properties"] == {"plan": "pro"}
    assert event["externalConversationId"] == "chat-1"
    assert "sent 'upgrade_purchased'" in result.stdout


def test_send_dry_run_prints_the_body_without_a_key() -> None:
    env = clean_env(GREENFLASH_PRODUCT_ID=PRODUCT_ID)
    result = run([command("otel-greenflash"), "send", "signup", "1", "--dry-run"], env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["eventType"] == "signup"
    assert body["productId"] == PRODUCT_ID


def test_send_rejects_bad_input_with_the_rule() -> None:
    env = clean_env(GREENFLASH_PRODUCT_ID=PRODUCT_ID, GREENFLASH_API_KEY="k")
    result = run([command("otel-greenflash"), "send", "x", "1", "--conversation-id", "nope"], env)
    assert result.returncode == 2
    assert "greenflash.conversation.id" in result.stderr
    assert "UUID" in result.stderr


def test_serve_prints_events_as_they_arrive() -> None:
    probe = EventsApiServer()
    port = probe.port
    probe.stop()
    process = subprocess.Popen(
        [command("otel-greenflash"), "serve", "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        assert f"http://127.0.0.1:{port}/api/v1" in banner
        body = {"eventType": "t", "productId": PRODUCT_ID, "value": "1"}
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/events",
            json=body,
            headers={"Authorization": "Bearer gf-local-test-key"},
            timeout=10,
        )
        assert response.status_code == 200
        assert process.stdout is not None
        assert json.loads(process.stdout.readline()) == body
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_module_entry_point_works_too() -> None:
    result = run([sys.executable, "-m", "otel_greenflash.cli", "--version"], clean_env())
    assert result.stdout.startswith("otel-greenflash ")


def test_send_to_an_unreachable_api_gives_up_at_its_timeout_and_says_why() -> None:
    """Issue 20: a person's command says what it waits for and gives up within --timeout
    (before: silent for up to 300 s against a listener that never answers)."""
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/v1"
        env = clean_env(
            GREENFLASH_API_KEY="gf-test-key",
            GREENFLASH_BASE_URL=url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        )
        command_line = [command("otel-greenflash"), "send", "signup", "1", "--timeout", "2"]
        result = subprocess.run(command_line, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"sending 'signup' to {url}/events, retrying for up to 2 s (--timeout)"
    )
    assert result.stderr.splitlines()[-1].startswith("not sent: ")
    assert "gf-test-key" not in result.stderr + result.stdout


def test_send_refuses_a_timeout_that_is_not_a_number_of_seconds() -> None:
    env = clean_env(GREENFLASH_API_KEY="gf-test-key", GREENFLASH_PRODUCT_ID=PRODUCT_ID)
    for timeout in ("nan", "inf", "0", "-1"):
        result = run([command("otel-greenflash"), "send", "x", "1", "--timeout", timeout], env)
        assert result.returncode == 2, timeout
        assert "--timeout must be a number of seconds between 0 and 86400" in result.stderr
