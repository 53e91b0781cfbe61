"""``GreenflashLogRecordExporter`` inside the SDK's own ``BatchLogRecordProcessor``.

The batch processor clears each record's context before the exporter sees it (SDK >= 1.44),
so a record links through its trace and span ids: the span while it is live (with a span
processor of the same settings), ids recorded from the trace's spans, and a wait for the
trace's local root. Real SDK providers, real HTTP to the local Events API server, no mocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import AttributeValue

from otel_greenflash import (
    BusinessEvent,
    GreenflashLogRecordExporter,
    GreenflashLogRecordProcessor,
    GreenflashSpanExporter,
    GreenflashSpanProcessor,
)
from otel_greenflash.testing import EventsApiServer, Fault
from tests.intake.log_apps.services import BillingService
from tests.support.common import CONVERSATION_ID, PRODUCT_ID

EVENT: dict[str, AttributeValue] = {
    "greenflash.event.type": "upgrade_purchased",
    "greenflash.event.value": "149.00",
    "greenflash.event.value_type": "currency",
}
INSERT_ID = re.compile(r"otel-log-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{32}")
NEVER_MS = 60_000
"""A batch schedule delay no test waits for: batches leave on force_flush only."""


@pytest.fixture
def env_for(server: EventsApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENFLASH_API_KEY", server.api_key)
    monkeypatch.setenv("GREENFLASH_BASE_URL", server.base_url)
    monkeypatch.setenv("GREENFLASH_PRODUCT_ID", PRODUCT_ID)
    monkeypatch.setenv("GREENFLASH_BSP_SCHEDULE_DELAY", "50")


@dataclass
class Service:
    """A TracerProvider with a Greenflash span intake and a LoggerProvider whose
    ``BatchLogRecordProcessor`` feeds a ``GreenflashLogRecordExporter`` (settings from env)."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    log_exporter: GreenflashLogRecordExporter
    span_intake: GreenflashSpanProcessor | GreenflashSpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("shop")

    def emit(self, attributes: dict[str, AttributeValue] | None = None, **options: Any) -> None:
        self.logger_provider.get_logger("shop").emit(
            event_name="greenflash.event",
            attributes=EVENT if attributes is None else attributes,
            **options,
        )

    def export_logs(self) -> None:
        """The log batch leaves now (BatchLogRecordProcessor → exporter.export)."""
        assert self.logger_provider.force_flush(10_000)

    def export_spans(self) -> None:
        assert self.tracer_provider.force_flush(10_000)

    def close(self) -> None:
        self.logger_provider.shutdown()
        self.tracer_provider.shutdown()


def make_service(span_intake: str) -> Service:
    log_exporter = GreenflashLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(log_exporter, schedule_delay_millis=NEVER_MS)
    )
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    intake: GreenflashSpanProcessor | GreenflashSpanExporter
    processor: SpanProcessor
    if span_intake == "span_processor":
        intake = processor = GreenflashSpanProcessor()
    else:
        intake = GreenflashSpanExporter()
        processor = BatchSpanProcessor(intake, schedule_delay_millis=NEVER_MS)
    tracer_provider.add_span_processor(processor)
    return Service(tracer_provider, logger_provider, log_exporter, intake)


@pytest.fixture(params=["span_processor", "span_exporter"])
def service(request: pytest.FixtureRequest, env_for: None) -> Iterator[Service]:
    made = make_service(str(request.param))
    yield made
    made.close()


def finished_records(emit: Sequence[dict[str, AttributeValue]]) -> list[ReadableLogRecord]:
    """Records as an exporter receives them, from a throw-away provider (no span)."""
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    for attributes in emit:
        provider.get_logger("app").emit(event_name="greenflash.event", attributes=attributes)
    provider.shutdown()
    return list(memory.get_finished_logs())


# -- the exporter on its own -------------------------------------------------------------------


@pytest.mark.usefixtures("env_for")
def test_no_argument_exporter_in_a_batch_log_processor_sends_only_events(
    server: EventsApiServer,
) -> None:
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(GreenflashLogRecordExporter()))
    logger = provider.get_logger("shop")
    logger.emit(body="an ordinary log line", attributes={"http.route": "/checkout"})
    logger.emit(event_name="greenflash.event", attributes={**EVENT, "session.id": "chat-3"})
    logger.emit(attributes={**EVENT, "greenflash.event.type": "typed_only"})
    logger.emit(event_name="other.event", attributes={"greenflash.event.value": 1})
    provider.shutdown()  # the SDK's shutdown exports the last batch

    assert sorted(event["eventType"] for event in server.events) == [
        "typed_only",
        "upgrade_purchased",
    ]
    assert len(server.requests) == 2
    by_type = {event["eventType"]: event for event in server.events}
    assert by_type["upgrade_purchased"]["externalConversationId"] == "chat-3"
    assert all(event["productId"] == PRODUCT_ID for event in server.events)
    assert all(INSERT_ID.fullmatch(event["insertId"]) for event in server.events)


