"""The link stage: which conversation each finished record belongs to, and whether to wait.

It runs the linking rules (:mod:`.rules`). Intakes note finished spans here on their own
threads (dictionary work only; a span processor's hooks through :mod:`.span_notes`); the
pipeline's worker links each queued record (:meth:`Linker.sort`), parks the ones whose
conversation is not known yet until their trace's local root ends, and hands the rest on to
mapping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from .. import attributes as attr
from .._config import GreenflashConfig
from .._event import BusinessEvent
from .._logging import RateLimitedLog
from .._records import (
    LLM_CALL,
    Ancestor,
    EventLog,
    EventSpan,
    LinkedSpan,
    Record,
    has_business_events,
    plain_attributes,
)
from .rules import (
    MAX_ID_LENGTH,
    Ids,
    LinkKeys,
    LiveSpans,
    TraceIds,
    WaitingEvents,
    forget_oldest_share,
    has_conversation,
    merge_ids,
)
from .waiting import slim, waiting_bytes

_NO_IDS: Mapping[str, Any] = {}

Ready = tuple[Record, Ids, str | None]
"""A record leaving the link stage: the ids found for it, and why it stopped waiting (if it
was cut short: ``flush``, ``shutdown``, ``waiting_full``, ``linger_expired``)."""

_EVENT_TYPE = attr.EVENT_TYPE
_USER_EXTERNAL_ID = attr.USER_EXTERNAL_ID
_NO_GENAI_MARKER_IN = attr.GENAI_SPAN_MARKERS.isdisjoint


class Linker:
    """Linking state of one pipeline: live spans, ids per trace, records waiting."""

    def __init__(self, config: GreenflashConfig, link_keys: LinkKeys) -> None:
        self.link_keys = link_keys
        self.captures_calls = config.capture_conversations
        """Conversation capture is on: LLM spans are taken like event spans."""
        self.user_by_default = config.default_external_user_id is not None
        marked = link_keys.all_keys | {_EVENT_TYPE}
        if self.captures_calls:
            marked |= attr.GENAI_SPAN_MARKERS
        self.no_marked_keys_in = marked.isdisjoint
        """True for attribute keys holding neither an id nor an event type (nor, with capture
        on, a GenAI marker): one C pass."""
        self.live = LiveSpans()
        self.trace_ids = TraceIds(
            link_keys,
            max_traces=config.max_traces,
            retain_seconds=max(30.0, config.linger_seconds),
        )
        self._max_traces = config.max_traces
        self.event_traces: dict[int, None] = {}
        """Traces with an event queued, oldest first: their local root's end must be noted."""
        self.recent_event_spans: dict[int, None] = {}
        """Span ids of the event spans span processors reported lately (see seen_before)."""
        self.recent_roots: dict[int, None] = {}
        """Traces whose local root ended lately (kept only while log records come in apart
        from their spans, through an exporter, so they need not wait for a root long gone)."""
        self.waiting: WaitingEvents[EventSpan | EventLog] = WaitingEvents(
            max_waiting=config.max_waiting, linger_seconds=config.linger_seconds
        )
        self.ended_waiting: list[int] = []
        """Traces whose root ended while records of them waited (the worker releases them)."""
        self.long_ids_log = RateLimitedLog()
        """Warns about id values too long to link through (see :meth:`report_long_ids`)."""
        self.sees_span_ends = False
        """Some intake reports span ends: a record can wait for its trace's local root."""
        self.notes_every_root = False
        """A log intake feeds this pipeline: every local root's end is remembered."""
        self.open_roots: dict[int, int] = {}
        """Trace id → the span id of one of its local roots open now (kept by the span
        processor); ``extra_roots`` counts the others."""
        self.extra_roots: dict[int, int] = {}
        """Trace id → how many more of its local roots are open (rare: several local roots
        under remote parents in one trace)."""
        self.tracks_open_roots = False
        """A span processor sees spans start: ``open_roots`` is known."""
        self.roots_forgotten_until = 0
        """Wall-clock ns: ``recent_roots`` forgot roots that ended before this."""
        self.unsampled_spans_reach_us: Callable[[], bool] = _no
        """True once sampled-out spans are recorded and handed to our exporters."""

    def seen_before(self, item: EventSpan) -> bool:
        """True when this event span was already reported by a span processor of this pipeline
        (the processor's hooks can be on a provider twice: added by
        :func:`otel_greenflash.configure` to a provider created later, and by the application by
        hand). Application thread."""
        context = item.span._context
        if context is None:
            return False
        recent = self.recent_event_spans
        if context[1] in recent:
            return True
        recent[context[1]] = None
        if len(recent) > self._max_traces:
            forget_oldest_share(recent)
        return False

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's linking state, in place (intakes keep
        references to these structures for their hot paths)."""
        self.live.spans.clear()
        self.live.baggage.clear()
        self.trace_ids.reset()
        self.event_traces.clear()
        self.recent_roots.clear()
        self.recent_event_spans.clear()
        self.open_roots.clear()
        self.extra_roots.clear()
        self.waiting.release_all()
        self.ended_waiting.clear()

    # -- intakes' threads ----------------------------------------------------------------------

    def finished_span(
        self,
        span: ReadableSpan,
        start_baggage: Mapping[str, object] | None = None,
        *,
        with_ancestors: bool = False,
    ) -> tuple[EventSpan | None, bool]:
        """Note an ended span. Return the event span to queue (None when it carries no
        business event), and True when records waiting for this trace can go now."""
        context = span._context
        if context is None:
            return None, False
        attributes = span._attributes
        attributes = getattr(attributes, "_dict", attributes) or _NO_IDS  # plain_attributes
        marked = bool(attributes) and not self.no_marked_keys_in(attributes)
        events = span._events
        is_event = (marked and _EVENT_TYPE in attributes) or bool(
            getattr(events, "_dq", events) and has_business_events(span)
        )
        trace_id = context[0]
        parent = span._parent
        root = parent is None or parent[2]
        if start_baggage and self.notes_every_root:  # exported log records read it later
            baggage_ids = self.link_keys.ids_from(start_baggage)
            if baggage_ids:
                self.trace_ids.record_span_baggage(trace_id, context[1], baggage_ids)
        llm_call = marked and self.captures_calls and not _NO_GENAI_MARKER_IN(attributes.keys())
        if not is_event and not llm_call:
            ids = attributes if marked else _NO_IDS
            return None, self.linking_span_ended(trace_id, context[1], root=root, ids=ids)
        # An event span: its ids are recorded by the worker, off this thread.
        if root:  # a root event span ends its own trace: nothing to wait for, no ancestor
            return EventSpan(span, (), start_baggage, None, None, llm_call), self._root_ended(
                trace_id
            )
        self.expect_root(trace_id)
        ancestors = self.live.ancestors(span) if with_ancestors else ()
        return EventSpan(span, ancestors, start_baggage, None, None, llm_call), False

    def linking_span_ended(
        self, trace_id: int, span_id: int, *, root: bool, ids: Mapping[str, Any]
    ) -> bool:
        """Note an ended span that carries no business event, given by what linking reads of
        it: ``root`` (a local root of its trace) and ``ids``, its attributes (only the id and
        alias keys are kept; usually none). True when records waiting for this trace can go."""
        if ids:
            self.trace_ids.record(trace_id, ids, root=root, span_id=span_id)
        return root and self._root_ended(trace_id)

    def _root_ended(self, trace_id: int) -> bool:
        """A local root of ``trace_id`` ended: remember it where it matters; True when
        records of this trace were waiting for it."""
        if self.notes_every_root:
            self._note_root(trace_id)
        if trace_id in self.event_traces or trace_id in self.trace_ids:
            self.event_traces.pop(trace_id, None)
            if self.trace_ids.root_ended(trace_id):
                self.ended_waiting.append(trace_id)
                return True
        return False

    def expect_root(self, trace_id: int) -> None:
        """A record of this trace is queued: its local root's end must be noted."""
        event_traces = self.event_traces
        event_traces[trace_id] = None
        if len(event_traces) > self._max_traces:
            forget_oldest_share(event_traces)

    def _note_root(self, trace_id: int) -> None:
        recent = self.recent_roots
        recent[trace_id] = None
        if len(recent) > self._max_traces:
            forget_oldest_share(recent)
            self.roots_forgotten_until = time.time_ns()

    # -- worker thread -----------------------------------------------------------------------

    def sort(
        self, batch: Sequence[Record], now: float, *, draining: bool, cut_short_by: str
    ) -> tuple[list[Ready], list[Ready]]:
        """Link a batch. Return the records ready to map (with any released from waiting),
        and the ones parked now (mapped as known so far when a spool keeps them)."""
        for item in batch:  # first the ids of every event span, for the records that follow
            if isinstance(item, EventSpan):
                context = item.span.context
                self.trace_ids.record(
                    item.trace_id,
                    plain_attributes(item.span.attributes),
                    root=item.is_local_root,
                    span_id=context.span_id if context is not None else 0,
                )
        ready: list[Ready] = []
        parked: list[Ready] = []
        for item in batch:
            if isinstance(item, BusinessEvent):
                ready.append((item, {}, None))
                continue
            linked = self.ids_for(item)
            decision = self.decide(item, linked, mark=not draining)
            if decision == "ended" and not (isinstance(item, EventSpan) and item.is_local_root):
                # Its root may have ended since the ids were read (the application's thread
                # records the root's ids, then its end): read them again, now final.
                linked = self.ids_for(item)
            if decision != "wait":
                ready.append((item, linked, None))
            elif draining:
                ready.append((item, linked, cut_short_by))
            else:
                kept = slim(item, self.link_keys)  # only what linking and mapping read
                parked.append((kept, linked, None))
                pushed_out = self.waiting.park(kept, now, waiting_bytes(kept))
                ready.extend(self._stopped_waiting(pushed_out, "waiting_full"))
        self.report_long_ids(flush=draining)
        if draining:
            ready.extend(self._stopped_waiting(self.waiting.release_all(), cut_short_by))
        else:
            while self.ended_waiting:
                trace_id = self.ended_waiting.pop()
                released = self.waiting.release_trace(trace_id)
                ready.extend(self._released(item, None) for item in released)
                self.trace_ids.done_waiting(trace_id)  # after its ids were read
            expired = self.waiting.release_expired(now)
            ready.extend(self._stopped_waiting(expired, "linger_expired"))
            self.trace_ids.purge(now)
        return ready, parked

    def _stopped_waiting(self, items: list[EventSpan | EventLog], cut_short: str) -> list[Ready]:
        """Records let go before their root ended; a trace none of whose records waits any
        more is no longer kept for them past the trace store's bound."""
        ready = [self._released(item, cut_short) for item in items]
        for trace_id in {item.trace_id for item in items}:
            if not self.waiting.waits_on(trace_id):
                self.trace_ids.done_waiting(trace_id)
        return ready

    def report_long_ids(self, *, flush: bool = False) -> None:
        """Warn (rate-limited per attribute) about id values the trace store did not keep
        because they are longer than MAX_ID_LENGTH; never shows a value."""
        log = self.long_ids_log
        for key, count in self.trace_ids.take_too_long().items():
            log.warning(
                f"long-id {key}",
                "otel_greenflash did not link through %d value(s) of attribute %r: longer than "
                "%d characters, so not an id",
                count,
                key,
                MAX_ID_LENGTH,
                count=count,
            )
        if flush:
            log.flush()
        else:
            log.flush_due()

    def _released(self, item: EventSpan | EventLog, cut_short: str | None) -> Ready:
        return item, self.ids_for(item), cut_short

    def ids_for(self, item: EventSpan | EventLog) -> Ids:
        """The ids an event takes from outside itself, highest priority first: (a log
        record's span,) live ancestors nearest first, start baggage, the rest of the trace."""
        keys = self.link_keys
        levels: list[Mapping[str, AttributeValue]] = []
        if isinstance(item, EventLog):
            if item.span is not None:
                levels.append(keys.ids_from(self.link_attributes(item.span)))
            elif item.trace_id:  # the span ended before the record was taken (exporters)
                levels.append(self.trace_ids.span_ids(item.trace_id, item.span_id))
                if item.baggage is None:
                    levels.append(self.trace_ids.span_baggage_ids(item.trace_id, item.span_id))
        primary: list[Mapping[str, AttributeValue]] = []
        aliased: list[Mapping[str, AttributeValue]] = []
        for ancestor in item.ancestors:
            attributes = self.link_attributes(ancestor)
            if attributes and not self.no_marked_keys_in(attributes):  # skips most spans
                ids, alias_ids = keys.split_ids(attributes)
                primary.append(ids)
                aliased.append(alias_ids)
        # At the ancestor level, as in the trace: greenflash.* keys (nearest first) beat aliases.
        levels.extend(primary)
        levels.extend(aliased)
        levels.append(keys.ids_from(item.baggage))
        if item.trace_id:
            levels.append(self.trace_ids.ids(item.trace_id))
        return merge_ids(levels)

    def link_attributes(self, span: Ancestor) -> Mapping[str, Any]:
        """The attributes of a span a record links through: read from the span while it is
        held (by the record, or by anyone for a :class:`LinkedSpan`); once it is gone, the id
        attributes its end recorded for the trace, else the ones it had when the record began
        to wait."""
        if not isinstance(span, LinkedSpan):
            return plain_attributes(span._attributes)
        reference = span.reference
        if reference is None:  # it had ended: its ids were final
            return span.ids
        live = reference()
        if live is not None:
            return plain_attributes(live._attributes)
        recorded = self.trace_ids.span_attributes(span.trace_id, span.span_id)
        return recorded if recorded is not None else span.ids

    def decide(self, item: EventSpan | EventLog, linked: Ids, *, mark: bool) -> str:
        """``"linked"`` when every event of the record knows its conversation; else whether
        the trace's local root is still open (``"wait"``) or ``"ended"``."""
        if isinstance(item, EventSpan):
            if item.is_local_root:
                return "ended"  # the event span is the local root: its trace is over
            own_sets = event_attribute_sets(item)
            if item.llm_call:
                own_sets.append(plain_attributes(item.span.attributes))
            if all(self._knows_enough(linked, own, item.llm_call) for own in own_sets):
                return "linked"
        else:
            if self._knows_enough(linked, item.attributes, item.kind == LLM_CALL):
                return "linked"
            if not self._root_may_still_end(item):
                return "ended"
        if mark:
            return self.trace_ids.wait(item.trace_id)
        return "wait" if self.trace_ids.is_open(item.trace_id) else "ended"

    def _knows_enough(self, linked: Ids, own: Mapping[str, AttributeValue], messages: bool) -> bool:
        """The ids found are enough to map the record: a conversation, and for messages a
        user too (the Messages API requires ``externalUserId``) unless a default is set."""
        own_ids: Ids | None = None
        if not has_conversation(linked):
            own_ids = self.link_keys.ids_from(own)
            if not has_conversation(own_ids):
                return False
        if not messages or self.user_by_default or _USER_EXTERNAL_ID in linked:
            return True
        if own_ids is None:
            own_ids = self.link_keys.ids_from(own)
        return _USER_EXTERNAL_ID in own_ids

    def _root_may_still_end(self, item: EventLog) -> bool:
        """Whether a local root of the record's trace may still end here, so that waiting
        for it can bring ids: a root open now (when span starts are seen), else a sampled
        trace whose root was not seen ending lately."""
        trace_id = item.trace_id
        if not trace_id or not self.sees_span_ends or item.in_ended_local_root:
            return False
        if self.tracks_open_roots:
            return trace_id in self.open_roots
        if not item.sampled and not self.unsampled_spans_reach_us():
            return False  # its spans never reach an exporter
        if trace_id in self.recent_roots:
            return False
        time_ns = item.time_ns
        return not (time_ns and time_ns <= self.roots_forgotten_until)


def _no() -> bool:
    return False


def event_attribute_sets(item: EventSpan) -> list[Mapping[str, AttributeValue]]:
    """The attributes of each business event of the span: the span's, then its span events'
    (each merged over the span's, since span events inherit the span's ids)."""
    span_attributes = plain_attributes(item.span.attributes)
    sets: list[Mapping[str, AttributeValue]] = []
    if _EVENT_TYPE in span_attributes:
        sets.append(span_attributes)
    for event in item.span.events:
        event_attributes = plain_attributes(event.attributes)
        if event.name == attr.SPAN_EVENT_NAME or _EVENT_TYPE in event_attributes:
            sets.append({**span_attributes, **event_attributes})
    return sets
