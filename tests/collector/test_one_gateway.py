"""The OpenTelemetry Collector in front of one gateway, configured as docs/gateway.md says.

SDK applications (Python, and the TypeScript example) export to a real Collector (built from
its Go modules, tests/support/collector.py) running the documentation's ``single-gateway``
configuration verbatim; the Collector forwards over OTLP/HTTP to a gateway subprocess, which
delivers to the independent Events API receiver. Then the faults: the gateway restarted,
refusing with a full spool, SIGKILLed; the Collector itself SIGKILLed with its queue on disk
(the documented ``queue-on-disk`` layer) and in memory. Overlays change only addresses, ports,
directories and retry timings (100 ms to 1 s instead of the documented 5 s to 30 s).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.trace.export import SpanExporter

from tests.support.chat_turns import (
    WAIT_SECONDS,
    Acknowledged,
    AcknowledgedLogs,
    assert_acknowledged,
    assert_delivered_once,
    chat_turn,
    send_turns,
    settled,
    wait_until,
)
from tests.support.collector import Collector, documented_config, merged
from tests.support.common import PRODUCT_ID
from tests.support.gateway_harness import TOKEN, Gateway, logging_to, tracing
from tests.support.independent_receiver import Fault, Receiver
from tests.support.processes import clean_env, run
from tests.support.typescript_example import EXAMPLE, needs_node, summary_of

FAST_RETRIES = {"retry_on_failure": {"initial_interval": "100ms", "max_interval": "1s"}}
"""Retry timings for the tests (the documented 5 s to 30 s would only make them slow)."""

DROPPED = ("Dropping data", "not retryable", "no more retries left")
"""What the Collector logs when it gives data up (permanent error, retries exhausted)."""


def single_gateway(
    directory: Path,
    gateway: Gateway,
    overlay: dict[str, Any] | None = None,
    *,
    layers: tuple[str, ...] = (),
) -> Collector:
    """The documented configuration (plus documented ``layers``), its exporter aimed at
    ``gateway``."""
    aimed = {"exporters": {"otlp_http/greenflash": {"endpoint": gateway.url}}}
    return Collector(
        directory,
        [documented_config("single-gateway"), *(documented_config(name) for name in layers)],
        overlay=merged(aimed, overlay or {}),
    )


def fast_retries(**more: Any) -> dict[str, Any]:
    return {"exporters": {"otlp_http/greenflash": FAST_RETRIES}, **more}


def exporters_to(collector: Collector, protocol: str) -> tuple[SpanExporter, LogRecordExporter]:
    """What an application does: the SDK's OTLP exporters aimed at the Collector."""
    if protocol == "http":
        return (
            HttpSpans(endpoint=f"{collector.http_url}/v1/traces", timeout=30),
            HttpLogs(endpoint=f"{collector.http_url}/v1/logs", timeout=30),
        )
    return (
        GrpcSpans(endpoint=collector.grpc_endpoint, insecure=True, timeout=30),
        GrpcLogs(endpoint=collector.grpc_endpoint, insecure=True, timeout=30),
    )


class PacedApp(threading.Thread):
    """An application sending chat turns to the Collector on its own thread, as many as the
    test allows: the test faults the gateway while turns go through."""

    def __init__(self, collector: Collector, name: str) -> None:
        super().__init__(name=f"app-{name}", daemon=True)
        spans, logs = exporters_to(collector, "http")
        self.spans, self.logs = Acknowledged(spans), AcknowledgedLogs(logs)
        self.conversations: list[str] = []
        self.prefix = name
        self.allowed = 0
        self.error: BaseException | None = None
        self._permits = threading.Semaphore(0)

    def allow(self, turns: int) -> None:
        self.allowed += turns
        for _ in range(turns):
            self._permits.release()

    def run(self) -> None:
        try:
            with tracing(self.spans) as provider, logging_to(self.logs) as log_provider:
                tracer = provider.get_tracer("app")
                while self._permits.acquire() and len(self.conversations) < self.allowed:
                    conversation = f"{self.prefix}-{len(self.conversations)}"
                    chat_turn(tracer, log_provider, conversation)
                    self.conversations.append(conversation)
        except BaseException as error:  # reported by wait_for
            self.error = error

    def wait_for_turns(self) -> None:
        """Until every allowed turn was exported (and answered)."""
        wait_until(
            lambda: self.error is not None or len(self.conversations) >= self.allowed,
            f"{self.allowed} turns sent",
        )
        assert self.error is None, self.error

    def close(self) -> None:
        self.wait_for_turns()
        self._permits.release()  # with nothing more allowed: the loop ends
        self.join(WAIT_SECONDS)
        assert not self.is_alive()


