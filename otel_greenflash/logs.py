"""Business events as OpenTelemetry log records: a log record processor and a log record
exporter, both feeding the same pipeline as the span intakes.

A log record is a business event when its ``event_name`` is ``greenflash.event`` or it
carries ``greenflash.event.type``; its attributes follow the span attribute table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import baggage as baggage_api
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan

from ._intake_kind import IntakeKind
from ._link.linker import Linker
from ._pipeline.intake import PipelineIntake
from ._records import EVENT, EventLog, log_record_kind, plain_attributes
from ._stats import DropReason

_BAGGAGE_KEY = baggage_api._BAGGAGE_KEY


class GreenflashLogRecordProcessor(PipelineIntake, LogRecordProcessor):
    """Turns log records that are business events into Greenflash events (for
    ``LoggerProvider.add_log_record_processor``); other records pass untouched.

    Runs at emit time, so it sees the span the record was emitted in and the baggage of that
    moment: a record links like a span event of its span. Shares its pipeline with a
    :class:`GreenflashSpanProcessor` created with the same settings. Accepts every keyword of
    :class:`GreenflashSpanProcessor`.
    """

    _kind = IntakeKind.LOG_PROCESSOR

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        attributes = plain_attributes(record.attributes)
        kind = log_record_kind(
            record.event_name, attributes, capture=self._config.capture_conversations
        )
        if kind is None:
            return
        pipeline = self._pipeline
        if pipeline is None:
            return
        if self._is_shutdown:
            pipeline.drops.drop(
                event_log_of(record, attributes, pipeline.linker, kind=kind), DropReason.SHUTDOWN
            )
            return
        context = record.context
        span = trace.get_current_span(context) if context is not None else None
        baggage = context.get(_BAGGAGE_KEY) if context is not None else None
        pipeline.log_emitted(
            event_log_of(
                record,
                attributes,
                pipeline.linker,
                span,
                baggage if isinstance(baggage, Mapping) else None,
                kind=kind,
            )
        )


class GreenflashLogRecordExporter(PipelineIntake, LogRecordExporter):
    """Exports the business events found in batches of log records; ignores other records.

    For ``BatchLogRecordProcessor`` and ``OTEL_LOGS_EXPORTER=greenflash``; constructible with
    no arguments (settings from ``GREENFLASH_*`` variables). The batch processor clears each
    record's context, so records link through their trace and span ids: the span when it is
    still live in this process (with a span processor of the same settings), ids recorded
    from spans of the trace, and a wait for the trace's local root as span exporters do.
    ``export`` waits like :class:`GreenflashSpanExporter`'s.
    """

    _kind = IntakeKind.LOG_EXPORTER

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        pipeline = self._pipeline
        if pipeline is None:  # disabled: nothing to send
            return LogRecordExportResult.SUCCESS
        if self._is_shutdown:
            return LogRecordExportResult.FAILURE
        taken = 0
        capture = self._config.capture_conversations
        for readable in batch:
            record = readable.log_record
            attributes = plain_attributes(record.attributes)
            kind = log_record_kind(record.event_name, attributes, capture=capture)
            if kind is not None:
                pipeline.log_emitted(event_log_of(record, attributes, pipeline.linker, kind=kind))
                taken += 1
        if not taken:
            return LogRecordExportResult.SUCCESS
        if self._deliver_taken(pipeline):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE


def event_log_of(
    record: LogRecord,
    attributes: Mapping[str, Any],
    linker: Linker | None,
    span: object = None,
    baggage: Mapping[str, object] | None = None,
    *,
    kind: str = EVENT,
) -> EventLog:
    """The finished record for the pipeline: a copy of the attributes, the record's ids, and
    the span it was emitted in when that span is at hand (given, or still live here: read
    from ``linker``; None where no span is ever live, as in the gateway)."""
    trace_id = record.trace_id or 0
    span_id = record.span_id or 0
    live_span: ReadableSpan | None = None
    context = span.context if isinstance(span, ReadableSpan) else None
    if context is not None and context.span_id == span_id:
        live_span = span  # type: ignore[assignment]
    if linker is None:
        live_span = None
    elif live_span is None and span_id:
        reference = linker.live.spans.get(span_id)
        live_span = reference() if reference is not None else None
    ancestors: tuple[ReadableSpan, ...] = ()
    if live_span is not None and linker is not None:
        ancestors = linker.live.ancestors(live_span)
        if baggage is None:  # no emit context (exporters): the span's start baggage
            baggage = linker.live.baggage.get(span_id)
    return EventLog(
        attributes=dict(attributes),
        event_name=record.event_name,
        timestamp=record.timestamp,
        observed_timestamp=record.observed_timestamp,
        trace_id=trace_id,
        span_id=span_id,
        span=live_span,
        ancestors=ancestors,
        baggage=baggage,
        sampled=bool(record.trace_flags is not None and record.trace_flags & 0x01),
        body=record.body,
        severity=record.severity_text,
        kind=kind,
    )
