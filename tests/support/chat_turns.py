"""What the gateway tests' applications send (a chat turn: two business events, then the root
learns its conversation id) and how the tests check what arrived."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from tests.support.common import PRODUCT_ID
from tests.support.gateway_harness import Gateway, logging_to, tracing
from tests.support.independent_receiver import Receiver

WAIT_SECONDS = 60.0
"""Deadline for what should happen soon (never a measured duration)."""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Acknowledged(SpanExporter):
    """Passes batches to an OTLP exporter and keeps what it answered."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


class AcknowledgedLogs(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call, unused-ignore]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def chat_turn(tracer: Tracer, logs: LoggerProvider, conversation: str) -> None:
    """One chat turn: a business event as span attributes and one as a log record, both ended
    (and exported, one request per span or record) before the root span learns the
    conversation id."""
    with tracer.start_as_current_span("chat.turn") as root:
        with tracer.start_as_current_span(
            "billing.upgrade",
            attributes={
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": "149.00",
                "greenflash.event.value_type": "currency",
                "greenflash.event.properties.turn": conversation,
            },
        ):
            logs.get_logger("app").emit(
                event_name="greenflash.event",
                attributes={
                    "greenflash.event.type": "task_success",
                    "greenflash.event.value": 1,
                    "greenflash.event.properties.turn": conversation,
                },
            )
        with tracer.start_as_current_span("db.query"):
            pass
        root.set_attribute("greenflash.conversation.external_id", conversation)


def send_turns(
    span_exporter: SpanExporter, log_exporter: LogRecordExporter, conversations: Sequence[str]
) -> tuple[Acknowledged, AcknowledgedLogs]:
    spans, logs = Acknowledged(span_exporter), AcknowledgedLogs(log_exporter)
    with tracing(spans) as provider, logging_to(logs) as log_provider:
        tracer = provider.get_tracer("app")
        for conversation in conversations:
            chat_turn(tracer, log_provider, conversation)
    return spans, logs


def assert_acknowledged(spans: Acknowledged, logs: AcknowledgedLogs) -> None:
    assert spans.results
    assert set(spans.results) == {SpanExportResult.SUCCESS}
    assert logs.results
    assert set(logs.results) == {LogRecordExportResult.SUCCESS}


def assert_delivered_once(receiver: Receiver, conversations: Sequence[str]) -> None:
    """Two events per turn, each exactly once, each linked to its turn's conversation."""
    accepted = receiver.accepted
    assert receiver.duplicates == 0
    assert len(accepted) == 2 * len(conversations)
    assert len(set(receiver.accepted_insert_ids)) == len(accepted)
    seen = Counter(
        (event["eventType"], event["properties"]["turn"], event.get("externalConversationId"))
        for event in accepted
    )
    expected: Counter[tuple[str, str, str]] = Counter()
    for conversation in conversations:
        expected[("upgrade_purchased", conversation, conversation)] += 1
        expected[("task_success", conversation, conversation)] += 1
    assert seen == expected
    assert {event["productId"] for event in accepted} == {PRODUCT_ID}


def settled(gateway: Gateway, events: int) -> Callable[[], bool]:
    """The gateway's pipeline sent ``events`` and holds nothing back."""

    def check() -> bool:
        pipeline: Any = gateway.stats()["pipeline"]
        return bool(pipeline["sent"] >= events and pipeline["waiting"] == 0)

    return check
