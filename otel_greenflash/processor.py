"""``GreenflashSpanProcessor``: picks event spans at on_end and ships them in the background."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

from . import _termination
from . import attributes as attr
from ._config import ENV_API_KEY, GreenflashConfig
from ._delivery import DropCallback, ErrorCallback
from ._event import BusinessEvent
from ._linking import (
    EventSpan,
    LinkKeys,
    LiveSpans,
    TraceIds,
    WaitingEvents,
    forget_oldest_share,
    has_conversation,
    merge_ids,
)
from ._logging import RateLimitedLog, logger
from ._mapping import (
    count_business_events,
    has_business_events,
    map_event_attributes,
    plain_attributes,
)
from ._pipeline import EventPipeline
from ._stats import StatsSnapshot
from ._transport import Transport
from ._worker import BackgroundWorker

WorkItem = EventSpan | BusinessEvent

_UNLINKED_REASONS = {
    "waiting_full": "more events were waiting for their trace's local root span than "
    "max_waiting / GREENFLASH_LINK_MAX_WAITING allows; raise it",
    "linger_expired": "the trace's local root span did not end within linger_seconds / "
    "GREENFLASH_LINK_LINGER; raise it if conversation ids are set later than that",
    "flush": "force_flush() sent events still waiting for their trace's root span",
    "shutdown": "shutdown() sent events still waiting for their trace's root span",
}

# The API's baggage key: reading it directly avoids baggage.get_all()'s copy on every span start.
_BAGGAGE_KEY = baggage_api._BAGGAGE_KEY
# The current context, read straight from the SDK's ContextVar when it is the runtime context
# (saves two Python calls per span start); any other runtime context goes through the API.
_runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
_current_context: Callable[[], Context] = getattr(
    getattr(_runtime, "_current_context", None), "get", context_api.get_current
)
_getpid = os.getpid
_weak = weakref.ref
_EVENT_TYPE = attr.EVENT_TYPE
_EMPTY: Mapping[str, AttributeValue] = {}

MAX_DROPS_KEPT = 1000
"""Items dropped from a full queue that wait for the worker to map them and call ``on_drop``;
past that, dropped items are counted (and warned) but not passed to ``on_drop``."""

_active_processors: weakref.WeakSet[GreenflashSpanProcessor] = weakref.WeakSet()


def active_processors() -> list[GreenflashSpanProcessor]:
    """Processors created in this process and not shut down (used by the helpers)."""
    return [processor for processor in list(_active_processors) if not processor._is_shutdown]


def shutdown_under_way() -> bool:
    """True while a processor is shutting down (e.g. the SDK's atexit hook is delivering)."""
    return any(
        processor._is_shutdown and not processor._shutdown_finished
        for processor in list(_active_processors)
    )


def _restart_in_child() -> None:
    for processor in list(_active_processors):
        processor._restart_after_fork()


_held_for_fork: list[threading.Lock] = []


def _hold_spools_before_fork() -> None:
    """No fork in the middle of a spool transaction: the child must find the file consistent."""
    for processor in list(_active_processors):
        spool = processor._pipeline.feed.spool if not processor._is_shutdown else None
        if spool is not None:
            spool._lock.acquire()
            _held_for_fork.append(spool._lock)


def _release_spools_after_fork() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _restart_in_child_after_fork() -> None:
    _held_for_fork.clear()  # the child never uses the parent's spools (or their locks)
    _restart_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_spools_before_fork,
        after_in_parent=_release_spools_after_fork,
        after_in_child=_restart_in_child_after_fork,
    )


def _ignore(*args: object, **kwargs: object) -> None:
    return None


def _flushed(*args: object, **kwargs: object) -> bool:
    return True


def _has_conversation_field(event: BusinessEvent) -> bool:
    return "conversationId" in event.body or "externalConversationId" in event.body


