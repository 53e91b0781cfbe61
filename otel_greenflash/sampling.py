"""Keep business events at any trace sampling ratio.

A span the sampler drops never reaches a span processor. :class:`GreenflashSampler` wraps your
sampler and turns its *drop* into *record only* for spans that may carry business events, so
:class:`~otel_greenflash.GreenflashSpanProcessor` still sees them while exporters of sampled
spans (``BatchSpanProcessor``, ``SimpleSpanProcessor``) still skip them. Where the only
Greenflash component is :class:`~otel_greenflash.GreenflashSpanExporter`, record-only spans are
handed to it directly (see ``_record_only``); with neither, the first such span logs an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from . import _record_only
from . import attributes as attr
from ._intake_kind import IntakeKind


class GreenflashSampler(Sampler):
    """Delegates to ``sampler``; a span it drops is still recorded (not sampled) when:

    - its start attributes carry ``greenflash.event.type`` (``tracer.start_as_current_span(
      name, attributes={...})``), or
    - ``record_unsampled=True``: every dropped span is recorded, so event attributes set
      *after* start and ``track()`` span events are kept too. Recording costs CPU for every
      span; sampled-out spans are still never exported by other exporters.
    """

    keeps_sampled_out_spans = True
    """Read by the record-only bridge: spans this sampler drops may still carry events."""

    def __init__(self, sampler: Sampler, *, record_unsampled: bool = False) -> None:
        self._sampler = sampler
        self._record_unsampled = record_unsampled
        self._checked_receiver = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self._sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not Decision.DROP:
            return result
        if self._record_unsampled or (attributes and attr.EVENT_TYPE in attributes):
            if not self._checked_receiver:
                self._checked_receiver = True
                _record_only.on_first_record_only_span(_span_processor_installed)
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        mode = "record_unsampled" if self._record_unsampled else "event spans"
        return f"GreenflashSampler{{{self._sampler.get_description()}, {mode}}}"


def _span_processor_installed() -> bool:
    from ._pipeline.registry import active_pipelines

    return any(pipeline.has_intake(IntakeKind.SPAN_PROCESSOR) for pipeline in active_pipelines())


def parent_based_trace_id_ratio(rate: str | None) -> Sampler:
    """Factory for ``OTEL_TRACES_SAMPLER=greenflash_parentbased_traceidratio``: the SDK's
    ``parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG`` as the ratio, wrapped with
    ``record_unsampled=True`` so no business event is lost to sampling."""
    try:
        ratio = float(rate) if rate else 1.0
    except ValueError:
        ratio = 1.0
    ratio = min(1.0, max(0.0, ratio))
    return GreenflashSampler(ParentBased(TraceIdRatioBased(ratio)), record_unsampled=True)
