"""The OpenTelemetry SDK's private fields the library reads, on the SDK installed.

The span processor's hooks run for every span of the application, so they read the SDK's
own storage instead of its copying properties (``_link/span_notes.py``, ``_link/linker.py``,
``_records.py``); ``track()`` checks a live span's event limit and id the same way
(``_helpers.py``); ``_providers.py`` reaches another provider's processors through a span of
it; and delivery at exit finds the SDK's batch processors through private fields
(``_lifecycle/exit_delivery.py``). A rename in a new SDK release would break these reads
silently or raise into the application: each test here asserts that a field exists and holds
what the code expects, read at the moment the library reads it. CI runs this file with the
rest of the suite on the lowest supported SDK and on the newest (see ``.ci/run``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry._logs import LogRecord
from opentelemetry.context import Context
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
)
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_greenflash import logs as logs_module
from otel_greenflash._link import span_notes as span_notes_module
from otel_greenflash._records import count_business_events, has_business_events, plain_attributes

EVENT = {"greenflash.event.type": "upgrade", "greenflash.event.value": "pro"}
HOUR_MS = 3_600_000


class Seen:
    """What a span processor's hooks read, taken at on_start and on_end as the library does."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []
        self.ended: list[dict[str, Any]] = []


class ReadingProcessor(SpanProcessor):
    """Reads the private fields exactly as ``GreenflashSpanProcessor``'s hooks (the link
    stage's span notes) do."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.seen.started.append(
            {
                "public_context": span.get_span_context(),
                "context": span._context,
                "parent": span._parent,
                "current": span_notes_module._current_context(),
                "api_current": context.get_current(),
                "start_baggage": (
                    parent_context if parent_context is not None else context.get_current()
                ).get(span_notes_module._BAGGAGE_KEY),
            }
        )

    def on_end(self, span: ReadableSpan) -> None:
        self.seen.ended.append(
            {
                "span": span,
                "context": span._context,
                "parent": span._parent,
                "attributes": span._attributes,
                "events": span._events,
            }
        )


def provider_reading(seen: Seen) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(ReadingProcessor(seen))
    return provider


def test_span_context_and_parent_are_tuples_of_trace_id_span_id_and_is_remote() -> None:
    seen = Seen()
    tracer = provider_reading(seen).get_tracer("private-fields")
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span("root") as root, tracer.start_as_current_span("child"):
        pass
    with tracer.start_as_current_span(
        "server", context=trace.set_span_in_context(NonRecordingSpan(remote))
    ):
        pass

    root_start, child_start, server_start = seen.started
    for start in seen.started:
        own = start["context"]
        assert isinstance(own, SpanContext)  # a tuple: the hooks index it
        assert own == start["public_context"]
        assert (own[0], own[1], own[2]) == (own.trace_id, own.span_id, False)
    assert root_start["parent"] is None  # a local root
    child_parent = child_start["parent"]
    assert child_parent == root.get_span_context()
    assert (child_parent[0], child_parent[1], child_parent[2]) == (
        root.get_span_context().trace_id,
        root.get_span_context().span_id,
        False,
    )
    server_parent = server_start["parent"]  # a root of this process under a remote parent
    assert (server_parent[0], server_parent[1], server_parent[2]) == (0x1234, 0x5678, True)
    assert server_start["context"][0] == 0x1234

    root_end, child_end = seen.ended[1], seen.ended[0]  # the child ends first
    assert root_end["context"] == root.get_span_context()
    assert root_end["parent"] is None
    assert child_end["parent"] == root.get_span_context()


def test_span_attributes_are_read_through_their_plain_dict() -> None:
    seen = Seen()
    tracer = provider_reading(seen).get_tracer("private-fields")
    with tracer.start_as_current_span("checkout", attributes={"at.start": 1}) as span:
        span.set_attribute("greenflash.event.type", "upgrade")
        span.set_attributes({"greenflash.event.value": "pro", "plan": "team"})
    with tracer.start_as_current_span("plain"):
        pass

    attributes = seen.ended[0]["attributes"]
    stored = attributes._dict  # what plain_attributes() and the on_end check read
    assert isinstance(stored, dict)
    assert stored == {
        "at.start": 1,
        "greenflash.event.type": "upgrade",
        "greenflash.event.value": "pro",
        "plan": "team",
    }
    assert plain_attributes(attributes) is stored
    assert "greenflash.event.type" in stored
    assert not frozenset({"greenflash.event.type"}).isdisjoint(stored)  # no_marked_keys_in
    assert frozenset({"gen_ai.conversation.id"}).isdisjoint(stored)
    assert not seen.ended[1]["attributes"]  # a span without attributes is falsy as it is


def test_span_attributes_at_their_limit_stay_a_plain_dict() -> None:
    """When the SDK's attribute limit is reached its storage may change type (1.39 switches to
    an ``OrderedDict``); the hot path's dict operations must still hold."""
    seen = Seen()
    tracer = provider_reading(seen).get_tracer("private-fields")
    attributes = {f"key.{index}": index for index in range(200)}  # over the default 128
    with tracer.start_as_current_span("crowded", attributes=attributes) as span:
        span.set_attribute("greenflash.event.type", "upgrade")
    stored = seen.ended[0]["attributes"]._dict
    assert isinstance(stored, dict)
    assert len(stored) == 128
    assert stored["greenflash.event.type"] == "upgrade"
    assert not frozenset({"greenflash.event.type"}).isdisjoint(stored)