def received(gateway: Gateway, conversations: list[str]) -> Callable[[], bool]:
    """This gateway process took every span and log record of ``conversations``."""
    turns = len(conversations)
    return lambda: gateway.stats()["received"] == {"spans": 3 * turns, "log_records": turns}


def arrived(receiver: Receiver, events: int) -> None:
    wait_until(lambda: len(receiver.accepted) >= events, f"{events} events at the receiver")


def gave_up(collector: Collector, since: int = 0) -> list[str]:
    """The Collector's log lines saying it gave data up (from offset ``since`` of its log)."""
    lines = collector.output()[since:].splitlines()
    return [line for line in lines if any(words in line for words in DROPPED)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_apps_through_the_collector_arrive_once_linked(
    receiver: Receiver, tmp_path: Path, protocol: str
) -> None:
    conversations = [f"collector-{protocol}-{index}" for index in range(5)]
    with Gateway(receiver, tmp_path / "spool", token=TOKEN) as gateway:
        with single_gateway(tmp_path / "collector", gateway) as collector:
            spans, logs = send_turns(*exporters_to(collector, protocol), conversations)
            assert_acknowledged(spans, logs)
            wait_until(settled(gateway, 2 * len(conversations)), "every event sent")
        stats: Any = gateway.stats()
        assert stats["received"] == {
            "spans": 3 * len(conversations),
            "log_records": len(conversations),
        }
        assert set(stats["requests"]["http"]["traces"]) == {"ok"}
    assert_delivered_once(receiver, conversations)
    assert TOKEN not in collector.output()


@needs_node
def test_typescript_example_through_the_collector_arrives_once_linked(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The Node service exports to the Collector (no token: the Collector adds it)."""
    conversation = f"chat-ts-collector-{uuid.uuid4().hex[:8]}"
    with Gateway(receiver, tmp_path / "spool", token=TOKEN) as gateway:
        with single_gateway(tmp_path / "collector", gateway) as collector:
            environment = clean_env(
                OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_url,
                CONVERSATION_ID=conversation,
            )
            started = run(["npm", "run", "--silent", "start"], environment, 300, EXAMPLE)
            summary = summary_of(started)
            assert summary["endpoint"] == collector.http_url
            wait_until(settled(gateway, 2), "both events sent")
        # the root, its LLM call (linking only: capture is off) and billing.upgrade
        assert gateway.stats()["received"] == {"spans": 3, "log_records": 1}
    assert {request.path for request in receiver.requests} == {Receiver.EVENTS_PATH}
    assert receiver.duplicates == 0
    events = {event["eventType"]: event for event in receiver.accepted}
    assert len(receiver.accepted) == 2
    assert sorted(events) == ["meeting_booked", "upgrade_purchased"]
    upgrade = events["upgrade_purchased"]
    assert upgrade["insertId"] == f"otel-{summary['traceId']}-{summary['upgradeSpanId']}"
    assert (upgrade["value"], upgrade["valueType"]) == ("149.00", "currency")
    assert events["meeting_booked"]["properties"] == {"channel": "chat"}
    for event in events.values():
        assert event["externalConversationId"] == conversation
        assert event["externalUserId"] == "user-ts-42"
        assert event["productId"] == PRODUCT_ID


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_gateway_stopped_while_apps_send_loses_and_repeats_nothing(
    receiver: Receiver, tmp_path: Path, stop: str
) -> None:
    """Turns go through while the gateway stops (SIGTERM, or SIGKILL), while it is down (the
    Collector acknowledges them into its queue) and after it is back on its ports. The Events
    API answers 503 until everything is in: what the gateway acknowledged before it stopped
    waits in its spool, for the next process."""
    receiver.mix({Fault.status(503): 1.0}, seed=11)
    short = ["--shutdown-timeout", "2"]  # a SIGTERM's delivery attempt would only meet 503s
    gateway = Gateway(receiver, tmp_path / "spool", token=TOKEN, args=short)
    with gateway, single_gateway(tmp_path / "collector", gateway, fast_retries()) as collector:
        app = PacedApp(collector, f"gateway-{stop}")
        app.start()
        app.allow(10)
        wait_until(lambda: spooled(gateway) >= 4, "events acknowledged by the gateway")
        if stop == "SIGTERM":
            gateway.stop()
        else:
            gateway.kill()
        sent_before_the_stop = app.allowed
        app.allow(10)
        app.wait_for_turns()  # acknowledged by the Collector with the gateway down
        gateway.start()
        app.allow(10)
        app.close()
        assert_acknowledged(app.spans, app.logs)
        events = 2 * app.allowed
        wait_until(lambda: spooled(gateway) == events, f"{events} events in the spool")
        receiver.clear_faults()
        arrived(receiver, events)
        assert gave_up(collector) == []  # before its own stop, which drops what it still retries
    unlinked = assert_each_once(receiver, app.conversations)
    # A turn whose spans went partly to the stopped process and partly to the next one arrives
    # without its conversation id; only turns sent before the stop can be split.
    assert unlinked <= set(app.conversations[:sent_before_the_stop])


def spooled(gateway: Gateway) -> int:
    """Events in the gateway's spool (the API refusing, none leaves)."""
    depth: int = gateway.stats()["spool"]["depth"]
    return depth


def assert_each_once(receiver: Receiver, conversations: list[str]) -> set[str]:
    """Two events per turn, each exactly once, linked to its own turn or to none; the turns
    whose events arrived without their conversation id."""
    assert receiver.duplicates == 0
    accepted = receiver.accepted
    assert len(set(receiver.accepted_insert_ids)) == len(accepted)
    assert sorted((e["eventType"], e["properties"]["turn"]) for e in accepted) == sorted(
        (kind, turn) for turn in conversations for kind in ("task_success", "upgrade_purchased")
    )
    unlinked = set()
    for event in accepted:
        linked = event.get("externalConversationId")
        assert linked in (None, event["properties"]["turn"]), event
        if linked is None:
            unlinked.add(event["properties"]["turn"])
    return unlinked


def test_gateway_refusing_with_a_full_spool_the_collector_waits_and_retries(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The Events API answers 503 until the gateway's spool (4 events) is full; the gateway
    then answers 503 with ``Retry-After``, and the Collector keeps the data and tries again,
    waiting at least that long, until the API is back."""
    receiver.mix({Fault.status(503): 1.0}, seed=7)
    conversations = [f"refused-{index}" for index in range(10)]
    full = {"GREENFLASH_SPOOL_MAX_EVENTS": "4"}
    with Gateway(receiver, tmp_path / "spool", token=TOKEN, environment=full) as gateway:
        with single_gateway(tmp_path / "collector", gateway, fast_retries()) as collector:
            spans, logs = send_turns(*exporters_to(collector, "http"), conversations)
            assert_acknowledged(spans, logs)
            wait_until(lambda: len(_spool_full_retries(collector)) >= 2, "the Collector retrying")
            receiver.clear_faults()
            arrived(receiver, 2 * len(conversations))
            wait_until(received(gateway, conversations), "every span and log record taken")
        stats: Any = gateway.stats()
        assert stats["requests"]["http"]["traces"]["unavailable"] >= 1
        retries = _spool_full_retries(collector)
        assert gave_up(collector) == []
    for throttle, interval in retries:
        # The gateway's Retry-After (5 s for a full spool) beats the exporter's own backoff,
        # at most 1 s here.
        assert throttle == 5.0
        assert interval >= throttle
    assert_delivered_once(receiver, conversations)


def _spool_full_retries(collector: Collector) -> list[tuple[float, float]]:
    """(Retry-After it read, interval it waited) for each retry of a spool-full 503."""
    found = []
    for line in collector.output().splitlines():
        if "Will retry" in line and "HTTP Status Code 503" in line and "spool is full" in line:
            throttle = re.search(r"Throttle \(([0-9.]+)s\)", line)
            interval = re.search(r'"interval": "([0-9.]+)(ms|s)"', line)
            assert throttle is not None, line
            assert interval is not None, line
            scale = 0.001 if interval.group(2) == "ms" else 1.0
            found.append((float(throttle.group(1)), float(interval.group(1)) * scale))
    return found


@pytest.mark.parametrize("queue", ["file_storage", "memory"])
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_collector_stopped_keeps_its_queue_only_on_disk(
    receiver: Receiver, tmp_path: Path, queue: str, stop: str
) -> None:
    """With the gateway down, ten turns wait in the Collector's queue; the Collector is
    SIGKILLed (or stopped with SIGTERM) and started again, then the gateway. With the
    documented ``queue-on-disk`` layer every acknowledged turn arrives; with the in-memory
    queue none does."""
    gateway = Gateway(receiver, tmp_path / "spool", token=TOKEN)  # not started: down
    layers: tuple[str, ...] = ()
    overlay = fast_retries()
    if queue == "file_storage":
        layers = ("queue-on-disk",)
        storage = {"file_storage/greenflash": {"directory": str(tmp_path / "queue")}}
        overlay = fast_retries(extensions=storage)
    held = [f"held-{queue}-{index}" for index in range(10)]
    after = [f"after-{queue}"]
    kept = held if queue == "file_storage" else []
    with single_gateway(tmp_path / "collector", gateway, overlay, layers=layers) as collector:
        spans, logs = send_turns(*exporters_to(collector, "http"), held)
        assert_acknowledged(spans, logs)
        if stop == "SIGKILL":
            collector.kill()
        else:
            collector.stop()
        collector.start()
        restarted = len(collector.output())
        with gateway:
            spans, logs = send_turns(*exporters_to(collector, "http"), after)
            assert_acknowledged(spans, logs)
            wait_until(received(gateway, kept + after), "what the Collector kept, at the gateway")
            wait_until(settled(gateway, 2 * len(kept + after)), "the gateway settled")
            assert gave_up(collector, restarted) == []
            collector.stop()  # holds nothing more
            assert gateway.stats()["received"] == {
                "spans": 3 * len(kept + after),
                "log_records": len(kept + after),
            }
    assert_delivered_once(receiver, kept + after)


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_partial_success_reaches_the_collector(
    receiver: Receiver, tmp_path: Path, encoding: str
) -> None:
    """An invalid business event is a partial success the Collector reads and logs, in
    either of its encodings (``encoding: json`` is a user's choice, set by the overlay)."""
    overlay = {"exporters": {"otlp_http/greenflash": {"encoding": encoding}}}
    broken = {
        "greenflash.event.type": "broken",
        "greenflash.event.value": "abc",
        "greenflash.event.value_type": "currency",
    }
    with Gateway(receiver, tmp_path / "spool", token=TOKEN) as gateway:
        with single_gateway(tmp_path / "collector", gateway, overlay) as collector:
            spans, _ = exporters_to(collector, "http")
            with tracing(spans) as provider:
                provider.get_tracer("app").start_span("pay", attributes=broken).end()
            wait_until(lambda: "Partial success response" in collector.output(), "its warning")
        assert gateway.stats()["requests"]["http"]["traces"] == {"partial": 1}
    (warning,) = (line for line in collector.output().splitlines() if "Partial success" in line)
    assert "1 business event(s) invalid" in warning
    assert '"dropped_spans": 1' in warning
    assert receiver.accepted == []