@pytest.mark.usefixtures("env_for")
def test_without_a_span_intake_a_record_goes_out_with_its_batch(server: EventsApiServer) -> None:
    """No span intake in the process: nothing will report the root's end, so the record
    must not wait for it; export returns once it is delivered."""
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("shop")
    with tracer.start_as_current_span("chat"), tracer.start_as_current_span("billing"):
        [record] = finished_records([EVENT])  # emitted inside the open trace
    assert record.log_record.trace_id != 0
    exporter = GreenflashLogRecordExporter()
    try:
        assert exporter.export([record]) is LogRecordExportResult.SUCCESS
        assert len(server.events) == 1  # delivered before export returned
        assert exporter.stats()["waiting"] == 0
    finally:
        exporter.shutdown()


@pytest.mark.usefixtures("env_for")
def test_export_waits_for_delivery_and_reports_failures(server: EventsApiServer) -> None:
    [record] = finished_records([EVENT])
    errors: list[str] = []

    def on_error(error: Exception, events: Sequence[BusinessEvent]) -> None:
        errors.append(type(error).__name__)

    exporter = GreenflashLogRecordExporter(on_error=on_error)
    server.inject(Fault(status=400))
    try:
        assert exporter.export([record]) is LogRecordExportResult.FAILURE
        assert exporter.stats()["failed"] == 1
        assert errors == ["EventRejectedError"]
    finally:
        exporter.shutdown()
    assert exporter.export([record]) is LogRecordExportResult.FAILURE  # after shutdown
    assert len(server.requests) == 1


def test_exporter_without_a_key_sends_nothing_and_succeeds(
    server: EventsApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    [record] = finished_records([EVENT])
    exporter = GreenflashLogRecordExporter(base_url=server.base_url, product_id=PRODUCT_ID)
    assert exporter.export([record]) is LogRecordExportResult.SUCCESS
    exporter.shutdown()
    assert server.requests == []
    assert exporter.stats()["dropped"] == {"no_api_key": 1}


# -- the same record twice ---------------------------------------------------------------------


@pytest.mark.usefixtures("env_for")
def test_a_batch_exported_twice_is_one_event(server: EventsApiServer) -> None:
    records = finished_records([EVENT, {**EVENT, "greenflash.event.value": "5"}])
    exporter = GreenflashLogRecordExporter()
    try:
        assert exporter.export(records) is LogRecordExportResult.SUCCESS
        assert exporter.export(records) is LogRecordExportResult.SUCCESS  # a retried batch
    finally:
        exporter.shutdown()

    assert sorted(event["value"] for event in server.events) == ["149.00", "5.00"]
    assert server.duplicates == 2
    insert_ids = [str(request.insert_id) for request in server.requests]
    assert len(insert_ids) == 4
    assert sorted(insert_ids[:2]) == sorted(insert_ids[2:])  # the same ids, both times


@pytest.mark.usefixtures("env_for")
def test_a_processor_and_an_exporter_on_one_provider_deliver_a_record_once(
    server: EventsApiServer,
) -> None:
    processor = GreenflashLogRecordProcessor()
    exporter = GreenflashLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(processor)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("shop")
    with tracer.start_as_current_span("billing"):
        provider.get_logger("shop").emit(event_name="greenflash.event", attributes=EVENT)
    provider.shutdown()

    assert processor.stats() == exporter.stats()  # one pipeline for both intakes
    assert len(server.events) == 1
    assert [request.insert_id for request in server.requests] == [server.events[0]["insertId"]] * 2
    assert server.duplicates == 1


@pytest.mark.usefixtures("env_for")
def test_the_default_insert_id_changes_with_anything_that_makes_another_record(
    server: EventsApiServer,
) -> None:
    base = finished_records([EVENT])[0]
    twins = finished_records([EVENT, EVENT])  # same attributes, other timestamps
    other_value = finished_records([{**EVENT, "greenflash.event.value": "150.00"}])[0]
    exporter = GreenflashLogRecordExporter()
    try:
        batch = [base, *twins, other_value]
        assert exporter.export(batch) is LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    ids = [request.insert_id for request in server.requests]
    assert len(ids) == 4
    assert len(set(ids)) == 4
    assert len(server.events) == 4


# -- linking through trace ids -----------------------------------------------------------------


@pytest.mark.parametrize("order", ["logs_first", "spans_first"])
def test_linked_to_a_conversation_set_on_the_root_after_the_record(
    server: EventsApiServer, service: Service, order: str
) -> None:
    with service.tracer.start_as_current_span("chat") as root:
        with service.tracer.start_as_current_span("billing"):
            service.emit()
        if order == "logs_first":
            service.export_logs()  # the root is still open: the record waits for it
            assert server.events == []
            assert service.log_exporter.stats()["waiting"] == 1
        root.set_attribute("greenflash.conversation.id", CONVERSATION_ID)
        root.set_attribute("greenflash.user.external_id", "user-1")
    service.export_spans()  # (a span exporter learns the root's end from its batch)
    if order == "spans_first":
        service.export_logs()  # the root ended before the record arrived
    assert server.wait_for_events(1, timeout_seconds=10)
    assert service.log_exporter.force_flush(10_000)

    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID
    assert event["externalUserId"] == "user-1"
    stats = service.log_exporter.stats()
    assert (stats["sent"], stats["waiting"], stats["unlinked"]) == (1, 0, {})
    assert service.span_intake.stats() == stats  # one pipeline


def test_the_span_the_record_was_emitted_in_beats_the_rest_of_the_trace(
    server: EventsApiServer, service: Service
) -> None:
    with service.tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "from-root")
        with service.tracer.start_as_current_span("billing") as billing:
            service.emit({**EVENT, "greenflash.event.type": "in_billing"})
            billing.set_attribute("gen_ai.conversation.id", "from-billing")  # set afterwards
        with service.tracer.start_as_current_span("refund"):
            service.emit({**EVENT, "greenflash.event.type": "in_refund"})
    service.export_spans()
    service.export_logs()
    assert service.log_exporter.force_flush(10_000)

    events = {event["eventType"]: event for event in server.events}
    assert events["in_billing"]["externalConversationId"] == "from-billing"
    assert events["in_refund"]["externalConversationId"] == "from-root"


