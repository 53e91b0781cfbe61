"""What the link stage notes of spans on the application thread, for a span processor.

:class:`SpanNotes` gives the span processor its ``on_start`` and ``on_end``: they keep the
live spans, their start baggage and the open local roots of the
:class:`~.linker.Linker`, and hand the ended spans that concern linking to the
pipeline. Both run for every span of the application, so they read the SDK's private fields
(the public properties copy) and do only dictionary work. SpanContext is a tuple
(trace_id, span_id, is_remote, ...); its properties cost a Python call each. The processor
inherits them (rather than holding a SpanNotes and calling it) because the SDK's call then
costs no extra Python call or bound-method lookup per span.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span

from .. import attributes as attr
from .._records import EventSpan, has_business_events, plain_attributes
from .._stats import DropReason
from .linker import Linker
from .rules import forget_oldest_share

_NO_GENAI_MARKER_IN = attr.GENAI_SPAN_MARKERS.isdisjoint

# The API's baggage key: reading it directly avoids baggage.get_all()'s copy on every span start.
_BAGGAGE_KEY = baggage_api._BAGGAGE_KEY
# The current context, read straight from the SDK's ContextVar when it is the runtime context
# (saves two Python calls per span start); any other runtime context goes through the API.
_runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
_current_context: Callable[[], Context] = getattr(
    getattr(_runtime, "_current_context", None), "get", context_api.get_current
)
_weak = weakref.ref

SpanEnded = Callable[..., None]
"""The pipeline's ``span_ended(span, start_baggage, live=True)``."""
ParentFinder = Callable[[Context | None], Span | None]
"""The live local parent in a start context, once its provider runs the processor's hooks."""


