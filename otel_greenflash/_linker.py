"""The link stage: which conversation each finished record belongs to, and whether to wait.

Intakes note finished spans here on their own threads (dictionary work only); the pipeline's
worker links each queued record (:meth:`Linker.sort`), parks the ones whose conversation is
not known yet until their trace's local root ends, and hands the rest on to mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from . import attributes as attr
from ._config import GreenflashConfig
from ._event import BusinessEvent
from ._linking import (
    Ids,
    LinkKeys,
    LiveSpans,
    TraceIds,
    WaitingEvents,
    forget_oldest_share,
    has_conversation,
    merge_ids,
)
from ._mapping import has_business_events, plain_attributes
from ._records import EventLog, EventSpan, Record

Ready = tuple[Record, Ids, str | None]
"""A record leaving the link stage: the ids found for it, and why it stopped waiting (if it
was cut short: ``flush``, ``shutdown``, ``waiting_full``, ``linger_expired``)."""

_EVENT_TYPE = attr.EVENT_TYPE


class Linker:
    """Linking state of one pipeline: live spans, ids per trace, records waiting."""

    def __init__(self, config: GreenflashConfig, link_keys: LinkKeys) -> None:
        self.link_keys = link_keys
        self.no_marked_keys_in = (link_keys.all_keys | {_EVENT_TYPE}).isdisjoint
        """True for attribute keys holding neither an id nor an event type (one C pass)."""
        self.live = LiveSpans()
        self.trace_ids = TraceIds(
            link_keys,
            max_traces=config.max_traces,
            retain_seconds=max(30.0, config.linger_seconds),
        )
        self._max_traces = config.max_traces
        self.event_traces: dict[int, None] = {}
        """Traces with an event queued, oldest first: their local root's end must be noted."""
        self.recent_roots: dict[int, None] = {}
        """Traces whose local root ended lately (kept only while log records come in apart
        from their spans, through an exporter, so they need not wait for a root long gone)."""
        self.waiting: WaitingEvents[EventSpan | EventLog] = WaitingEvents(
            max_waiting=config.max_waiting, linger_seconds=config.linger_seconds
        )
        self.ended_waiting: list[int] = []
        """Traces whose root ended while records of them waited (the worker releases them)."""
        self.sees_span_ends = False
        """Some intake reports span ends: a record can wait for its trace's local root."""
        self.notes_every_root = False
        """A log intake feeds this pipeline: every local root's end is remembered."""

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's linking state, in place (intakes keep
        references to these structures for their hot paths)."""
        self.live.spans.clear()
        self.live.baggage.clear()
        self.trace_ids.reset()
        self.event_traces.clear()
        self.recent_roots.clear()
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
        attributes = plain_attributes(span._attributes)
        marked = bool(attributes) and not self.no_marked_keys_in(attributes)
        events = span._events
        is_event = (marked and _EVENT_TYPE in attributes) or bool(
            getattr(events, "_dq", events) and has_business_events(span)
        )
        trace_id = context[0]
        parent = span._parent
        root = parent is None or parent[2]
        if root and self.notes_every_root:
            self._note_root(trace_id)
        if not (marked or is_event) and (
            trace_id not in self.event_traces and trace_id not in self.trace_ids
        ):
            return None, False
        item: EventSpan | None = None
        if is_event:  # its ids are recorded by the worker, off this thread
            if not root:  # a root event span ends its own trace: nothing to wait for
                self.expect_root(trace_id)
            ancestors = self.live.ancestors(span) if with_ancestors else ()
            item = EventSpan(span, ancestors, start_baggage)
        elif marked:
            self.trace_ids.record(trace_id, attributes, root=root, span_id=context[1])
        released = False
        if root and (trace_id in self.event_traces or trace_id in self.trace_ids):
            self.event_traces.pop(trace_id, None)
            if self.trace_ids.root_ended(trace_id):
                self.ended_waiting.append(trace_id)
                released = True
        return item, released

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
            if decision != "wait":
                ready.append((item, linked, None))
            elif draining:
                ready.append((item, linked, cut_short_by))
            else:
                parked.append((item, linked, None))
                pushed_out = self.waiting.park(item, now)
                if pushed_out is not None:
                    ready.append(self._released(pushed_out, "waiting_full"))
        if draining:
            ready.extend(self._released(item, cut_short_by) for item in self.waiting.release_all())
        else:
            while self.ended_waiting:
                released = self.waiting.release_trace(self.ended_waiting.pop())
                ready.extend(self._released(item, None) for item in released)
            expired = self.waiting.release_expired(now)
            ready.extend(self._released(item, "linger_expired") for item in expired)
            self.trace_ids.purge(now)
        return ready, parked

    def _released(self, item: EventSpan | EventLog, cut_short: str | None) -> Ready:
        return item, self.ids_for(item), cut_short

    def ids_for(self, item: EventSpan | EventLog) -> Ids:
        """The ids an event takes from outside itself, highest priority first: (a log
        record's span,) live ancestors nearest first, start baggage, the rest of the trace."""
        keys = self.link_keys
        levels: list[Mapping[str, AttributeValue]] = []
        if isinstance(item, EventLog):
            if item.span is not None:
                levels.append(keys.ids_from(plain_attributes(item.span.attributes)))
            elif item.trace_id:
                levels.append(self.trace_ids.span_ids(item.trace_id, item.span_id))
        primary: list[Mapping[str, AttributeValue]] = []
        aliased: list[Mapping[str, AttributeValue]] = []
        for ancestor in item.ancestors:
            attributes = plain_attributes(ancestor._attributes)
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

    def decide(self, item: EventSpan | EventLog, linked: Ids, *, mark: bool) -> str:
        """``"linked"`` when every event of the record knows its conversation; else whether
        the trace's local root is still open (``"wait"``) or ``"ended"``."""
        if isinstance(item, EventSpan):
            if item.is_local_root:
                return "ended"  # the event span is the local root: its trace is over
            if has_conversation(linked) or all(
                has_conversation(self.link_keys.ids_from(own)) for own in event_attribute_sets(item)
            ):
                return "linked"
        else:
            if has_conversation(linked) or has_conversation(
                self.link_keys.ids_from(item.attributes)
            ):
                return "linked"
            if not item.trace_id or not self.sees_span_ends or _in_ended_root(item):
                return "ended"
            if item.trace_id in self.recent_roots:
                return "ended"
        if mark:
            return self.trace_ids.wait(item.trace_id)
        return "wait" if self.trace_ids.is_open(item.trace_id) else "ended"


def _in_ended_root(item: EventLog) -> bool:
    """The log record was emitted in its trace's local root, which has ended since."""
    span = item.span
    if span is None or span.end_time is None:
        return False
    parent = span.parent
    return parent is None or parent.is_remote


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
