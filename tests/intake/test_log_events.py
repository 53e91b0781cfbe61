"""Business events as OpenTelemetry log records, through ``GreenflashLogRecordProcessor``.

Real SDK providers (a ``TracerProvider`` with a ``GreenflashSpanProcessor`` and a
``LoggerProvider`` with a ``GreenflashLogRecordProcessor`` of the same settings, as
``configure()`` installs them), the local Events API server over real HTTP, and for the
two-service test a second service in a real subprocess. No mocks.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from otel_greenflash import (
    GreenflashLogRecordProcessor,
    GreenflashSpanProcessor,
    attach_conversation,
    conversation,
)
from otel_greenflash.testing import EventsApiServer
from tests.intake.log_apps.services import BillingService
from tests.support.common import CONVERSATION_ID, PRODUCT_ID

OTHER_PRODUCT_ID = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
EVENT: dict[str, AttributeValue] = {
    "greenflash.event.type": "upgrade_purchased",
    "greenflash.event.value": "149.00",
    "greenflash.event.value_type": "currency",
}
INSERT_ID = re.compile(r"otel-log-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{32})")
MORE = re.compile(r"\((\d+) more like this in the last \d+\.\d s\)")


@dataclass
class App:
    """One application: span and log record processors of the same settings on its providers."""

    server: EventsApiServer
    span_processor: GreenflashSpanProcessor
    log_processor: GreenflashLogRecordProcessor
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    handlers: list[tuple[logging.Logger, logging.Handler]] = field(default_factory=list)

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("shop")

    def emit(
        self,
        attributes: Mapping[str, AttributeValue] | None = None,
        event_name: str | None = "greenflash.event",
        **options: Any,
    ) -> None:
        """Emit a log record through the OpenTelemetry logs API (SDK logger)."""
        self.logger_provider.get_logger("shop").emit(
            event_name=event_name,
            attributes=dict(EVENT if attributes is None else attributes),
            **options,
        )

    def std_logger(self, name: str = "shop.billing") -> logging.Logger:
        """A stdlib logger feeding this app's LoggerProvider through the SDK's handler."""
        with warnings.catch_warnings():  # deprecated in newer SDKs (not yet in 1.39)
            warnings.filterwarnings("ignore", ".*LoggingHandler", DeprecationWarning)
            handler = LoggingHandler(logger_provider=self.logger_provider)
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        self.handlers.append((log, handler))
        return log

    def flush(self) -> list[dict[str, Any]]:
        assert self.log_processor.force_flush(10_000)
        return self.server.events

    def only_event(self) -> dict[str, Any]:
        [event] = self.flush()
        return event


def settings_for(server: EventsApiServer, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "api_key": server.api_key,
        "base_url": server.base_url,
        "product_id": PRODUCT_ID,
        "schedule_delay_seconds": 0.05,
    }
    settings.update(overrides)
    return settings


def make_app(server: EventsApiServer, **overrides: Any) -> App:
    settings = settings_for(server, **overrides)
    span_processor = GreenflashSpanProcessor(**settings)
    log_processor = GreenflashLogRecordProcessor(**settings)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(span_processor)
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(log_processor)
    return App(server, span_processor, log_processor, tracer_provider, logger_provider)


def close_app(app: App) -> None:
    for log, handler in app.handlers:
        log.removeHandler(handler)
    app.logger_provider.shutdown()
    app.tracer_provider.shutdown()


@pytest.fixture
def app(server: EventsApiServer) -> Iterator[App]:
    made = make_app(server)
    yield made
    close_app(made)


def warning_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "otel_greenflash" and text in record.getMessage()
    ]


def occurrences(lines: list[str]) -> int:
    """How many occurrences rate-limited lines account for (1, or N for "N more")."""
    total = 0
    for line in lines:
        more = MORE.search(line)
        total += int(more.group(1)) if more else 1
    return total


# -- what a log-based business event is --------------------------------------------------------


def test_a_record_from_the_logs_api_becomes_one_event_with_the_span_attribute_table(
    app: App,
) -> None:
    with app.tracer.start_as_current_span("billing.upgrade") as span:
        app.emit(
            {
                **EVENT,
                "greenflash.event.influence": "positive",
                "greenflash.event.properties.plan": "pro",
                "greenflash.conversation.external_id": "chat-1",
            },
            timestamp=1_700_000_000_123_000_000,
            body="the user upgraded",
        )
        context = span.get_span_context()
    event = app.only_event()

    assert event["eventType"] == "upgrade_purchased"
    assert event["value"] == "149.00"
    assert event["valueType"] == "currency"
    assert event["influence"] == "positive"
    assert event["properties"] == {"plan": "pro"}
    assert event["productId"] == PRODUCT_ID
    assert event["externalConversationId"] == "chat-1"
    assert event["eventAt"] == "2023-11-14T22:13:20.123Z"  # the record's timestamp
    match = INSERT_ID.fullmatch(event["insertId"])
    assert match is not None, event["insertId"]
    assert match.group(1) == f"{context.trace_id:032x}"  # the record's own trace and span
    assert match.group(2) == f"{context.span_id:016x}"
    assert len(app.server.requests) == 1


def test_a_record_is_an_event_by_its_event_name_or_its_type_attribute_only(app: App) -> None:
    with app.tracer.start_as_current_span("work"):
        app.emit({**EVENT, "greenflash.event.value": "1"})  # name and type
        app.emit({**EVENT, "greenflash.event.value": "2"}, event_name=None)  # type only
        app.emit({**EVENT, "greenflash.event.value": "3"}, event_name="checkout.done")
        app.emit({"greenflash.event.value": "4"}, event_name="checkout.done")  # neither
        app.emit({"http.route": "/x"}, event_name=None, body="an ordinary log line")
        app.emit({"greenflash.event.value": "5"})  # named an event, but no type: invalid
    events = app.flush()

    assert sorted(event["value"] for event in events) == ["1.00", "2.00", "3.00"]
    stats = app.log_processor.stats()
    assert (stats["sent"], stats["invalid"], stats["dropped"]) == (3, 1, {})
    assert len(app.server.requests) == 3  # other records are never sent


def test_stdlib_logging_through_the_sdk_logging_handler_with_extra(app: App) -> None:
    log = app.std_logger()
    with app.tracer.start_as_current_span("chat") as root:
        root.set_attribute("session.id", "chat-from-root")
        with app.tracer.start_as_current_span("billing"):
            log.info("checkout finished")  # not an event
            log.info(
                "upgrade purchased",
                extra={
                    "greenflash.event.type": "upgrade_purchased",
                    "greenflash.event.value": "149.00",
                    "greenflash.event.value_type": "currency",
                    "greenflash.event.properties.plan": "pro",
                    "greenflash.user.external_id": "user-9",
                },
            )
    event = app.only_event()

    # Keys with dots survive `extra` (the handler copies every non-reserved LogRecord field).
    assert event["eventType"] == "upgrade_purchased"
    assert event["value"] == "149.00"
    assert event["properties"] == {"plan": "pro"}
    assert event["externalUserId"] == "user-9"
    assert event["externalConversationId"] == "chat-from-root"  # through the live root span
    assert INSERT_ID.fullmatch(event["insertId"])
    assert len(app.server.requests) == 1


# -- linking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["logs_api", "logging"])
def test_linked_to_a_conversation_set_on_the_root_after_the_record(app: App, source: str) -> None:
    log = app.std_logger() if source == "logging" else None
    with app.tracer.start_as_current_span("chat") as root:
        with app.tracer.start_as_current_span("billing"):
            if log is not None:
                log.info("upgrade", extra=EVENT)
            else:
                app.emit()
        # Everything queued is delivered, but the record waits for its trace's root.
        assert app.span_processor.deliver_queued(10_000)
        assert app.server.events == []
        assert app.log_processor.stats()["waiting"] == 1
        root.set_attribute("greenflash.conversation.id", CONVERSATION_ID)  # learned late
    assert app.server.wait_for_events(1, timeout_seconds=10)  # the root's end releases it

    [event] = app.flush()
    assert event["conversationId"] == CONVERSATION_ID
    stats = app.log_processor.stats()
    assert (stats["sent"], stats["waiting"], stats["unlinked"]) == (1, 0, {})


def test_own_attributes_beat_span_beat_ancestors_beat_baggage_beat_trace(app: App) -> None:
    ctx = baggage.set_baggage("greenflash.conversation.external_id", "from-baggage")
    ctx = baggage.set_baggage("greenflash.user.external_id", "user-from-baggage", ctx)
    ctx = baggage.set_baggage("greenflash.organization.external_id", "org-from-baggage", ctx)
    token = context_api.attach(ctx)
    try:
        with app.tracer.start_as_current_span("chat") as root:
            root.set_attribute("greenflash.conversation.external_id", "from-root")
            root.set_attribute("greenflash.user.external_id", "user-from-root")
            with app.tracer.start_as_current_span("step") as step:
                step.set_attribute("greenflash.conversation.external_id", "from-parent")
                with app.tracer.start_as_current_span("billing") as billing:
                    billing.set_attribute("greenflash.conversation.external_id", "from-span")
                    app.emit({**EVENT, "greenflash.event.type": "own",
                              "greenflash.conversation.external_id": "from-record"})  # fmt: skip
                    app.emit({**EVENT, "greenflash.event.type": "span"})
                with app.tracer.start_as_current_span("refund"):
                    app.emit({**EVENT, "greenflash.event.type": "ancestor"})
            with app.tracer.start_as_current_span("sibling") as sibling:
                sibling.set_attribute("greenflash.product.id", OTHER_PRODUCT_ID)
    finally:
        context_api.detach(token)
    events = {event["eventType"]: event for event in app.flush()}

    assert events["own"]["externalConversationId"] == "from-record"
    assert events["span"]["externalConversationId"] == "from-span"
    assert events["ancestor"]["externalConversationId"] == "from-parent"  # nearest ancestor
    assert events["ancestor"]["externalUserId"] == "user-from-root"  # ancestor beats baggage
    assert events["ancestor"]["externalOrganizationId"] == "org-from-baggage"
    assert events["ancestor"]["productId"] == OTHER_PRODUCT_ID  # the trace beats configuration


def test_linked_through_baggage_with_and_without_a_span(app: App) -> None:
    with conversation(external_id="chat-from-baggage", user_external_id="user-5"):
        with app.tracer.start_as_current_span("billing"):
            app.emit({**EVENT, "greenflash.event.value": "1"})
        app.emit({**EVENT, "greenflash.event.value": "2"})  # no span: baggage alone
    events = sorted(app.flush(), key=lambda event: str(event["value"]))

    assert [event["value"] for event in events] == ["1.00", "2.00"]
    for event in events:
        assert event["externalConversationId"] == "chat-from-baggage"
        assert event["externalUserId"] == "user-5"
    assert events[1]["insertId"].startswith("otel-log-" + "0" * 32 + "-" + "0" * 16 + "-")


def test_attach_conversation_reaches_a_record_already_waiting(app: App) -> None:
    with app.tracer.start_as_current_span("chat"):
        with app.tracer.start_as_current_span("billing"):
            app.emit()
        assert app.span_processor.deliver_queued(10_000)
        assert app.server.events == []  # waiting
        with app.tracer.start_as_current_span("greenflash.messages.create"):
            attach_conversation(CONVERSATION_ID)
    assert app.only_event()["conversationId"] == CONVERSATION_ID


def test_a_record_with_no_conversation_anywhere_goes_out_when_its_root_ends(app: App) -> None:
    with app.tracer.start_as_current_span("job"), app.tracer.start_as_current_span("billing"):
        app.emit()
    assert app.server.wait_for_events(1, timeout_seconds=10)  # no flush: the root's end
    [event] = app.flush()
    assert "externalConversationId" not in event
    assert "conversationId" not in event
    assert app.log_processor.stats()["unlinked"] == {"no_conversation_id": 1}


def test_a_record_emitted_in_a_span_that_already_ended_takes_that_spans_ids(app: App) -> None:
    with app.tracer.start_as_current_span("chat") as root:
        billing = app.tracer.start_span("billing")
        billing.set_attribute("gen_ai.conversation.id", "thread-7")
        billing.end()
        app.emit(context=trace.set_span_in_context(billing))  # e.g. logged after span.end()
        root.set_attribute("greenflash.conversation.external_id", "from-root")
    assert app.only_event()["externalConversationId"] == "thread-7"


def test_a_record_in_an_ended_span_with_no_ids_goes_out_when_its_root_ends(
    server: EventsApiServer,
) -> None:
    """The record's span ended before the record; nothing in the trace names a conversation.
    Like a span event, it must go out when the local root ends, not after linger_seconds."""
    app = make_app(server, linger_seconds=120)
    try:
        with app.tracer.start_as_current_span("job"):
            step = app.tracer.start_span("step")
            step.end()
            app.emit(context=trace.set_span_in_context(step))
        # Not a flush (that would send waiting records too): what is released is delivered.
        assert app.span_processor.deliver_queued(10_000)
        stats = app.log_processor.stats()
        assert (stats["sent"], stats["waiting"], stats["unlinked"]) == (
            1,
            0,
            {"no_conversation_id": 1},
        ), stats
        assert len(server.events) == 1
    finally:
        close_app(app)


def test_a_record_outside_any_local_span_does_not_wait_for_a_root(
    server: EventsApiServer,
) -> None:
    """docs/faq.md: "a record emitted outside any span links through its own attributes and
    baggage only". Emitted in a context extracted from an incoming ``traceparent`` (a remote
    parent, no span of this process), it has no local root to wait for: it goes out with the
    queue, not after linger_seconds."""
    app = make_app(server, linger_seconds=120)
    try:
        incoming = TraceContextTextMapPropagator().extract(
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        )
        app.emit(context=incoming)
        assert app.span_processor.deliver_queued(10_000)
        stats = app.log_processor.stats()
        assert (stats["sent"], stats["waiting"]) == (1, 0), stats
        [event] = server.events
        assert event["insertId"].startswith("otel-log-4bf92f3577b34da6a3ce929d0e0e4736-")
    finally:
        close_app(app)


# -- across two services -----------------------------------------------------------------------


def test_two_services_link_records_through_w3c_traceparent_and_baggage(
    server: EventsApiServer,
) -> None:
    """Service A (this process) calls service B (a subprocess with ``configure()``) over HTTP
    inside ``conversation(...)``: B's records link through the propagated baggage, from the
    logs API, from ``logging``, and with no span of B's own; a root span of B that learns
    the conversation after the record links it too."""
    chat_service = TracerProvider(shutdown_on_exit=False)
    tracer = chat_service.get_tracer("chat")
    with BillingService(
        "processor", api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
    ) as billing:
        with (
            conversation(external_id="chat-8812", user_external_id="user-5"),
            tracer.start_as_current_span("chat.turn", kind=trace.SpanKind.CLIENT) as turn,
        ):
            assert billing.call("/api", "1") == 204
            assert billing.call("/logging", "2") == 204
            assert billing.call("/no-span", "3") == 204
            trace_id = turn.get_span_context().trace_id
        with tracer.start_as_current_span("chat.turn", kind=trace.SpanKind.CLIENT):
            assert billing.call("/late", "4", **{"X-Conversation-Id": CONVERSATION_ID}) == 204
        stats = billing.stop()

    events = {str(event["value"]): event for event in server.events}
    assert sorted(events) == ["1.00", "2.00", "3.00", "4.00"]
    for value in ("1.00", "2.00", "3.00"):
        assert events[value]["externalConversationId"] == "chat-8812"
        assert events[value]["externalUserId"] == "user-5"
        assert INSERT_ID.fullmatch(events[value]["insertId"])
        assert events[value]["insertId"].startswith(f"otel-log-{trace_id:032x}-")  # A's trace
    assert events["4.00"]["conversationId"] == CONVERSATION_ID
    assert "externalConversationId" not in events["4.00"]
    assert (stats["sent"], stats["failed"], stats["invalid"], stats["unlinked"]) == (4, 0, 0, {})


# -- one pipeline ------------------------------------------------------------------------------


def greenflash_threads(before: set[threading.Thread]) -> list[str]:
    return sorted(
        thread.name
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith("otel-greenflash-")
    )


def test_span_and_log_processors_of_the_same_settings_share_one_pipeline(
    server: EventsApiServer,
) -> None:
    before = set(threading.enumerate())
    app = make_app(server)
    other = make_app(server, linger_seconds=42)  # other settings: a pipeline of its own
    try:
        for each in (app, other):
            with each.tracer.start_as_current_span("chat") as span:
                span.set_attributes({**EVENT, "greenflash.event.type": "from_span"})
                each.emit({**EVENT, "greenflash.event.type": "from_log"})
            assert each.span_processor.force_flush(10_000)
        stats = app.span_processor.stats()
        threads = greenflash_threads(before)

        # One stats() for both intakes: each counts the span's event and the record's.
        assert (stats["queued"], stats["sent"]) == (2, 2)
        assert app.log_processor.stats() == stats
        assert other.log_processor.stats()["sent"] == 2
        # Two pipelines (app's and other's), each with one worker and one delivery loop.
        assert threads.count("otel-greenflash-processor") == 2, threads
        assert threads.count("otel-greenflash-delivery") == 2, threads
        assert len(server.events) == 4
    finally:
        close_app(app)
        close_app(other)


def test_the_pipeline_outlives_the_log_provider_and_stops_with_the_last_intake(
    app: App,
) -> None:
    app.emit({**EVENT, "greenflash.event.type": "before"})
    app.logger_provider.shutdown()  # the log record processor leaves; the span one stays
    app.emit({**EVENT, "greenflash.event.type": "after"})  # counted, never sent
    with app.tracer.start_as_current_span("billing") as span:
        span.set_attributes({**EVENT, "greenflash.event.type": "span"})
    assert app.span_processor.force_flush(10_000)
    assert sorted(event["eventType"] for event in app.server.events) == ["before", "span"]

    app.tracer_provider.shutdown()  # the last intake: the pipeline stops
    with app.tracer.start_as_current_span("billing") as span:
        span.set_attributes({**EVENT, "greenflash.event.type": "too-late"})
    stats = app.span_processor.stats()
    assert (stats["sent"], stats["failed"]) == (2, 0)
    assert stats["dropped"] == {"shutdown": 2}  # "after" and "too-late"
    assert len(app.server.requests) == 2


def test_without_an_api_key_records_are_counted_and_nothing_is_sent(
    server: EventsApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    with caplog_disabled():
        processor = GreenflashLogRecordProcessor(base_url=server.base_url, product_id=PRODUCT_ID)
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(processor)
    provider.get_logger("shop").emit(event_name="greenflash.event", attributes=EVENT)
    provider.shutdown()
    assert processor.stats()["dropped"] == {"no_api_key": 1}
    assert server.requests == []


class caplog_disabled:  # noqa: N801 - used like a function
    """Silence the "GREENFLASH_API_KEY is not set" warning for one block."""

    def __enter__(self) -> None:
        logging.getLogger("otel_greenflash").disabled = True

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("otel_greenflash").disabled = False


# -- invalid records ---------------------------------------------------------------------------


def test_invalid_records_warn_once_per_kind_count_and_never_raise(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    log = app.std_logger()
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        with app.tracer.start_as_current_span("chat"):
            for index in range(20):
                app.emit({**EVENT, "greenflash.event.value_type": f"bogus{index}"})
                app.emit({"greenflash.event.value": f"secret-{index}"})  # named, no type
                app.emit(
                    {**EVENT, f"greenflash.event.properties.k{index}": math.nan}, event_name=None
                )
                log.info("bad", extra={**EVENT, "greenflash.event.at": f"yesterday {index}"})
            app.logger_provider.get_logger("shop").emit(event_name="greenflash.event")  # bare
            app.emit()  # and one valid event
        assert app.span_processor.force_flush(10_000)
        first = warning_lines(caplog, "not sent")
        stats = app.log_processor.stats()
        close_app(app)
    every = warning_lines(caplog, "not sent")

    assert (stats["sent"], stats["invalid"], stats["failed"]) == (1, 81, 0)
    assert len(app.server.events) == 1
    assert len(first) == 4, first  # one line per kind of problem, not one per record
    for line in first:
        assert "log record" in line, line  # says what carried the event
    kinds = ("value_type", "greenflash.event.type", "greenflash.event.properties", "event.at")
    counts = {kind: occurrences([line for line in every if kind in line]) for kind in kinds}
    assert counts == {
        "value_type": 20,
        "greenflash.event.type": 21,
        "greenflash.event.properties": 20,
        "event.at": 20,
    }
    assert not any("bogus" in line or "secret" in line or "yesterday" in line for line in every)


def test_records_the_sdk_mangles_never_raise_into_the_application(app: App) -> None:
    log = app.std_logger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK warns about attribute values it drops
        with app.tracer.start_as_current_span("chat"):
            log.info("odd", extra={"greenflash.event.type": None, "greenflash.event.value": 1})
            log.info("odd", extra={"greenflash.event.type": {"nested": 1}})
            log.info(
                "odd", extra={"greenflash.event.type": ("a", "b"), "greenflash.event.value": 1}
            )
            log.info("odd", extra={"greenflash.event.type": 7, "greenflash.event.value": 1})
            log.info("odd", extra={**EVENT, "greenflash.event.value": b"\xff"})
            app.emit({**EVENT, "greenflash.event.type": "x" * 100_000})
            app.emit({**EVENT, "greenflash.event.value": 10**30})
            app.emit({**EVENT, "greenflash.event.insert_id": "bad\x00id"})
    assert app.span_processor.force_flush(10_000)
    stats = app.log_processor.stats()

    taken = stats["sent"] + stats["invalid"]
    assert taken == stats["queued"]  # each record taken ends sent or invalid, none lost
    assert stats["failed"] == 0
    assert len(app.server.events) == stats["sent"]


def test_a_record_whose_body_refers_to_itself_never_holds_up_the_app(app: App) -> None:
    """Sizing a record for the queue walks its body on the application thread: a body that
    contains itself still returns at once, and the record ends counted (not lost), with the
    events around it sent."""
    body: dict[str, Any] = {"note": "cycle"}
    body["self"] = body
    emitted = threading.Event()

    def emit_cyclic() -> None:
        app.emit(body=body)
        emitted.set()

    app.emit()
    emitter = threading.Thread(target=emit_cyclic, daemon=True)
    emitter.start()
    assert emitted.wait(60), "emit() did not return: the size estimate walked the cycle"
    app.emit()
    assert app.span_processor.force_flush(30_000)
    stats = app.span_processor.stats()
    assert stats["sent"] >= 2
    assert stats["sent"] + stats["invalid"] + sum(stats["dropped"].values()) == 3, stats