class SpanNotes:
    """A span processor's link bookkeeping: spans starting and ending on the application
    thread, as its ``on_start`` and ``on_end``. Uses the linker's structures directly (they
    are cleared in place after a fork, never replaced). :meth:`_note_spans` wires it."""

    def _note_spans(
        self,
        linker: Linker,
        span_ended: SpanEnded,
        drop: Callable[[ReadableSpan | EventSpan, DropReason], object],
    ) -> None:
        """Note the spans of ``linker``'s pipeline: ended spans that concern linking go to
        ``span_ended``; event spans ending after ``_closed`` is set go to ``drop`` (which
        must reach the pipeline's drops as they are at the call: a fork renews them)."""
        live = linker.live
        self._live = live
        self._live_spans = live.spans
        self._live_baggage: dict[int, object] = live.baggage  # type: ignore[assignment]
        self._max_live_spans = live.max_spans
        """Live spans (and open roots) kept before the oldest share is forgotten."""
        self._linker = linker
        self._event_traces = linker.event_traces
        self._open_roots = linker.open_roots
        self._extra_roots = linker.extra_roots
        self._traces_with_ids = linker.trace_ids._traces
        """The trace store's dict: its ``in`` without the store's Python-level ``__contains__``."""
        self._traces_set_aside = linker.trace_ids._waited
        """Traces events wait on that the trace store's bound pushed out: their roots' ends
        still matter (read only when the checks before it found nothing)."""
        self._no_marked_keys_in = linker.no_marked_keys_in
        self._span_ended = span_ended
        self._drop = drop
        self._parent_of: ParentFinder | None = None
        """Set by ``configure()``: spans whose local parent was not seen start bring their
        parent's provider under the processor (see :mod:`otel_greenflash._providers`)."""
        self._closed = False
        """The processor shut down: ended event spans are dropped (``shutdown``)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note the span as live, with its start baggage; a local root opens."""
        context = span._context
        if context is None:
            return
        span_id = context[1]
        spans = self._live_spans
        if len(spans) >= self._max_live_spans:  # spans that never end: forget the oldest
            self._forget_oldest()
        spans[span_id] = _weak(span)
        parent = span._parent
        if parent is None or parent[2]:  # a local root: log records of its trace may wait
            # One dict operation when it is its trace's only open local root (the usual case).
            if self._open_roots.setdefault(context[0], span_id) != span_id:
                self._another_root(context[0])
        elif parent[1] not in spans and self._parent_of is not None:
            self._parent_not_seen(parent[1], parent_context)
        start_baggage = (parent_context if parent_context is not None else _current_context()).get(
            _BAGGAGE_KEY
        )
        if start_baggage:
            self._live_baggage[span_id] = start_baggage

    def _forget_oldest(self) -> None:
        """The live spans are full (spans that never end): forget the oldest share, and the
        oldest open roots past the same bound (a root is a live span first, so between two
        evictions the open roots grow by at most the live spans' bound)."""
        self._live.evict_oldest_share()
        for roots in (self._open_roots, self._extra_roots):
            if len(roots) > self._max_live_spans:
                forget_oldest_share(roots)

    def _another_root(self, trace_id: int) -> None:
        """A local root opens in a trace that has one open already."""
        extra = self._extra_roots
        extra[trace_id] = extra.get(trace_id, 0) + 1

    def _parent_not_seen(self, parent_id: int, parent_context: Context | None) -> None:
        """A span whose local parent did not start under this processor (another provider's,
        or started before configure()): that provider gets the processor's hooks, and the
        parent is noted as live (and as an open root) so its trace links as usual."""
        parent_of = self._parent_of
        if parent_of is None:
            return
        parent = parent_of(parent_context if parent_context is not None else _current_context())
        if parent is None or parent._context is None or parent._context[1] != parent_id:
            return
        if self._live_spans.setdefault(parent_id, _weak(parent))() is not parent:
            return  # noted meanwhile by another thread
        grandparent = parent._parent
        if grandparent is None or grandparent[2]:
            trace_id = parent._context[0]
            if self._open_roots.setdefault(trace_id, parent_id) != parent_id:
                self._another_root(trace_id)

    def on_end(self, span: ReadableSpan) -> None:
        """The span is no longer live; hand it to the pipeline when it carries
        an id or an event, or its trace concerns linking."""
        context = span._context
        if context is None:
            return
        span_id = context[1]
        self._live_spans.pop(span_id, None)
        live_baggage = self._live_baggage
        start_baggage = live_baggage.pop(span_id, None) if live_baggage else None
        trace_id = context[0]
        parent = span._parent
        root = parent is None or parent[2]
        if root:
            extra = self._extra_roots
            if extra and trace_id in extra:  # another local root of its trace is still open
                others = extra.pop(trace_id, 1) - 1
                if others > 0:
                    extra[trace_id] = others
            else:
                self._open_roots.pop(trace_id, None)
        try:  # the SDK's BoundedAttributes and BoundedList: their plain dict and deque
            attributes = span._attributes._dict  # type: ignore[union-attr]
            events = span._events._dq  # type: ignore[attr-defined]
        except AttributeError:
            attributes = plain_attributes(span._attributes)
            events = span._events
        if (not attributes or self._no_marked_keys_in(attributes)) and not events:
            # No id, no event type, no span event. Such a span concerns linking only as a
            # local root whose trace holds ids or queued events (or when every root's end is
            # noted), or for its start baggage when log records are exported.
            if root:
                if (
                    trace_id not in self._event_traces
                    and trace_id not in self._traces_with_ids
                    and not self._linker.notes_every_root
                    and trace_id not in self._traces_set_aside
                ):
                    return
            elif not (start_baggage and self._linker.notes_every_root):
                return
        if self._closed:
            llm_call = (
                self._linker.captures_calls
                and bool(attributes)
                and not _NO_GENAI_MARKER_IN(attributes)
            )
            if llm_call:  # its messages request is counted lost too
                self._drop(EventSpan(span, (), None, llm_call=True), DropReason.SHUTDOWN)
            elif has_business_events(span):
                self._drop(span, DropReason.SHUTDOWN)
            return
        self._span_ended(span, start_baggage, live=True)
