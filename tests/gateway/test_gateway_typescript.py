"""The TypeScript example (examples/typescript) as a gateway client, end to end.

A real Node process using the OpenTelemetry JS SDK and its OTLP/HTTP protobuf exporters sends
one business event as span attributes and one as a log record to an ``otel-greenflash gateway``
subprocess, which delivers them to the local Events API server. Skipped only when Node, npm or
the example's installed packages (``npm ci`` in examples/typescript, done by ``.ci/run``) are
missing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID
from tests.support.ports import free_port
from tests.support.processes import clean_env, command, run
from tests.support.typescript_example import EXAMPLE, needs_node, summary_of

TOKEN = "ts-example-token-" + "7f3a9c"
STARTUP_SECONDS = 60
DELIVERY_SECONDS = 60


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    http_port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (stop accepting, finish what was acknowledged) and wait for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)


def wait_until_healthy(gateway: Gateway) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            pytest.fail(
                f"the gateway exited with {gateway.process.returncode}:\n{gateway.output()}"
            )
        try:
            if httpx.get(f"{gateway.endpoint}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the gateway did not answer /healthz:\n{gateway.output()}")


@pytest.fixture
def gateway(server: EventsApiServer, tmp_path: Path) -> Iterator[Gateway]:
    """``otel-greenflash gateway`` on loopback with a token, delivering to the local server."""
    yield from _gateway(server, tmp_path)


@pytest.fixture
def capturing_gateway(server: EventsApiServer, tmp_path: Path) -> Iterator[Gateway]:
    """The same, with conversation capture on."""
    yield from _gateway(server, tmp_path, GREENFLASH_CAPTURE_CONVERSATIONS="true")


def _gateway(server: EventsApiServer, tmp_path: Path, **extra: str) -> Iterator[Gateway]:
    log = tmp_path / "gateway.log"
    env = clean_env(
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_GATEWAY_TOKEN=TOKEN,
        **extra,
    )
    http_port = free_port()
    args = [
        command("otel-greenflash"),
        "gateway",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(free_port()),
        "--spool-dir",
        str(tmp_path / "spool"),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    started = Gateway(process=process, http_port=http_port, log=log)
    try:
        wait_until_healthy(started)
        yield started
    finally:
        started.stop()


def run_example(
    gateway: Gateway, conversation_id: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``npm run start`` in examples/typescript (compiles with tsc, then runs the service)."""
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=gateway.endpoint,
        CONVERSATION_ID=conversation_id,
        NPM_CONFIG_UPDATE_NOTIFIER="false",
        NPM_CONFIG_FUND="false",
        **extra,
    )
    return run(["npm", "run", "--silent", "start"], env, timeout=300, cwd=EXAMPLE)


@needs_node
def test_typescript_service_events_arrive_once_linked_to_the_conversation(
    server: EventsApiServer, gateway: Gateway
) -> None:
    conversation_id = f"chat-ts-{uuid.uuid4().hex[:12]}"
    summary = summary_of(
        run_example(
            gateway,
            conversation_id,
            OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer%20{TOKEN}",
        )
    )
    assert summary["conversationId"] == conversation_id

    assert server.wait_for_events(2, timeout_seconds=DELIVERY_SECONDS), (
        f"events at the server: {server.events}\ngateway output:\n{gateway.output()}"
    )
    # Once the gateway has stopped nothing more can arrive: what is there now is final.
    assert gateway.stop() in (0, -signal.SIGTERM), gateway.output()

    events = {event["eventType"]: event for event in server.events}
    assert sorted(events) == ["meeting_booked", "upgrade_purchased"]
    assert len(server.events) == 2
    assert server.duplicates == 0

    upgrade = events["upgrade_purchased"]
    assert upgrade["value"] == "149.00"
    assert upgrade["valueType"] == "currency"
    assert upgrade["influence"] == "positive"
    assert upgrade["properties"] == {"plan": "pro", "seats": 3}
    assert upgrade["insertId"] == f"otel-{summary['traceId']}-{summary['upgradeSpanId']}"

    meeting = events["meeting_booked"]
    assert meeting["value"] == "1"
    assert meeting["valueType"] == "numeric"  # `count` is sent as numeric
    assert meeting["influence"] == "positive"
    assert meeting["properties"] == {"channel": "chat"}
    assert meeting["insertId"] != upgrade["insertId"]

    for event in (upgrade, meeting):
        # The id is only on the root span: each event is linked through its trace.
        assert event["externalConversationId"] == conversation_id
        assert event["externalUserId"] == "user-ts-42"
        assert event["productId"] == PRODUCT_ID
    # Capture is off: the LLM span served linking only.
    assert server.messages == []
    assert server.ratings == []


@needs_node
def test_typescript_llm_call_becomes_messages_with_capture_on(
    server: EventsApiServer, capturing_gateway: Gateway
) -> None:
    """The example's LLM span (OpenTelemetry GenAI JSON form) through a gateway with
    conversation capture on: its two messages stored once, in the root span's conversation."""
    conversation_id = f"chat-ts-{uuid.uuid4().hex[:12]}"
    summary_of(
        run_example(
            capturing_gateway,
            conversation_id,
            OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer%20{TOKEN}",
        )
    )
    output = capturing_gateway.output
    assert server.wait_for_events(2, timeout_seconds=DELIVERY_SECONDS), output()
    assert server.wait_for_messages(2, timeout_seconds=DELIVERY_SECONDS), output()
    assert capturing_gateway.stop() in (0, -signal.SIGTERM), output()

    conversation = server.conversation(conversation_id, PRODUCT_ID)
    assert conversation.external_user_id == "user-ts-42"
    assert [(m.message_type, m.content) for m in conversation.messages] == [
        ("user_message", "Can I add seats to my plan?"),
        ("assistant_message", "Yes: upgrade to Pro, then add seats."),
    ]
    assert len(server.messages) == 1  # one request for the one LLM call
    assert server.ratings == []
    assert {event["externalConversationId"] for event in server.events} == {conversation_id}


@needs_node
def test_typescript_service_without_the_token_is_refused_and_says_so(
    server: EventsApiServer, gateway: Gateway
) -> None:
    result = run_example(gateway, f"chat-ts-{uuid.uuid4().hex[:12]}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Unauthorized" in result.stderr, result.stderr  # the gateway's 401, as the SDK words it
    assert gateway.stop() in (0, -signal.SIGTERM), gateway.output()
    assert server.events == []


def test_example_lockfile_pins_what_package_json_asks_for() -> None:
    manifest = json.loads((EXAMPLE / "package.json").read_text())
    lock = json.loads((EXAMPLE / "package-lock.json").read_text())
    locked = lock["packages"]
    for section in ("dependencies", "devDependencies"):
        for name, version in manifest[section].items():
            assert version[0].isdigit(), f"{name} is not pinned: {version}"
            assert locked[f"node_modules/{name}"]["version"] == version, name