def test_span_events_are_a_bounded_list_whose_deque_is_falsy_when_empty() -> None:
    seen = Seen()
    tracer = provider_reading(seen).get_tracer("private-fields")
    with tracer.start_as_current_span("no events"):
        pass
    with tracer.start_as_current_span("with events") as span:
        span.add_event("greenflash.event", EVENT)
        span.add_event("log", {"message": "hello"})

    empty, with_events = seen.ended[0]["events"], seen.ended[1]["events"]
    assert not empty._dq  # the on_end check: no span event, nothing to look at
    assert len(with_events._dq) == 2
    first, second = with_events  # iterated by has_business_events
    assert (first.name, second.name) == ("greenflash.event", "log")
    assert plain_attributes(first.attributes) == EVENT
    assert has_business_events(seen.ended[1]["span"])
    assert count_business_events(seen.ended[1]["span"]) == 1
    assert not has_business_events(seen.ended[0]["span"])


def test_a_readable_span_built_directly_keeps_what_it_was_given() -> None:
    """The gateway builds ``ReadableSpan`` objects from OTLP: plain dicts and tuples."""
    own = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    parent = SpanContext(0xABC, 0x123, is_remote=True)
    attributes = dict(EVENT)
    span = ReadableSpan(
        name="decoded", context=own, parent=parent, attributes=attributes, events=()
    )
    assert span._context is own
    assert span._parent is parent
    assert span._attributes is attributes
    assert plain_attributes(span._attributes) is attributes
    assert span._events == ()
    assert has_business_events(span)


def test_a_live_span_leads_to_its_providers_processors_and_event_limit() -> None:
    """``_providers.py`` finds the provider of a span started elsewhere through the span's
    multi processor; ``track()`` reads a live span's id and event limit before adding one."""
    provider = TracerProvider(shutdown_on_exit=False, span_limits=SpanLimits(max_events=3))
    seen = Seen()
    reading = ReadingProcessor(seen)
    provider.add_span_processor(reading)
    span = provider.get_tracer("private-fields").start_span("live")
    assert isinstance(span, Span)
    try:
        multi = span._span_processor
        assert multi is provider._active_span_processor
        assert callable(multi.add_span_processor)
        assert reading in multi._span_processors
        later = ReadingProcessor(Seen())
        multi.add_span_processor(later)  # what ProviderFinder.adopt does
        assert later in provider._active_span_processor._span_processors
        assert isinstance(span._events, BoundedList)
        events: Any = span._events  # its _dq is untyped in the SDK
        assert events._dq.maxlen == 3
        assert span._context is not None
        assert span._context[1] == span.get_span_context().span_id
        for number in range(3):
            assert len(events._dq) < events._dq.maxlen
            span.add_event(f"event {number}")
        assert len(events._dq) == events._dq.maxlen == len(events)  # the next one pushes out
    finally:
        span.end()
    assert later.seen.ended  # the processor added through the span saw it end


