"""One pipeline behind every intake: finished record → link → map → lane → deliver.

Intakes (the span processor, the span and log record exporters, the log record processor,
decoded OTLP) turn what they were given into finished records (:mod:`.._records`) and submit
them here. One daemon worker takes them in batches: the link stage (:mod:`.._link.linker`) finds
each record's conversation or parks it until its trace's root ends, the map stage
(:mod:`.._map.mapper`) builds the Events API bodies, and the lane stage (:mod:`.._lane.lanes`)
hands them to the delivery loop (:mod:`.._deliver.engine`), through the spool when there is one.

Intakes created with the same settings share one pipeline (see :mod:`.registry`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.util.types import AttributeValue

from .. import _record_only
from .. import attributes as attr
from .._callbacks import callback_running
from .._config import ENV_API_KEY, GreenflashConfig
from .._deliver.engine import DeliveryEngine, ErrorCallback
from .._deliver.transport import Transport
from .._event import BusinessEvent, DeliveryItem
from .._green import Joinable, start_worker_joiner
from .._intake_kind import IntakeKind
from .._lane.lanes import Lanes
from .._lane.spool_feed import SpoolFeed
from .._link.linker import Linker
from .._link.rules import LinkKeys
from .._link.status import StatusWriter
from .._logging import RateLimitedLog, logger
from .._map.conversations import ConversationMapper
from .._map.mapper import EventMapper
from .._records import (
    EVENT,
    LOG_EVENT_NAME,
    EventLog,
    MapOutcome,
    Record,
    event_count,
    queue_bytes,
    request_endpoint,
)
from .._stats import DeliveryStats, DropCallback, DropReason, StatsSnapshot
from .drops import Drops
from .worker import BackgroundWorker

_getpid = os.getpid
_lock = threading.Lock()
"""Guards the intake counts of every pipeline."""


class EventPipeline:
    """Links, maps, holds and delivers the records its intakes submit; thread-safe."""

    def __init__(
        self,
        config: GreenflashConfig,
        *,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        transport: Transport | None = None,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        """``on_stopped`` runs when :meth:`shutdown` has finished."""
        self.config = config
        self.link_keys = LinkKeys(config.aliases)
        self.on_error = on_error
        self.on_drop = on_drop
        self.transport = transport
        self._on_stopped = on_stopped
        self.enabled = config.sends or (config.enabled and transport is not None)
        self.is_shutdown = False
        self.shutdown_finished = False
        self.clock: Callable[[], float] = time.monotonic
        """The link stage's time (parking deadlines, expiry); tests move it forward."""
        self._intakes: dict[IntakeKind, int] = {}
        """Attached intakes by kind (``span_processor``, ``span_exporter``, ``log_…``)."""
        self.linker = Linker(config, link_keys=self.link_keys)
        self.linker.unsampled_spans_reach_us = _record_only.bridged
        self._log = RateLimitedLog()
        if not self.enabled:
            logger.warning(
                "%s is not set: otel_greenflash will send no business events", ENV_API_KEY
            )
        self._start()

    def _start(self) -> None:
        """Create what belongs to one process: counters, threads, queues, connections."""
        self._new_counters()
        self.lanes = Lanes(
            self.config,
            self.stats_counters,
            on_error=self.on_error,
            on_drop=self.on_drop,
            transport=self.transport,
            wake_worker=self.wake,
        )
        self._new_worker()

    def _new_counters(self) -> None:
        self.pid = _getpid()
        self.stats_counters = DeliveryStats()
        self.mapper = EventMapper(self.config, self.link_keys, self.stats_counters)
        self.conversations = ConversationMapper(self.config, self.link_keys, self.stats_counters)
        self.link_status = StatusWriter(f"{id(self):x}")
        self.drops = Drops(
            self.stats_counters,
            self.mapper,
            self.on_drop,
            self.config.max_queue_size,
            self.config.max_queue_bytes,
        )

    def _new_worker(self) -> None:
        config = self.config
        self.worker: BackgroundWorker[Record] = BackgroundWorker(
            self._handle_batch,
            name="otel-greenflash-processor",
            max_queue_size=config.max_queue_size,
            max_queue_bytes=config.max_queue_bytes,
            max_batch_size=config.max_export_batch_size,
            schedule_delay_seconds=config.schedule_delay_seconds,
            gather_seconds=config.send_delay_seconds,
        )

    # -- intakes ------------------------------------------------------------------------------

    def attach(self, kind: IntakeKind) -> None:
        """An intake of ``kind`` feeds this pipeline from now on."""
        with _lock:
            self._intakes[kind] = self._intakes.get(kind, 0) + 1
            if kind.sees_span_ends:
                self.linker.sees_span_ends = True
            if kind is IntakeKind.SPAN_PROCESSOR:
                self.linker.tracks_open_roots = True
            if kind is IntakeKind.OTLP:  # senders export what they chose to; flags are often absent
                self.linker.unsampled_spans_reach_us = _yes
            if kind in (IntakeKind.LOG_EXPORTER, IntakeKind.OTLP):
                self.linker.notes_every_root = True

    def has_intake(self, kind: IntakeKind) -> bool:
        return self._intakes.get(kind, 0) > 0

    def detach(self, kind: IntakeKind, timeout_millis: int) -> None:
        """An intake stops: the last one shuts the pipeline down; before that, what is queued
        is delivered (within the timeout) and waiting records keep waiting."""
        with _lock:
            count = self._intakes.get(kind, 0)
            if count <= 1:
                self._intakes.pop(kind, None)
            else:
                self._intakes[kind] = count - 1
            last = not self._intakes
        if last:
            self.shutdown(timeout_millis)
        elif not self.is_shutdown:
            self.deliver_queued(timeout_millis)

    def span_ended(
        self,
        span: ReadableSpan,
        start_baggage: Mapping[str, object] | None = None,
        *,
        live: bool = False,
        outcome: MapOutcome | None = None,
    ) -> None:
        """A finished span from any span intake (``live``: its start was seen, so its live
        ancestors can be read; ``outcome``: told what the map stage makes of it)."""
        if self.pid != _getpid():
            self.restart_after_fork()
        linker = self.linker
        item, released = linker.finished_span(span, start_baggage, with_ancestors=live)
        if item is not None and live and linker.seen_before(item):
            item = None  # two span processors of this pipeline on one provider: queued once
        if item is not None:
            if outcome is not None:
                item.outcome = outcome
            dropped = getattr(span._events, "dropped", 0)  # the SDK's BoundedList's count
            if dropped:
                self.drops.sdk_dropped_span_events(span.name, dropped)
            if self.enabled:
                self.submit(item)
            else:
                self.drops.drop(item, DropReason.NO_API_KEY)
        if released:
            self.worker.wake()

    def linking_span_ended(
        self, trace_id: int, span_id: int, *, root: bool, ids: Mapping[str, Any]
    ) -> None:
        """A finished span known to carry no business event, given by what the link stage
        reads of it (decoded OTLP builds no SDK span for it); as :meth:`span_ended` would do
        for that span. ``ids``: its attributes under the id and alias keys."""
        self.check_pid()
        if self.linker.linking_span_ended(trace_id, span_id, root=root, ids=ids):
            self.worker.wake()

    def log_emitted(self, record: EventLog) -> None:
        """A log record that is a business event, from any log intake."""
        self.check_pid()
        if not self.enabled:
            self.drops.drop(record, DropReason.NO_API_KEY)
            return
        if record.trace_id:
            if not self.linker.sees_span_ends:
                self._log.warning(
                    "logs-without-spans",
                    "otel_greenflash: log records carry trace ids, but no span processor or span "
                    "exporter with the same settings feeds their pipeline: they link through "
                    "their own attributes and baggage only (configure() installs both)",
                )
            elif not record.in_ended_local_root:
                self.linker.expect_root(record.trace_id)
        self.submit(record)

    def drop(self, record: Record | ReadableSpan, reason: DropReason) -> int:
        """Record ``record`` as lost for ``reason`` in this process's counters (a forked child
        has drops of its own: look them up at each call); return how many events it held."""
        return self.drops.drop(record, reason)

    def submit(self, item: Record) -> None:
        """Queue a record with its estimated size; count it as dropped when refused. A record
        an intake answers for (``outcome``: the gateway, which hands over only what fits the
        queue by count and holds the record in its request anyway) is not refused for bytes."""
        worker = self.worker
        bounded = isinstance(item, BusinessEvent) or item.outcome is None
        if worker.submit(item, queue_bytes(item), bounded):
            return  # counted as queued by the worker, off the caller's thread
        if self.is_shutdown:
            self.drops.drop(item, DropReason.SHUTDOWN)
        else:
            self.drops.queue_full(item, by_bytes=worker.full_by_bytes())

    def tracked(
        self,
        attributes: Mapping[str, AttributeValue],
        *,
        span: SdkSpan | None,
        trace_id: int,
        span_id: int,
        sampled: bool,
        baggage: Mapping[str, object],
        time_ns: int,
        kind: str = EVENT,
    ) -> None:
        """One ``track()`` call that did not become a span event (no recording span, a span
        whose events do not reach us, or a span at the SDK's event limit), or one ``rate()``
        call (``kind`` :data:`FEEDBACK`): a record like a log record's, linked through ``span``
        (live), its trace and ``baggage``."""
        ancestors = self.linker.live.ancestors(span) if span is not None else ()
        record = EventLog(
            attributes,
            event_name=LOG_EVENT_NAME if kind == EVENT else attr.RATING_EVENT_NAME,
            timestamp=time_ns,
            observed_timestamp=None,
            trace_id=trace_id,
            span_id=span_id,
            span=span,
            ancestors=ancestors,
            baggage=baggage,
            sampled=sampled,
            source="track()" if kind == EVENT else "rate()",
            kind=kind,
        )
        self.log_emitted(record)

    def record_trace_ids(
        self, trace_id: int, ids: Mapping[str, AttributeValue], *, authoritative: bool
    ) -> None:
        """Ids for a whole trace, from the helpers. ``authoritative`` ones replace earlier values
        and outrank other spans of the trace; events of that trace still waiting get them."""
        if authoritative:
            self.linker.trace_ids.attach(trace_id, ids)
        else:
            self.linker.trace_ids.record(trace_id, ids, root=False)

    # -- worker thread -----------------------------------------------------------------------

    def _handle_batch(self, batch: list[Record], draining: bool) -> None:
        self._chores()
        if batch:
            self.stats_counters.add_queued(sum(event_count(item) for item in batch))
        cut_short_by = "shutdown" if self.is_shutdown else "flush"
        ready, parked = self.linker.sort(
            batch, self.clock(), draining=draining, cut_short_by=cut_short_by
        )
        if parked and self.lanes.spooling:  # durable while they wait: written as known now
            held = [
                event
                for item, linked, _ in parked
                for event in self.mapper.events(item, linked, report=False)
            ]
            if held:
                self.lanes.hold(held)
        items: list[DeliveryItem] = []
        for item, linked, cut_short in ready:
            items.extend(self.mapper.events(item, linked, cut_short))
            if not isinstance(item, BusinessEvent) and request_endpoint(item) is not None:
                items.extend(self.conversations.requests(item, linked))
        self.lanes.deliver(items)

    def _chores(self) -> None:
        """Every worker cycle: ``on_drop`` for a full queue's drops, the counts of rate-
        limited warnings whose interval ended, and (every ~30 s) the spool's orphan scan, in
        steps of a few batches per cycle."""
        self.drops.pass_on()
        for log in self._logs():
            log.flush_due()
        self.link_status.maybe_write(self.mapper.recent)
        spool = self.feed.spool
        if spool is None:
            return
        adopted = spool.adopt_orphans_when_due()  # a step: a few batches at most
        if adopted:  # what neighbours that died beside this live process left
            self.stats_counters.add_queued(adopted)
        if spool.adopting:  # the next step on the next cycle, right after the queued records
            self.wake()

    def _logs(self) -> tuple[RateLimitedLog, ...]:
        mapper = self.mapper
        return (
            self._log,
            self.drops.log,
            mapper.invalid_log,
            mapper.unlinked_log,
            self.conversations.log,
            *self.lanes.held_warnings(),
        )

    def wake(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.wake()

    # -- lifecycle (any thread) ----------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver every event taken before the call, waiting ones included (spooled ones
        too); True only when each is settled (sent, refused, or failed for good)."""
        return self._flush(timeout_millis / 1000, drain=True)

    def deliver_queued(self, timeout_millis: int = 30000) -> bool:
        """Like :meth:`force_flush`, but events waiting for their trace's root keep waiting."""
        return self._flush(timeout_millis / 1000, drain=False)

    def _flush(self, timeout_seconds: float, *, drain: bool) -> bool:
        self.check_pid()
        callback = callback_running()
        if callback is not None:  # its thread is the one that would have to deliver
            self._log.warning(
                "flush-from-callback",
                "otel_greenflash: a flush called from the %s callback returns False at once; "
                "waiting there would hold up the delivery it waits for",
                callback,
            )
            return False
        deadline = time.monotonic() + timeout_seconds
        if not self.worker.flush(timeout_seconds, drain=drain):
            return False

        def drain_worker(seconds: float) -> bool:
            return self.worker.flush(seconds, drain=drain)

        return self.lanes.flush(max(0.0, deadline - time.monotonic()), drain_worker)

    def queue_room(self) -> int:
        """How many more records the queue takes now (only the worker makes more room)."""
        return self.worker.room

    def take_in(self, timeout_seconds: float) -> bool:
        """Wait until the worker has linked, mapped and laid down everything submitted
        before the call (into the spool, when there is one); False on timeout."""
        return self.worker.flush(timeout_seconds, drain=False)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Deliver what fits in the timeout, stop, and report what was not delivered."""
        if self.is_shutdown:
            return
        self.check_pid()
        if callback_running() is not None:  # not on the thread the shutdown waits for
            # An OS thread under gevent, where a Thread started here would be a greenlet of
            # this OS thread's hub, which never runs again once the callback returns. It is a
            # daemon: an exit right after the callback waits for it (registered first, so an
            # exit while it starts waits too).
            deadline = time.monotonic() + timeout_millis / 1000 + 1
            started: list[Joinable] = []

            def finish_before_exit() -> None:
                # A sleep, not a join: under gevent and eventlet the worker's greenlet (and
                # eventlet's shutdown green thread) must run meanwhile.
                while any(t.is_alive() for t in started) and time.monotonic() < deadline:
                    time.sleep(0.01)

            atexit.register(finish_before_exit)
            started.append(
                start_worker_joiner(
                    lambda: self.shutdown(timeout_millis), "otel-greenflash-shutdown"
                )
            )
            return
        self.is_shutdown = True
        try:
            self._shut_down(timeout_millis)
        finally:
            self.shutdown_finished = True
            if self._on_stopped is not None:
                self._on_stopped()

    def _shut_down(self, timeout_millis: int) -> None:
        deadline = time.monotonic() + timeout_millis / 1000
        self.worker.shutdown(timeout_millis / 1000)
        undelivered = self.lanes.shutdown(max(0.0, deadline - time.monotonic()))
        for item in self.worker.abandon():
            undelivered += self.drops.drop(item, DropReason.SHUTDOWN)
        self.drops.pass_on()  # what the worker did not get to
        # A worker still running may be using the spool; then its file stays for adoption.
        kept = self.lanes.close_spool() if self.worker.stopped else 0
        for log in self._logs():
            log.flush()  # every count the rate limits still hold
        self.link_status.remove()
        seen = self.stats_counters.snapshot()
        others = "messages" in seen or "ratings" in seen  # then the counts include their requests
        what = "request(s) (business events, messages, ratings)" if others else "business event(s)"
        if undelivered:
            logger.warning(
                "otel_greenflash shut down before delivering %d %s; "
                "see stats()['dropped']['shutdown']%s%s",
                undelivered,
                what,
                " and stats()['messages'|'ratings']['dropped']" if others else "",
                f"; {kept} kept in the spool for the next start" if kept else "",
            )
        elif kept:
            logger.warning(
                "otel_greenflash shut down with %d %s not yet delivered, kept in "
                "the spool for the next start",
                kept,
                what,
            )

    def holds_events(self) -> bool:
        """True while any business event taken here is not settled yet."""
        if self.is_shutdown:
            return False
        return not self.worker.idle or len(self.linker.waiting) > 0 or self.lanes.engine.pending > 0

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters (each business event ends in exactly one of
        ``sent``, ``failed``, ``invalid`` or ``dropped``)."""
        snapshot = self.stats_counters.snapshot()
        snapshot["waiting"] = len(self.linker.waiting)
        if not self.is_shutdown:
            with contextlib.suppress(Exception):  # a broken spool must not break stats()
                snapshot["spool"] = self.lanes.spool_counts() or {}
        return snapshot

    @property
    def engine(self) -> DeliveryEngine:
        return self.lanes.engine

    @property
    def feed(self) -> SpoolFeed:
        return self.lanes.feed

    # -- processes -----------------------------------------------------------------------------

    def check_pid(self) -> None:
        """Forked without at-fork hooks (uWSGI forks from C): start afresh in this process."""
        if self.pid != _getpid():
            self.restart_after_fork()

    def restart_after_fork(self) -> None:
        """In a forked child: fresh worker, loop and counters, empty queues and linking state
        (nothing is sent twice). Nothing of the parent's is reused: its locks may have been
        held by a thread that does not exist in the child."""
        if self.is_shutdown:
            return
        self.linker.reset_after_fork()
        self._new_counters()
        self.lanes.restart_after_fork(self.stats_counters)
        self._new_worker()


def _yes() -> bool:
    return True