class GreenflashSpanProcessor(SpanProcessor):
    """Turns spans carrying ``greenflash.event.*`` attributes into Greenflash events.

    Other spans pass through untouched and are never exported. Each event is linked to its
    conversation through the trace (see the README's precedence table). Mapping and HTTP
    happen on background threads; the application thread does dictionary work only.
    """

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        max_queue_size: int | None = None,
        max_batch_size: int | None = None,
        schedule_delay_seconds: float | None = None,
        export_timeout_seconds: float | None = None,
        max_concurrency: int | None = None,
        http_client: str | None = None,
        aliases: Mapping[str, str] | None = None,
        linger_seconds: float | None = None,
        max_waiting: int | None = None,
        max_traces: int | None = None,
        custom_headers: Mapping[str, str] | None = None,
        spool_dir: str | None = None,
        spool_max_events: int | None = None,
        dry_run: bool | None = None,
        allow_insecure_http: bool | None = None,
        enabled: bool | None = None,
        handle_sigterm: bool | None = None,
        termination_timeout_seconds: float | None = None,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        config: GreenflashConfig | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Every setting left ``None`` comes from its ``GREENFLASH_*`` variable, then its
        default (see the README's configuration table); ``config`` replaces them all.
        ``transport`` replaces HTTP delivery (e.g. ``otel_greenflash.testing.MemoryTransport``).
        """
        self._config = config or GreenflashConfig.resolve(
            api_key=api_key,
            product_id=product_id,
            base_url=base_url,
            timeout_seconds=timeout_seconds,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_batch_size,
            schedule_delay_seconds=schedule_delay_seconds,
            export_timeout_seconds=export_timeout_seconds,
            max_concurrency=max_concurrency,
            http_client=http_client,
            aliases=aliases,
            linger_seconds=linger_seconds,
            max_waiting=max_waiting,
            max_traces=max_traces,
            custom_headers=custom_headers,
            spool_dir=spool_dir,
            spool_max_events=spool_max_events,
            dry_run=dry_run,
            allow_insecure_http=allow_insecure_http,
            enabled=enabled,
            handle_sigterm=handle_sigterm,
            termination_timeout_seconds=termination_timeout_seconds,
        )
        config = self._config
        self._link_keys = LinkKeys(config.aliases)
        self._no_marked_keys_in = (self._link_keys.all_keys | {attr.EVENT_TYPE}).isdisjoint
        self._on_drop = on_drop
        self._is_shutdown = False
        self._shutdown_finished = False
        self._log = RateLimitedLog()
        self._enabled = config.sends or (config.enabled and transport is not None)
        if not config.enabled:
            self._disable()
            return
        self._pipeline = EventPipeline(
            config,
            link_keys=self._link_keys,
            on_error=on_error,
            on_drop=on_drop,
            transport=transport,
            wake_worker=self._wake_worker,
        )
        if not self._enabled:
            logger.warning(
                "%s is not set: GreenflashSpanProcessor will send no business events", ENV_API_KEY
            )
        self._start_worker()
        _active_processors.add(self)
        _termination.watch(
            active_processors,
            handle_sigterm=config.handle_sigterm,
            budget_seconds=config.termination_timeout_seconds,
        )

    def _disable(self) -> None:
        """GREENFLASH_ENABLED=false or OTEL_SDK_DISABLED=true: every hook is a no-op."""
        self._is_shutdown = True
        self._shutdown_finished = True
        self._pipeline = EventPipeline(self._config, link_keys=self._link_keys, start=False)
        self._waiting = WaitingEvents()
        self.on_start = _ignore  # type: ignore[method-assign]
        self.on_end = _ignore  # type: ignore[method-assign]
        self.force_flush = _flushed  # type: ignore[method-assign]
        self.deliver_queued = _flushed  # type: ignore[method-assign]
        self.shutdown = _ignore  # type: ignore[method-assign]

    def _start_worker(self) -> None:
        """(Re)create everything that belongs to one process: threads, queues, linking state."""
        config = self._config
        self._pid = os.getpid()
        self._log = RateLimitedLog()
        self._live = LiveSpans()
        self._live_spans = self._live.spans
        self._live_baggage: dict[int, object] = self._live.baggage  # type: ignore[assignment]
        self._max_live_spans = self._live.max_spans
        self._trace_ids = TraceIds(
            self._link_keys,
            max_traces=config.max_traces,
            retain_seconds=max(30.0, config.linger_seconds),
        )
        self._event_traces: dict[int, None] = {}
        """Traces with an event span queued, oldest first: their root's end must be noted."""
        self._waiting = WaitingEvents(
            max_waiting=config.max_waiting, linger_seconds=config.linger_seconds
        )
        self._ended_waiting: list[int] = []
        self._dropped: collections.deque[WorkItem] = collections.deque()
        """Dropped from a full queue, for the worker to pass to ``on_drop``."""
        self._dropped_lock = threading.Lock()
        self._dropped_uncalled = 0
        """Business events dropped from a full queue that ``on_drop`` will not see."""
        self._worker: BackgroundWorker[WorkItem] = BackgroundWorker(
            self._handle_batch,
            name="otel-greenflash-processor",
            max_queue_size=config.max_queue_size,
            max_batch_size=config.max_export_batch_size,
            schedule_delay_seconds=config.schedule_delay_seconds,
        )

    def _restart_after_fork(self) -> None:
        """In a forked child: fresh worker and engine, empty queues (nothing sent twice).

        Nothing of the parent's is reused: its locks may have been held by a thread that does
        not exist in the child, and its connections belong to the parent.
        """
        if self._is_shutdown:
            return
        self._pipeline.restart_after_fork()
        self._start_worker()

    @property
    def config(self) -> GreenflashConfig:
        return self._config

    # -- application thread ------------------------------------------------------------------
    # Both hooks run for every span of the application, so they read the SDK's private fields
    # (the public properties copy) and do only dictionary work.

    # SpanContext is a tuple (trace_id, span_id, is_remote, ...); its properties cost a
    # Python call each, so the hooks index it directly.

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span._context
        if context is None:
            return
        span_id = context[1]
        spans = self._live_spans
        if len(spans) >= self._max_live_spans:  # spans that never end: forget the oldest
            self._live.evict_oldest_share()
        spans[span_id] = _weak(span)
        start_baggage = (parent_context if parent_context is not None else _current_context()).get(
            _BAGGAGE_KEY
        )
        if start_baggage:
            self._live_baggage[span_id] = start_baggage

    def on_end(self, span: ReadableSpan) -> None:
        context = span._context
        if context is None:
            return
        span_id = context[1]
        self._live_spans.pop(span_id, None)
        live_baggage = self._live_baggage
        start_baggage = live_baggage.pop(span_id, None) if live_baggage else None
        attributes = span._attributes
        attributes = getattr(attributes, "_dict", attributes) or _EMPTY
        # One C-level pass over the span's keys finds both id keys and the event type.
        marked = bool(attributes) and not self._no_marked_keys_in(attributes)
        events = span._events
        is_event = (marked and _EVENT_TYPE in attributes) or bool(
            getattr(events, "_dq", events) and has_business_events(span)
        )
        trace_id = context[0]
        if marked or is_event:
            self._check_pid()
        elif trace_id not in self._event_traces and trace_id not in self._trace_ids:
            return  # the common case: nothing in this trace concerns us
        parent = span._parent
        root = parent is None or parent[2]
        if is_event:  # its ids are recorded by the worker, off this thread
            self._enqueue_event_span(span, trace_id, start_baggage, root)  # type: ignore[arg-type]
        elif marked:
            self._trace_ids.record(trace_id, attributes, root=root)
        if root and (trace_id in self._event_traces or trace_id in self._trace_ids):
            self._event_traces.pop(trace_id, None)
            if self._trace_ids.root_ended(trace_id):
                self._ended_waiting.append(trace_id)
                self._worker.wake()

    def _enqueue_event_span(
        self,
        span: ReadableSpan,
        trace_id: int,
        start_baggage: Mapping[str, object] | None,
        root: bool,
    ) -> None:
        if not self._enabled:
            self._drop_item(span, "no_api_key")
            return
        if not root:  # a root event span ends its own trace: nothing to wait for
            event_traces = self._event_traces
            event_traces[trace_id] = None
            if len(event_traces) > self._config.max_traces:
                forget_oldest_share(event_traces)
        self._submit(EventSpan(span, self._live.ancestors(span), start_baggage))

    def submit_attributes(
        self,
        attributes: Mapping[str, AttributeValue],
        *,
        baggage: Mapping[str, object],
        insert_id: str,
        time_ns: int,
    ) -> None:
        """Queue one event given as bare attributes (``track()`` with no recording span);
        ids missing from ``attributes`` are taken from ``baggage``."""
        self._check_pid()
        if not self._enabled:
            self._pipeline.stats.add_dropped("no_api_key")
            return
        result = map_event_attributes(
            attributes,
            source_name="track()",
            insert_id=insert_id,
            time_ns=time_ns,
            linked=self._link_keys.ids_from(baggage),
            default_product_id=self._config.product_id,
            link_keys=self._link_keys,
        )
        self._pipeline.report_invalid(result.invalid)
        for event in result.events:
            self._submit(event)

    def record_trace_ids(
        self, trace_id: int, ids: Mapping[str, AttributeValue], *, authoritative: bool
    ) -> None:
        """Ids for a whole trace, from the helpers. ``authoritative`` ones replace earlier values
        and outrank other spans of the trace; events of that trace still waiting get them."""
        if authoritative:
            self._trace_ids.attach(trace_id, ids)
        else:
            self._trace_ids.record(trace_id, ids, root=False)

    def _submit(self, item: WorkItem) -> None:
        if self._worker.submit(item):
            return  # counted as queued by the worker, off this thread
        if self._is_shutdown:
            self._drop_item(item, "shutdown")
        else:
            self._drop_queue_full(item)

    def _drop_queue_full(self, item: WorkItem) -> None:
        """On the application thread: count, warn and keep the item for the worker, which maps
        it and calls ``on_drop`` (for at most ``MAX_DROPS_KEPT`` items waiting; past that
        they are only counted, and the worker says how many ``on_drop`` did not see)."""
        count = _event_count(item)
        self._pipeline.stats.add_dropped("queue_full", count)
        self._log.warning(
            "queue-full",
            "otel_greenflash queue is full (max_queue_size=%d): %d new business event(s) "
            "dropped; see stats()['dropped']['queue_full']",
            self._config.max_queue_size,
            count,
            count=count,
        )
        if self._on_drop is not None:
            with self._dropped_lock:
                if len(self._dropped) < MAX_DROPS_KEPT:
                    self._dropped.append(item)
                else:
                    self._dropped_uncalled += count

    def _drop_item(self, item: WorkItem | ReadableSpan, reason: str) -> None:
        """Count (per business event) and report an item that will not be sent."""
        self._pipeline.stats.add_dropped(reason, _event_count(item))
        self._call_on_drop(item, reason)

    def _call_on_drop(self, item: WorkItem | ReadableSpan, reason: str) -> None:
        if self._on_drop is None:
            return
        try:
            events = self._events_of(item)
        except Exception:
            logger.exception("otel_greenflash could not map a dropped span for on_drop")
            return
        try:
            self._on_drop(events, reason)
        except Exception:
            logger.exception("otel_greenflash on_drop callback raised")

    def _pass_drops_on(self) -> None:
        """Map the items dropped from a full queue and call ``on_drop`` (worker, or shutdown)."""
        dropped = self._dropped
        while dropped:
            try:
                item = dropped.popleft()
            except IndexError:  # another thread took it
                break
            self._call_on_drop(item, "queue_full")
        with self._dropped_lock:
            uncalled, self._dropped_uncalled = self._dropped_uncalled, 0
        if uncalled:
            self._log.warning(
                "queue-full-uncalled",
                "otel_greenflash: %d business event(s) dropped from the full queue were not "
                "passed to on_drop (at most %d dropped spans wait for it); they are counted in "
                "stats()['dropped']['queue_full']",
                uncalled,
                MAX_DROPS_KEPT,
                count=uncalled,
            )

    def _worker_chores(self) -> None:
        """Every worker cycle: ``on_drop`` for a full queue's drops, and the counts of rate-
        limited warnings whose interval ended."""
        self._pass_drops_on()
        self._log.flush_due()
        self._pipeline.report_held_warnings()

    def _events_of(self, item: WorkItem | ReadableSpan) -> list[BusinessEvent]:
        """The events of a dropped item, for ``on_drop`` (not counted as invalid: dropped)."""
        if isinstance(item, BusinessEvent):
            return [item]
        span = item.span if isinstance(item, EventSpan) else item
        return self._pipeline.map_span(span, report=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver every event taken before the call, waiting ones included (spooled ones
        too); True only when each is settled (sent, refused, or failed for good)."""
        return self._flush(timeout_millis / 1000, drain=True)

    def deliver_queued(self, timeout_millis: int = 30000) -> bool:
        """Like :meth:`force_flush`, but events waiting for their trace's root keep waiting."""
        return self._flush(timeout_millis / 1000, drain=False)

    def _flush(self, timeout_seconds: float, *, drain: bool) -> bool:
        self._check_pid()
        deadline = time.monotonic() + timeout_seconds
        if not self._worker.flush(timeout_seconds, drain=drain):
            return False

        def drain_worker(seconds: float) -> bool:
            return self._worker.flush(seconds, drain=drain)

        return self._pipeline.flush(max(0.0, deadline - time.monotonic()), drain_worker)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Deliver what fits in the timeout, stop, and report what was not delivered."""
        if self._is_shutdown:
            return
        self._check_pid()
        self._is_shutdown = True
        try:
            self._shut_down(timeout_millis)
        finally:
            self._shutdown_finished = True
            _termination.after_shutdown(any_left=bool(active_processors()))

    def _shut_down(self, timeout_millis: int) -> None:
        deadline = time.monotonic() + timeout_millis / 1000
        self._worker.shutdown(timeout_millis / 1000)
        undelivered = self._pipeline.shutdown(max(0.0, deadline - time.monotonic()))
        for item in self._worker.abandon():
            self._drop_item(item, "shutdown")
            undelivered += _event_count(item)
        self._pass_drops_on()  # what the worker did not get to
        # A worker still running may be using the spool; then its file stays for adoption.
        kept = self._pipeline.close_spool() if self._worker.stopped else 0
        self._log.flush()  # every count the rate limits still hold
        self._pipeline.report_held_warnings(everything=True)
        if undelivered:
            logger.warning(
                "otel_greenflash shut down before delivering %d business event(s); "
                "see stats()['dropped']['shutdown']%s",
                undelivered,
                f"; {kept} kept in the spool for the next start" if kept else "",
            )
        elif kept:
            logger.warning(
                "otel_greenflash shut down with %d business event(s) not yet delivered, kept in "
                "the spool for the next start",
                kept,
            )

    def holds_events(self) -> bool:
        """True while any business event taken here is not settled yet."""
        if self._is_shutdown:
            return False
        return not self._worker.idle or len(self._waiting) > 0 or self._pipeline.engine.pending > 0

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters (each business event ends in exactly one of
        ``sent``, ``failed``, ``invalid`` or ``dropped``)."""
        snapshot = self._pipeline.stats.snapshot()
        snapshot["waiting"] = len(self._waiting)
        if not self._is_shutdown:
            with contextlib.suppress(Exception):  # a broken spool must not break stats()
                snapshot["spool"] = self._pipeline.spool_counts() or {}
        return snapshot

    def _check_pid(self) -> None:
        """Forked without at-fork hooks (uWSGI forks from C): start afresh in this process."""
        if getattr(self, "_pid", None) not in (None, _getpid()):
            self._pid = _getpid()
            self._restart_after_fork()

    def _wake_worker(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.wake()

    # -- worker thread -----------------------------------------------------------------------

    def _handle_batch(self, batch: list[WorkItem], draining: bool) -> None:
        self._worker_chores()
        now = time.monotonic()
        cut_short_by = "shutdown" if self._is_shutdown else "flush"
        if batch:
            self._pipeline.stats.add_queued(sum(_event_count(item) for item in batch))
        for item in batch:  # first the ids of every event span, for the events that follow
            if isinstance(item, EventSpan):
                parent = item.span.parent
                root = parent is None or parent.is_remote
                self._trace_ids.record(
                    item.trace_id, plain_attributes(item.span.attributes), root=root
                )
        events: list[BusinessEvent] = []
        held: list[BusinessEvent] = []
        spooling = self._pipeline.spooling
        for item in batch:
            if isinstance(item, BusinessEvent):
                events.append(item)
                continue
            linked = self._linked_ids(item)
            decision = self._wait_decision(item, linked, mark=not draining)
            if decision == "linked" or decision == "ended":
                events.extend(self._events_for(item, linked=linked))
            elif draining:
                events.extend(self._events_for(item, cut_short=cut_short_by, linked=linked))
            else:
                if spooling:  # durable while it waits: written as known now
                    held.extend(self._pipeline.map_span(item.span, linked, report=False))
                pushed_out = self._waiting.park(item, now)
                if pushed_out is not None:
                    events.extend(self._events_for(pushed_out, cut_short="waiting_full"))
        if held:
            self._pipeline.hold(held)
        if draining:
            for item in self._waiting.release_all():
                events.extend(self._events_for(item, cut_short=cut_short_by))
        else:
            while self._ended_waiting:
                for item in self._waiting.release_trace(self._ended_waiting.pop()):
                    events.extend(self._events_for(item))
            for item in self._waiting.release_expired(now):
                events.extend(self._events_for(item, cut_short="linger_expired"))
            self._trace_ids.purge(now)
        self._pipeline.deliver(events)

    def _linked_ids(self, item: EventSpan) -> dict[str, AttributeValue]:
        """Levels 2-4 for an event span: live ancestors (nearest first), baggage, trace."""
        keys = self._link_keys
        primary: list[Mapping[str, AttributeValue]] = []
        aliased: list[Mapping[str, AttributeValue]] = []
        for ancestor in item.ancestors:
            attributes = plain_attributes(ancestor._attributes)
            if attributes and not self._no_marked_keys_in(attributes):  # skips most spans
                ids, alias_ids = keys.split_ids(attributes)
                primary.append(ids)
                aliased.append(alias_ids)
        # At the ancestor level, as in the trace: greenflash.* keys (nearest first) beat aliases.
        levels = [*primary, *aliased, keys.ids_from(item.baggage)]
        levels.append(self._trace_ids.ids(item.trace_id))
        return merge_ids(levels)

    def _wait_decision(
        self, item: EventSpan, linked: Mapping[str, AttributeValue], *, mark: bool
    ) -> str:
        """``"linked"`` when every event of the span knows its conversation; else whether the
        trace's root is still open (``"wait"``) or ``"ended"``."""
        parent = item.span.parent
        if parent is None or parent.is_remote:
            return "ended"  # the event span is the local root: its trace is over
        if has_conversation(linked) or all(
            has_conversation(self._link_keys.ids_from(own)) for own in _event_attribute_sets(item)
        ):
            return "linked"
        if mark:
            return self._trace_ids.wait(item.trace_id)
        return "wait" if self._trace_ids.is_open(item.trace_id) else "ended"

    def _events_for(
        self,
        item: EventSpan,
        cut_short: str | None = None,
        linked: Mapping[str, AttributeValue] | None = None,
    ) -> list[BusinessEvent]:
        """Map an event span with the ids known now (``linked``, if just computed).
        ``cut_short`` says why it stopped waiting.

        Never raises: a mapping bug must not take the rest of the batch with it.
        """
        try:
            if linked is None:
                linked = self._linked_ids(item)
            events = self._pipeline.map_span(item.span, linked)
        except Exception:
            logger.exception("otel_greenflash could not map span %r", item.span.name)
            self._pipeline.stats.add_invalid(_event_count(item))
            return []
        if cut_short is not None:
            unlinked = sum(1 for event in events if not _has_conversation_field(event))
            if unlinked:
                self._pipeline.stats.add_unlinked(cut_short, unlinked)
                self._log.warning(
                    f"unlinked-{cut_short}",
                    "otel_greenflash sent %d business event(s) without a conversation id: %s; "
                    "see stats()['unlinked']",
                    unlinked,
                    _UNLINKED_REASONS.get(cut_short, cut_short),
                    count=unlinked,
                )
        return events


def _event_count(item: WorkItem | ReadableSpan) -> int:
    if isinstance(item, BusinessEvent):
        return 1
    return count_business_events(item.span if isinstance(item, EventSpan) else item)


def _event_attribute_sets(item: EventSpan) -> list[Mapping[str, AttributeValue]]:
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