@pytest.mark.usefixtures("env_for")
def test_a_record_exported_while_its_span_is_live_links_through_live_ancestors(
    server: EventsApiServer,
) -> None:
    service = make_service("span_processor")
    try:
        with service.tracer.start_as_current_span("chat") as root:
            root.set_attribute("greenflash.conversation.external_id", "from-live-root")
            with (
                service.tracer.start_as_current_span("step"),
                service.tracer.start_as_current_span("billing"),
            ):
                service.emit()
                service.export_logs()  # exported while every span is still open
                assert isinstance(service.span_intake, GreenflashSpanProcessor)
                assert service.span_intake.deliver_queued(10_000)
                events = server.events  # before any span ended
    finally:
        service.close()
    assert [event["externalConversationId"] for event in events] == ["from-live-root"]


@pytest.mark.usefixtures("env_for")
def test_a_record_exported_after_its_span_ended_keeps_the_spans_start_baggage(
    server: EventsApiServer,
) -> None:
    """The batch processor cleared the record's context and the record arrives after its
    span ended; the span processor saw that span start with baggage. Like a span event of
    that span, the record links through the span's start baggage."""
    service = make_service("span_processor")
    token = context_api.attach(
        baggage.set_baggage("greenflash.conversation.external_id", "chat-from-baggage")
    )
    try:
        with (
            service.tracer.start_as_current_span("chat"),
            service.tracer.start_as_current_span("billing") as billing,
        ):
            service.emit({**EVENT, "greenflash.event.type": "log"})
            billing.add_event("greenflash.event", {**EVENT, "greenflash.event.type": "span"})
    finally:
        context_api.detach(token)
    try:
        service.export_logs()
        assert service.log_exporter.force_flush(10_000)
    finally:
        service.close()
    events = {event["eventType"]: event for event in server.events}
    assert events["span"]["externalConversationId"] == "chat-from-baggage"  # control
    assert events["log"].get("externalConversationId") == "chat-from-baggage"


# -- across two services -----------------------------------------------------------------------


def test_two_services_link_exported_records_through_the_propagated_trace(
    server: EventsApiServer,
) -> None:
    """Service B runs a span processor and ``BatchLogRecordProcessor(exporter)``; its local
    root (the server span of a request carrying A's ``traceparent``) learns the
    conversation after the record. B's record waits for that root and links."""
    chat_service = TracerProvider(shutdown_on_exit=False)
    tracer = chat_service.get_tracer("chat")
    with BillingService(
        "exporter", api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
    ) as billing:
        with tracer.start_as_current_span("chat.turn", kind=trace.SpanKind.CLIENT) as turn:
            assert billing.call("/late", "1", **{"X-Conversation-Id": CONVERSATION_ID}) == 204
            trace_id = turn.get_span_context().trace_id
        with tracer.start_as_current_span("chat.turn", kind=trace.SpanKind.CLIENT):
            assert billing.call("/logging", "2") == 204  # no conversation anywhere
        stats = billing.stop()

    events = {str(event["value"]): event for event in server.events}
    assert sorted(events) == ["1.00", "2.00"]
    assert events["1.00"]["conversationId"] == CONVERSATION_ID
    assert events["1.00"]["insertId"].startswith(f"otel-log-{trace_id:032x}-")
    assert "conversationId" not in events["2.00"]  # went out when B's root ended
    assert (stats["sent"], stats["failed"], stats["unlinked"]) == (2, 0, {"no_conversation_id": 1})
