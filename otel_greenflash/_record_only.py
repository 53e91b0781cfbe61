"""Record-only spans for :class:`GreenflashSpanExporter`.

:class:`~otel_greenflash.GreenflashSampler` turns a dropped span into a *record-only* one so
its business event survives sampling. Span processors see such spans; the SDK's batch and
simple processors never pass them to their exporter. So when the exporter is the only
Greenflash component on a provider, a small span processor hands record-only spans straight
to each live exporter, which treats them like the spans of its batches.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from ._logging import logger

SpanSink = Callable[[ReadableSpan], None]
"""Where an exporter takes a finished span (its core's ``on_end``)."""

_lock = threading.Lock()
_sinks: weakref.WeakKeyDictionary[object, SpanSink] = weakref.WeakKeyDictionary()
_current_sinks: tuple[SpanSink, ...] = ()
"""Rebuilt under the lock whenever exporters come and go; read at span end without one."""
_bridged: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_warned = False


class RecordOnlySpans(SpanProcessor):
    """Passes every recorded-but-not-sampled span to the live exporters; nothing else."""

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or context.trace_flags.sampled:
            return  # sampled spans reach the exporters through their batch processor
        for sink in _current_sinks:
            try:
                sink(span)
            except Exception:  # never into the application's span.end()
                logger.debug("otel_greenflash: a record-only span was not handed on", exc_info=True)


def add_exporter(exporter: object, sink: SpanSink) -> None:
    """Register an exporter; bridge the global provider if its sampler records dropped spans."""
    with _lock:
        _sinks[exporter] = sink
        _rebuild()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider) and _records_dropped_spans(provider):
        bridge(provider)


def bridged() -> bool:
    """True once some provider hands its record-only spans to our exporters."""
    return len(_bridged) > 0


def remove_exporter(exporter: object) -> None:
    with _lock:
        _sinks.pop(exporter, None)
        _rebuild()


def bridge(provider: TracerProvider) -> None:
    """Install :class:`RecordOnlySpans` on ``provider`` once."""
    with _lock:
        if provider in _bridged:
            return
        _bridged.add(provider)
    provider.add_span_processor(RecordOnlySpans())
    logger.debug("otel_greenflash: record-only spans are handed to GreenflashSpanExporter")


def on_first_record_only_span(has_processor: Callable[[], bool]) -> None:
    """Called by the sampler the first time it keeps a dropped span: make sure someone sees
    it. A GreenflashSpanProcessor does; otherwise bridge the global provider to the exporters,
    or say loudly that nothing will."""
    global _warned
    if has_processor():
        return
    provider = trace.get_tracer_provider()
    with _lock:
        exporters = len(_sinks)
    if exporters and isinstance(provider, TracerProvider):
        bridge(provider)
        return
    if not _warned:
        _warned = True
        logger.error(
            "GreenflashSampler keeps sampled-out spans for their business events, but no "
            "GreenflashSpanProcessor is installed and no GreenflashSpanExporter runs on the "
            "global TracerProvider: those events are lost. Install the processor "
            "(otel_greenflash.configure() or GREENFLASH_INSTALL_PROCESSOR=true)"
        )


def _records_dropped_spans(provider: TracerProvider) -> bool:
    """The provider's sampler keeps sampled-out spans for their business events."""
    return bool(getattr(getattr(provider, "sampler", None), "keeps_sampled_out_spans", False))


def _rebuild() -> None:
    """Called with the lock held."""
    global _current_sinks
    _current_sinks = tuple(_sinks.values())
