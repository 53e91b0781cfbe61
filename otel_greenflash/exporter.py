"""``GreenflashSpanExporter``: a SpanExporter for the SDK's own span processors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import _record_only
from ._intake_kind import IntakeKind
from ._pipeline.intake import PipelineIntake


class GreenflashSpanExporter(PipelineIntake, SpanExporter):
    """Exports the business events found in batches of finished spans; ignores other spans.

    Constructible with no arguments (settings from ``GREENFLASH_*`` environment variables),
    so it can run inside ``BatchSpanProcessor`` or be named by ``OTEL_TRACES_EXPORTER``.

    An exporter never sees spans start, so it links events through the spans it has been
    given: ids found on any span of the trace (same batch or an earlier one), and — for an
    event whose conversation is still unknown — a wait for the trace's local root span to
    arrive in a later batch (bounded like the processor's). ``export`` waits for the batch's
    events up to ``timeout_seconds`` (like OTLP exporters' export timeout) and returns
    ``SUCCESS`` when all were accepted; past that it returns ``FAILURE`` while their delivery
    goes on in the background (retried within the retry window, counted as always). Events
    still waiting for their root span are not waited for; ``force_flush`` and ``shutdown``
    send those too.
    Accepts every keyword of :class:`GreenflashSpanProcessor`.
    """

    _kind = IntakeKind.SPAN_EXPORTER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._pipeline is not None:
            # Record-only spans (GreenflashSampler) never reach a batch processor's exporter.
            _record_only.add_exporter(self, self._pipeline.span_ended)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        pipeline = self._pipeline
        if pipeline is None:  # disabled: nothing to send
            return SpanExportResult.SUCCESS
        if self._is_shutdown:
            return SpanExportResult.FAILURE
        span_ended = pipeline.span_ended
        for span in spans:
            span_ended(span)
        if self._deliver_taken(pipeline):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Send what is left (waiting events included) within ``timeout_millis``, then stop."""
        if not self._is_shutdown:
            _record_only.remove_exporter(self)
        super().shutdown(timeout_millis)
