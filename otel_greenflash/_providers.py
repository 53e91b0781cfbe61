"""Tracer providers: which SDK span is behind a span, and putting the span processor that
:func:`~otel_greenflash.configure` made on every provider its traces run through.

Applications often have more than one provider: Logfire swaps a new SDK provider into its
proxy at each ``logfire.configure()`` (so one configured after us is not the global one), and
libraries create their own (LangSmith, Langfuse with ``tracer_provider=``, a vendor SDK). Two
ways in, so that no business event of such a provider goes unseen:

- an SDK ``TracerProvider`` created after ``configure()`` gets the processor's hooks as it is
  created (:func:`watch_new_providers`);
- a provider created before, found through a span of it (a parent of one of ours, or the span
  ``track()`` runs in), gets them then (:meth:`ProviderFinder.adopt`).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from ._logging import logger
from .processor import GreenflashSpanProcessor


def sdk_span(span: object) -> SdkSpan | None:
    """The SDK span behind ``span``: itself, or the one a wrapper holds (Logfire's spans keep
    it as ``.span``); None for any other implementation."""
    if isinstance(span, SdkSpan):
        return span
    inner = getattr(span, "span", None)
    return inner if isinstance(inner, SdkSpan) else None


def takes_processors(provider: object) -> bool:
    """True for providers with ``add_span_processor`` (the SDK's, and proxies such as
    Logfire's that pass it on to the SDK provider they wrap)."""
    return callable(getattr(provider, "add_span_processor", None))


def _processors_of(span: SdkSpan) -> Any:
    """The provider's multi span processor this span reports to (what ``add_span_processor``
    adds to), or None."""
    multi = getattr(span, "_span_processor", None)
    return multi if callable(getattr(multi, "add_span_processor", None)) else None


class _HooksOnAnotherProvider(SpanProcessor):
    """The processor's two hooks on another provider. They step aside at that provider's first
    span when the application installed a Greenflash span processor there itself (one intake
    per provider: events are not taken twice). Its provider's shutdown (Logfire replaces its
    provider at each ``logfire.configure()``) only delivers what is queued: the processor
    belongs to the provider it was installed on."""

    def __init__(self, processor: GreenflashSpanProcessor) -> None:
        self.processor = processor
        self._start: Callable[..., None] = processor.on_start
        self._end: Callable[..., None] = processor.on_end
        self._first = True

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        if self._first:
            self._first = False
            if _has_own_processor(getattr(span, "_span_processor", None), self):
                self._start = self._end = _ignore
        self._start(span, parent_context)

    def on_end(self, span: Any) -> None:
        self._end(span)

    def shutdown(self) -> None:
        self.processor.deliver_queued(5_000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        result: bool = self.processor.force_flush(timeout_millis)
        return result


def _has_own_processor(multi: Any, hooks: _HooksOnAnotherProvider) -> bool:
    """The provider runs a Greenflash span processor the application installed (possibly the
    very one these hooks call, passed to ``logfire.configure(additional_span_processors=)``)."""
    return any(
        isinstance(installed, GreenflashSpanProcessor)
        for installed in getattr(multi, "_span_processors", ())
        if installed is not hooks
    )


def _ignore(*args: object) -> None:
    return None


_watched_by: ProviderFinder | None = None
_patched = False


def watch_new_providers(finder: ProviderFinder) -> None:
    """From now on, every SDK ``TracerProvider`` created in this process runs the hooks of
    ``finder``'s processor (until that processor shuts down). Idempotent."""
    global _watched_by, _patched
    _watched_by = finder
    if _patched:
        return
    _patched = True
    original = SdkTracerProvider.__init__

    @functools.wraps(original)
    def init_then_watch(self: SdkTracerProvider, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        finder = _watched_by
        if finder is not None:
            try:
                finder.install_on(self)
            except Exception:  # never into the application's provider setup
                logger.debug("otel_greenflash: a new TracerProvider was not watched", exc_info=True)

    SdkTracerProvider.__init__ = init_then_watch  # type: ignore[method-assign]


class ProviderFinder:
    """Adds one processor's hooks to the providers of spans it did not see start."""

    def __init__(self, processor: GreenflashSpanProcessor) -> None:
        self._processor = processor
        self._lock = threading.Lock()
        self._checked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._checked_ids: set[int] = set()
        """Multi processors that cannot be weakly referenced, by id."""

    def install_on(self, provider: SdkTracerProvider) -> None:
        """A provider just created: it runs the processor's hooks (unless it shut down)."""
        if getattr(self._processor, "_is_shutdown", False):
            return
        multi = getattr(provider, "_active_span_processor", None)
        if multi is None or not callable(getattr(multi, "add_span_processor", None)):
            return
        with self._lock:
            if not self._runs_hooks(multi):
                multi.add_span_processor(_HooksOnAnotherProvider(self._processor))
            self._mark_checked(multi)

    def adopt(self, span: SdkSpan) -> bool:
        """Make sure the provider of ``span`` runs the processor's hooks; True when it does
        (now or already). Cheap after the first call per provider."""
        multi = _processors_of(span)
        if multi is None:
            return False
        if self._was_checked(multi):
            return self._runs_hooks(multi)
        with self._lock:
            if self._was_checked(multi):
                return self._runs_hooks(multi)
            if not self._runs_hooks(multi):
                try:
                    multi.add_span_processor(_HooksOnAnotherProvider(self._processor))
                except Exception:
                    logger.warning(
                        "otel_greenflash: a TracerProvider found in a trace would not take the "
                        "span processor; its spans are not linked (add it yourself)",
                        exc_info=True,
                    )
                    self._mark_checked(multi)
                    return False
                logger.info(
                    "otel_greenflash: installed GreenflashSpanProcessor on a second "
                    "TracerProvider found in the trace of span %r (e.g. Logfire's, or one "
                    "configured after otel_greenflash.configure())",
                    span.name,
                )
            self._mark_checked(multi)
        return self._runs_hooks(multi)

    def parent_of(self, parent_context: Context | None) -> SdkSpan | None:
        """The live local parent in ``parent_context``, when its provider runs our hooks."""
        parent = sdk_span(trace.get_current_span(parent_context))
        if parent is None or parent.end_time is not None:
            return None
        return parent if self.adopt(parent) else None

    def _runs_hooks(self, multi: Any) -> bool:
        processor = self._processor
        for installed in getattr(multi, "_span_processors", ()):
            if installed is processor or getattr(installed, "processor", None) is processor:
                return True
        return False

    def _was_checked(self, multi: Any) -> bool:
        try:
            return multi in self._checked
        except TypeError:
            return id(multi) in self._checked_ids

    def _mark_checked(self, multi: Any) -> None:
        try:
            self._checked.add(multi)
        except TypeError:
            self._checked_ids.add(id(multi))
