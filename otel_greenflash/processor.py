"""``GreenflashSpanProcessor``: picks event spans at on_end and ships them in the background."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Mapping

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

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
    has_conversation,
    merge_ids,
)
from ._logging import RateLimitedLog, logger
from ._mapping import has_business_events, map_event_attributes
from ._pipeline import EventPipeline
from ._stats import StatsSnapshot
from ._transport import Transport
from ._worker import BackgroundWorker

WorkItem = EventSpan | BusinessEvent

_UNLINKED_REASONS = {
    "waiting_full": "too many events were waiting for their trace's local root span",
    "traces_full": "more open traces than max_traces, so the trace's end could not be awaited",
    "linger_expired": "the trace's local root span did not end within linger_seconds",
    "flush": "force_flush() sent events still waiting for their trace's root span",
    "shutdown": "shutdown() sent events still waiting for their trace's root span",
}

# The API's baggage key: reading it directly avoids baggage.get_all()'s copy on every span start.
_BAGGAGE_KEY = baggage_api._BAGGAGE_KEY
_get_value = context_api.get_value
_EVENT_TYPE = attr.EVENT_TYPE
_EMPTY: Mapping[str, AttributeValue] = {}

_active_processors: weakref.WeakSet[GreenflashSpanProcessor] = weakref.WeakSet()


def active_processors() -> list[GreenflashSpanProcessor]:
    """Processors created in this process and not shut down (used by the helpers)."""
    return [processor for processor in list(_active_processors) if not processor._is_shutdown]


def _restart_in_child() -> None:
    for processor in list(_active_processors):
        processor._restart_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)


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
        aliases: Mapping[str, str] | None = None,
        linger_seconds: float | None = None,
        max_waiting: int | None = None,
        max_traces: int | None = None,
        custom_headers: Mapping[str, str] | None = None,
        dry_run: bool | None = None,
        allow_insecure_http: bool | None = None,
        enabled: bool | None = None,
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
            aliases=aliases,
            linger_seconds=linger_seconds,
            max_waiting=max_waiting,
            max_traces=max_traces,
            custom_headers=custom_headers,
            dry_run=dry_run,
            allow_insecure_http=allow_insecure_http,
            enabled=enabled,
        )
        config = self._config
        self._link_keys = LinkKeys(config.aliases)
        self._no_id_keys_in = self._link_keys.all_keys.isdisjoint
        self._on_drop = on_drop
        self._is_shutdown = False
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
        )
        if not self._enabled:
            logger.warning(
                "%s is not set: GreenflashSpanProcessor will send no business events", ENV_API_KEY
            )
        self._start_worker()
        _active_processors.add(self)

    def _disable(self) -> None:
        """GREENFLASH_ENABLED=false or OTEL_SDK_DISABLED=true: every hook is a no-op."""
        self._is_shutdown = True
        self._pipeline = EventPipeline(self._config, link_keys=self._link_keys, start=False)
        self._waiting = WaitingEvents()
        self.on_start = _ignore  # type: ignore[method-assign]
        self.on_end = _ignore  # type: ignore[method-assign]
        self.force_flush = _flushed  # type: ignore[method-assign]
        self.shutdown = _ignore  # type: ignore[method-assign]

    def _start_worker(self) -> None:
        """(Re)create everything that belongs to one process: threads, queues, linking state."""
        self._pid = os.getpid()
        self._fork_lock = threading.Lock()
        self._live = LiveSpans()
        config = self._config
        self._trace_ids = TraceIds(
            max_traces=config.max_traces, retain_seconds=max(30.0, config.linger_seconds)
        )
        self._waiting = WaitingEvents(
            max_waiting=config.max_waiting, linger_seconds=config.linger_seconds
        )
        self._ended_waiting: list[int] = []
        self._worker: BackgroundWorker[WorkItem] = BackgroundWorker(
            self._handle_batch,
            name="otel-greenflash-processor",
            max_queue_size=config.max_queue_size,
            max_batch_size=config.max_export_batch_size,
            schedule_delay_seconds=config.schedule_delay_seconds,
        )

    def _restart_after_fork(self) -> None:
        """In a forked child: fresh worker and engine, empty queues (nothing sent twice)."""
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

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span._context
        if context is None:
            return
        span_id = context.span_id
        live = self._live
        if len(live.spans) < live.max_spans:  # spans that never end stop being remembered
            live.spans[span_id] = span
        start_baggage = _get_value(_BAGGAGE_KEY, parent_context)
        if start_baggage:
            live.baggage[span_id] = start_baggage  # type: ignore[assignment]

    def on_end(self, span: ReadableSpan) -> None:
        context = span._context
        if context is None:
            return
        span_id = context.span_id
        live = self._live
        live.spans.pop(span_id, None)
        start_baggage = live.baggage.pop(span_id, None) if live.baggage else None
        attributes = span._attributes
        attributes = getattr(attributes, "_dict", attributes) or _EMPTY
        trace_id = context.trace_id
        parent = span._parent
        root = parent is None or parent.is_remote
        if attributes and not self._no_id_keys_in(attributes):
            self._trace_ids.record(trace_id, self._link_keys.ids_from(attributes), root=root)
        if _EVENT_TYPE in attributes or (span._events and has_business_events(span)):
            self._enqueue_event_span(span, trace_id, start_baggage)
        if root and trace_id in self._trace_ids:
            self._on_local_root_end(trace_id)

    def _on_local_root_end(self, trace_id: int) -> None:
        if self._trace_ids.root_ended(trace_id):
            self._ended_waiting.append(trace_id)
            self._worker.wake()

    def _enqueue_event_span(
        self, span: ReadableSpan, trace_id: int, start_baggage: Mapping[str, object] | None
    ) -> None:
        if not self._enabled:
            self._stats_drop("no_api_key", span)
            return
        self._trace_ids.expect(trace_id)
        self._submit(EventSpan(span, self._live.ancestors(span), start_baggage))

    def submit_attributes(
        self,
        attributes: Mapping[str, AttributeValue],
        *,
        linked: Mapping[str, AttributeValue],
        insert_id: str,
        time_ns: int,
    ) -> None:
        """Queue one event given as bare attributes (``track()`` with no recording span)."""
        if not self._enabled:
            self._pipeline.stats.add_dropped("no_api_key")
            return
        result = map_event_attributes(
            attributes,
            source_name="track()",
            insert_id=insert_id,
            time_ns=time_ns,
            linked=linked,
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
        if self._pid != os.getpid():  # forked without at-fork hooks (e.g. uWSGI)
            with self._fork_lock:
                if self._pid != os.getpid():
                    self._restart_after_fork()
        if self._worker.submit(item):
            self._pipeline.stats.add_queued()
            return
        reason = "shutdown" if self._is_shutdown else "queue_full"
        self._stats_drop(reason, item)

    def _stats_drop(self, reason: str, item: WorkItem | ReadableSpan) -> None:
        self._pipeline.stats.add_dropped(reason)
        if reason == "queue_full":
            self._log.warning(
                "queue-full",
                "otel_greenflash queue is full (max_queue_size=%d): new business events are "
                "dropped and counted in stats()['dropped']['queue_full']",
                self._config.max_queue_size,
            )
        if self._on_drop is not None:
            try:
                self._on_drop(self._events_of(item), reason)
            except Exception:
                logger.exception("otel_greenflash on_drop callback raised")

    def _events_of(self, item: WorkItem | ReadableSpan) -> list[BusinessEvent]:
        if isinstance(item, BusinessEvent):
            return [item]
        span = item.span if isinstance(item, EventSpan) else item
        return self._pipeline.map_span(span)

    # -- lifecycle ---------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued so far, waiting events included; False if the timeout passed."""
        deadline = time.monotonic() + timeout_millis / 1000
        if not self._worker.flush(timeout_millis / 1000):
            return False
        return self._pipeline.engine.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Deliver what fits in the timeout, stop, and report what was not delivered."""
        if self._is_shutdown:
            return
        self._is_shutdown = True
        deadline = time.monotonic() + timeout_millis / 1000
        self._worker.shutdown(timeout_millis / 1000)
        undelivered = self._pipeline.engine.shutdown(max(0.0, deadline - time.monotonic()))
        left_in_queue = self._worker.abandon()
        if left_in_queue:
            self._pipeline.stats.add_dropped("shutdown", left_in_queue)
        undelivered += left_in_queue
        if undelivered:
            logger.warning(
                "otel_greenflash shut down before delivering %d business event(s); "
                "see stats()['dropped']['shutdown']",
                undelivered,
            )

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters."""
        snapshot = self._pipeline.stats.snapshot()
        snapshot["waiting"] = len(self._waiting)
        return snapshot

    # -- worker thread -----------------------------------------------------------------------

    def _handle_batch(self, batch: list[WorkItem], draining: bool) -> None:
        now = time.monotonic()
        ready: list[EventSpan] = []
        events: list[BusinessEvent] = []
        for item in batch:
            if isinstance(item, BusinessEvent):
                events.append(item)
            elif draining:
                ready.append(item)
            elif (decision := self._wait_decision(item)) == "untracked":
                events.extend(self._events_for(item, cut_short="traces_full"))
            elif decision != "wait":
                ready.append(item)
            else:
                pushed_out = self._waiting.park(item, now)
                if pushed_out is not None:
                    events.extend(self._events_for(pushed_out, cut_short="waiting_full"))
        if draining:
            released = self._waiting.release_all()
            cut_short = "shutdown" if self._is_shutdown else "flush"
        else:
            while self._ended_waiting:
                ready.extend(self._waiting.release_trace(self._ended_waiting.pop()))
            released = self._waiting.release_expired(now)
            cut_short = "linger_expired"
            self._trace_ids.purge(now)
        for item in ready:
            events.extend(self._events_for(item))
        for item in released:
            events.extend(self._events_for(item, cut_short=cut_short))
        if events:
            self._pipeline.engine.submit(events)

    def _linked_ids(self, item: EventSpan) -> dict[str, AttributeValue]:
        keys = self._link_keys
        levels = [keys.ids_from(ancestor.attributes) for ancestor in item.ancestors]
        levels.append(keys.ids_from(item.baggage))
        levels.append(self._trace_ids.ids(item.trace_id))
        return merge_ids(levels)

    def _wait_decision(self, item: EventSpan) -> str:
        """``"wait"`` when no conversation id is known yet and the trace's local root is open."""
        own = self._link_keys.ids_from(item.span.attributes)
        if has_conversation(own) or has_conversation(self._linked_ids(item)):
            return "linked"
        return self._trace_ids.wait(item.trace_id)

    def _events_for(self, item: EventSpan, cut_short: str | None = None) -> list[BusinessEvent]:
        """Map an event span with the ids known now. ``cut_short`` says why it stopped waiting."""
        linked = self._linked_ids(item)
        events = self._pipeline.map_span(item.span, linked)
        if cut_short is not None and not has_conversation(linked):
            unlinked = sum(1 for event in events if not _has_conversation_field(event))
            if unlinked:
                self._pipeline.stats.add_unlinked(cut_short, unlinked)
                self._log.warning(
                    f"unlinked-{cut_short}",
                    "otel_greenflash sent business event(s) without a conversation id (%s); "
                    "see stats()['unlinked']",
                    _UNLINKED_REASONS.get(cut_short, cut_short),
                )
        return events