def test_the_current_context_is_read_from_the_runtime_contexts_variable() -> None:
    """The link stage's span notes read the current context straight from the SDK's ContextVar."""
    runtime = context._RUNTIME_CONTEXT
    assert span_notes_module._current_context == runtime._current_context.get  # type: ignore[attr-defined]
    seen = Seen()
    tracer = provider_reading(seen).get_tracer("private-fields")
    token = context.attach(baggage.set_baggage("user", "u-1"))
    try:
        assert span_notes_module._current_context() is context.get_current()
        with tracer.start_as_current_span("under baggage"):
            pass
    finally:
        context.detach(token)
    [start] = seen.started
    assert start["current"] is start["api_current"]
    assert start["start_baggage"] == {"user": "u-1"}


def test_the_baggage_key_finds_the_baggage_in_a_context() -> None:
    with_baggage = baggage.set_baggage("plan", "pro", baggage.set_baggage("user", "u-1"))
    for key in (span_notes_module._BAGGAGE_KEY, logs_module._BAGGAGE_KEY):
        stored = with_baggage.get(key)
        assert isinstance(stored, Mapping)
        assert dict(stored) == baggage.get_all(with_baggage) == {"user": "u-1", "plan": "pro"}
        assert Context().get(key) is None


class KeepingLogProcessor(LogRecordProcessor):
    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.contexts: list[Context | None] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record  # as GreenflashLogRecordProcessor.on_emit reads it
        self.records.append(record)
        self.contexts.append(record.context)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_log_records_carry_what_the_log_intakes_read() -> None:
    provider = LoggerProvider(shutdown_on_exit=False)
    keeping = KeepingLogProcessor()
    provider.add_log_record_processor(keeping)
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("private-fields")
    with tracer.start_as_current_span("chat") as span:
        provider.get_logger("shop").emit(
            event_name="greenflash.event",
            attributes=dict(EVENT),
            body="upgrade",
            severity_text="INFO",
            context=baggage.set_baggage("user", "u-1"),
        )
    [record], [emit_context] = keeping.records, keeping.contexts
    assert plain_attributes(record.attributes) == EVENT
    assert isinstance(getattr(record.attributes, "_dict", None), dict)
    assert record.event_name == "greenflash.event"
    assert (record.body, record.severity_text) == ("upgrade", "INFO")
    assert isinstance(record.timestamp, int) or record.timestamp is None
    assert isinstance(record.observed_timestamp, int)
    assert emit_context is not None
    assert emit_context.get(logs_module._BAGGAGE_KEY) == {"user": "u-1"}
    own = span.get_span_context()
    assert (record.trace_id, record.span_id) == (own.trace_id, own.span_id)
    assert record.trace_flags is not None
    assert record.trace_flags & 0x01


class NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullLogExporter(LogRecordExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_exit_delivery_finds_batch_processors_their_exporters_and_queues() -> None:
    """``_lifecycle/exit_delivery.py`` walks providers → processors → batch → exporter and queue."""
    spans_out = NullSpanExporter()
    span_batch = BatchSpanProcessor(spans_out, schedule_delay_millis=HOUR_MS)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer_provider.add_span_processor(span_batch)
    logs_out = NullLogExporter()
    log_batch = BatchLogRecordProcessor(logs_out, schedule_delay_millis=HOUR_MS)
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(log_batch)
    try:
        span_processors = tracer_provider._active_span_processor._span_processors
        assert span_batch in span_processors
        log_processors = logger_provider._multi_log_record_processor._log_record_processors
        assert log_batch in log_processors
        assert span_batch._batch_processor._exporter is spans_out
        assert log_batch._batch_processor._exporter is logs_out

        tracer = tracer_provider.get_tracer("private-fields")
        for name in ("one", "two", "three"):
            tracer.start_span(name).end()
        logger_provider.get_logger("shop").emit(attributes=dict(EVENT))
        assert len(span_batch._batch_processor._queue) == 3  # held until the batch is due
        assert len(log_batch._batch_processor._queue) == 1
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()
    assert len(span_batch._batch_processor._queue) == 0  # shutdown exported them
