"""The kinds of intake that feed a pipeline: one value type for every stage that asks."""

from __future__ import annotations

from enum import Enum


class IntakeKind(str, Enum):
    """What feeds a pipeline (the ``_kind`` of each intake class); its value is the name shown
    in logs."""

    SPAN_PROCESSOR = "span_processor"
    """:class:`~otel_greenflash.GreenflashSpanProcessor`: sees spans start and end."""
    SPAN_EXPORTER = "span_exporter"
    """:class:`~otel_greenflash.GreenflashSpanExporter`: finished spans, in the SDK's batches."""
    LOG_PROCESSOR = "log_processor"
    """:class:`~otel_greenflash.GreenflashLogRecordProcessor`: each log record as emitted."""
    LOG_EXPORTER = "log_exporter"
    """:class:`~otel_greenflash.GreenflashLogRecordExporter`: log records in the SDK's batches."""
    OTLP = "otlp"
    """The gateway: spans and log records other processes exported over OTLP."""

    def __str__(self) -> str:
        return self.value

    @property
    def fed_by_sdk_batches(self) -> bool:
        """An exporter: the SDK's batch processor holds records before they reach us."""
        return self in (IntakeKind.SPAN_EXPORTER, IntakeKind.LOG_EXPORTER)

    @property
    def sees_span_ends(self) -> bool:
        """Finished spans reach the pipeline through this intake."""
        return self in (IntakeKind.SPAN_PROCESSOR, IntakeKind.SPAN_EXPORTER, IntakeKind.OTLP)
