"""The gateway's intake: decoded OTLP batches into the pipeline, each acknowledged once durable.

Thin like the other intakes (:mod:`otel_greenflash.processor`, :mod:`otel_greenflash.logs`):
``accept`` builds finished records from decoded spans and log records and hands them to the
pipeline, then waits until the worker has linked, mapped and written their business events to
the spool (waiting ones as waiting rows). What the batch held that was invalid is what the map
stage found (a :class:`~otel_greenflash._records.MapOutcome` the records carry), not a second
mapping here. It refuses, so the sender keeps its data and retries, when the spool cannot take
the batch. Requests themselves (slots, deadlines, decoding off the event loop) are
:mod:`._ingest`'s.

Requests are taken concurrently (one thread each). Two things keep that safe:

- **Room is reserved.** A batch's events are counted against the spool's bound together with
  the events of batches accepted but not written yet, under one lock, so batches arriving
  together never overfill the spool (which would evict events already acknowledged).
- **The queue never overflows.** The pipeline's queue refuses what does not fit; the intake
  hands a batch over in parts no larger than the queue's free room (one part at a time) and
  waits for the worker between parts, so a batch larger than the queue is taken whole and no
  batch's records are dropped because of another one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from .._config import ConfigurationError, GreenflashConfig
from .._deliver.transport import Transport
from .._lane.spool import Spool
from .._lane.spool_feed import DiskFull
from .._pipeline.intake import PipelineIntake
from .._pipeline.pipeline import EventPipeline
from .._records import (
    LinkingSpan,
    MapOutcome,
    count_business_events,
    is_log_business_event,
    plain_attributes,
)
from .._stats import StatsSnapshot
from ..logs import event_log_of

RETRY_AFTER_SECONDS = 5.0
"""The retry delay suggested when the spool cannot take a batch now."""


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A batch taken for delivery: its business events are in the spool."""

    events: int
    """Business events accepted (valid ones)."""
    invalid: int
    """Business events that break the attribute convention (never sent)."""
    message: str
    """What was wrong with the first invalid one ('' when none)."""
    rejected_items: int = 0
    """Spans and log records that carry at least one invalid business event (what OTLP's
    ``rejected_spans`` / ``rejected_log_records`` count)."""


class NotAccepted(Exception):  # noqa: N818 - a refusal, not a failure of the gateway
    """The batch was not taken; the sender should retry after ``retry_after_seconds``."""

    def __init__(self, reason: str, retry_after_seconds: float = RETRY_AFTER_SECONDS) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds


class DurableIntake(PipelineIntake):
    """Feeds decoded OTLP batches to a pipeline of its own, with a spool."""

    _kind = "otlp"

    def __init__(self, config: GreenflashConfig, *, transport: Transport | None = None) -> None:
        if not config.spool_dir:
            raise ConfigurationError("the gateway acknowledges through the spool: set spool_dir")
        if not config.enabled:
            raise ConfigurationError("the gateway cannot run with GREENFLASH_ENABLED=false")
        pipeline = self._join(config, on_error=None, on_drop=None, transport=transport)
        assert pipeline is not None  # enabled, checked above
        pipeline.feed.memory_fallback = False  # a full disk refuses batches: senders keep them
        self._room = threading.Lock()
        """Guards the spool's count and the reservations below."""
        self._counted: tuple[Spool, int, int] | None = None
        """The latest count of a spool: (spool, events not yet delivered, its newest row's
        number when counting began)."""
        self._reserved = 0
        """Events of accepted batches that may not be in the spool yet (their room)."""
        self._unsettled: dict[int, int] = {}
        """Reservations of batches refused after they were handed to the pipeline: their
        events may still be written, so their room is kept until a later batch's wait for the
        worker covered them. By batch number."""
        self._numbers = itertools.count()
        self._handing_over = threading.Lock()
        """One part of a batch at a time goes to the pipeline's queue (see :meth:`_hand_over`)."""
        pipeline.take_in(config.timeout_seconds)  # the worker opens the spool

    def accept(
        self,
        spans: Sequence[ReadableSpan | LinkingSpan],
        log_records: Sequence[ReadableLogRecord],
        timeout_seconds: float,
    ) -> Acceptance:
        """Take a batch; return once its business events are durable. Blocking: call it
        from a thread. Raises :class:`NotAccepted` when the batch cannot be kept now.

        ``spans`` in the order they ended; a :class:`LinkingSpan` stands for a span without
        business events (linked exactly as the same span given in full would be)."""
        deadline = time.monotonic() + timeout_seconds
        received_ns = time.time_ns()
        pipeline = self._shared
        if self._is_shutdown or pipeline.is_shutdown:
            raise NotAccepted("the gateway is shutting down", 1.0)
        usable, reason = self._usable()
        if not usable:
            raise NotAccepted(reason, self._retry_after())
        event_logs = _business_event_logs(log_records)
        events = _business_event_count(spans) + len(event_logs)
        feed = pipeline.feed
        spool = feed.spool
        missed = feed.writes_missed
        reserved = 0
        if spool is not None and events:
            self._reserve(spool, events)
            reserved = events
        covered = self._unsettled_now()
        outcome = MapOutcome()
        handed_over = True
        try:
            try:
                self._hand_over(pipeline, spans, event_logs, outcome, received_ns, deadline)
            except _Refused as refusal:
                handed_over = refusal.handed_over
                raise
            if not pipeline.take_in(max(0.0, deadline - time.monotonic())):
                raise NotAccepted("the batch was not written to the spool in time", 1.0)
            if pipeline.is_shutdown:
                raise NotAccepted("the gateway is shutting down", 1.0)
            if feed.spool is None:
                raise NotAccepted("the spool stopped working (see the gateway's log)")
            if feed.missed_any(missed, frozenset(outcome.insert_ids)):  # some not written
                raise NotAccepted(_full_reason(feed.full), self._retry_after())
        except BaseException:
            self._release(reserved, covered=(), unsettled=handed_over)
            raise
        self._release(reserved, covered=covered, unsettled=False)
        invalid = outcome.invalid
        return Acceptance(
            events - invalid, invalid, outcome.first_problem, outcome.rejected_records
        )

    def _hand_over(
        self,
        pipeline: EventPipeline,
        spans: Sequence[ReadableSpan | LinkingSpan],
        event_logs: Sequence[tuple[LogRecord, Mapping[str, Any]]],
        outcome: MapOutcome,
        received_ns: int,
        deadline: float,
    ) -> None:
        """Give the batch to the pipeline in order, in parts that fit the queue's free room,
        waiting for the worker between parts; each record tells ``outcome`` how it mapped.
        Raises :class:`_Refused` when the queue does not free up before ``deadline``.

        A full span queues at most one record, a business-event log record one, a
        :class:`LinkingSpan` none. One part is handed over at a time (of any batch), so the
        room counted is there for the whole part: only the worker takes from the queue."""
        span_ended = pipeline.span_ended
        linking_span_ended = pipeline.linking_span_ended
        span_count, log_count = len(spans), len(event_logs)
        next_span = next_log = 0
        pipeline.check_pid()
        while True:
            with self._handing_over:
                room = pipeline.queue_room()
                while next_span < span_count:
                    span = spans[next_span]
                    if isinstance(span, LinkingSpan):
                        linking_span_ended(
                            span.trace_id, span.span_id, root=span.root, ids=span.ids
                        )
                    elif room > 0:
                        span_ended(span, outcome=outcome)
                        room -= 1
                    else:
                        break
                    next_span += 1
                while next_span == span_count and next_log < log_count and room > 0:
                    record, attributes = event_logs[next_log]
                    event_log = event_log_of(record, attributes, pipeline.linker)
                    if not event_log.timestamp and not event_log.observed_timestamp:
                        event_log.received_timestamp = received_ns  # eventAt, not insertId
                    event_log.outcome = outcome
                    pipeline.log_emitted(event_log)
                    room -= 1
                    next_log += 1
            if next_span == span_count and next_log == log_count:
                return
            handed_over = next_span > 0 or next_log > 0
            if pipeline.is_shutdown:
                raise _Refused("the gateway is shutting down", handed_over)
            # The queue is full: wait for the worker to take in what is queued.
            if not pipeline.take_in(max(0.0, deadline - time.monotonic())):
                raise _Refused("the batch was not written to the spool in time", handed_over)

    # -- room in the spool -------------------------------------------------------------------

    def _reserve(self, spool: Spool, events: int) -> None:
        """Reserve room for ``events``, or refuse: the spool's events not yet delivered, plus
        those reserved by batches not written yet, plus these, must fit its bound.

        Counting scans the whole spool (the longer an outage, the longer each request), so it
        is done only when an upper bound does not settle it. The bound: events not yet
        delivered now are at most those counted last time plus the rows written since, and
        rows written since have numbers above the newest row's number read before that count
        (numbers only grow, and a row's status never goes back to pending). Delivered rows only
        make the bound loose until the next count; rows of a batch being written are in both
        the count (or the rows since) and the reservations until it is done: loose, never
        short."""
        with self._room:
            counted = self._counted
            if counted is not None and counted[0] is spool:
                _, pending, newest = counted
                written_since = max(0, spool.last_seq() - newest)
                if pending + written_since + self._reserved + events <= spool.max_events:
                    self._reserved += events
                    return
            newest = spool.last_seq()
            pending, _ = spool.counts()
            self._counted = (spool, pending, newest)
            if pending + self._reserved + events > spool.max_events:
                waiting = pending + self._reserved
                raise NotAccepted(
                    f"the spool is full ({waiting} of {spool.max_events} events waiting)"
                )
            self._reserved += events

    def _unsettled_now(self) -> tuple[int, ...]:
        """The refused batches whose events this batch's wait for the worker will cover (all
        handed over before this batch)."""
        with self._room:
            return tuple(self._unsettled)

    def _release(self, reserved: int, *, covered: Sequence[int], unsettled: bool) -> None:
        """The batch is written (or refused): give back its room, and that of the refused
        batches its wait covered. A refused batch already handed over keeps its room until a
        later batch's wait covers it (its events may still reach the spool)."""
        with self._room:
            for number in covered:
                self._reserved -= self._unsettled.pop(number, 0)
            if unsettled and reserved:
                self._unsettled[next(self._numbers)] = reserved
            else:
                self._reserved -= reserved

    # -- state -------------------------------------------------------------------------------

    def _usable(self) -> tuple[bool, str]:
        """Whether a batch can be taken at all (cheap: checked for every request)."""
        pipeline = self._shared
        if pipeline.is_shutdown:
            return False, "shutting down"
        if not pipeline.enabled:
            return False, "GREENFLASH_API_KEY is not set"
        feed = pipeline.feed
        if feed.full is not None:
            return False, _full_reason(feed.full)
        if feed.spool is None:
            return False, "the spool is not usable (see the gateway's log)"
        return True, "ready"

    def _retry_after(self) -> float:
        """The retry delay to suggest: until the next write is tried while the disk is full."""
        feed = self._shared.feed
        if feed.full is None:
            return RETRY_AFTER_SECONDS
        return max(1.0, feed.retry_in())

    def liveness(self) -> tuple[bool, str]:
        """Alive unless only a restart can help: the spool failed for a reason other than a
        full disk (I/O error, damaged or read-only file), or its file was removed (what is
        written to it would be lost with the process). A full disk is not one: a restart
        would not free space."""
        feed = self._shared.feed
        # /healthz answers without a token: no error text or path (the log has them).
        if feed.broken is not None:
            return False, "the spool failed (the gateway's log says why)"
        spool = feed.spool
        if spool is not None and not spool.file_present():
            return False, "the spool file was removed"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready when events can be delivered (API key or transport), the spool is open and
        it has room for at least one more event."""
        ready, reason = self._usable()
        spool = self._shared.feed.spool
        if not ready or spool is None:
            return ready, reason
        waiting = self._waiting_upper_bound(spool)
        if waiting < spool.max_events:
            return True, "ready"
        pending, _ = spool.counts()
        waiting = pending + self._reserved
        if waiting >= spool.max_events:
            return False, f"the spool is full ({waiting} of {spool.max_events} events waiting)"
        return True, "ready"

    def _waiting_upper_bound(self, spool: Spool) -> int:
        """At least the events waiting in the spool or reserved (see :meth:`_reserve`)."""
        counted = self._counted
        if counted is None or counted[0] is not spool:
            return spool.max_events  # not counted yet: unknown
        _, pending, newest = counted
        return pending + max(0, spool.last_seq() - newest) + self._reserved

    def queue_depth(self) -> dict[str, int]:
        """Records in the pipeline's queue now, its capacity, and the spool's bound."""
        pipeline = self._shared
        spool = pipeline.feed.spool
        return {
            "queue_depth": pipeline.config.max_queue_size - pipeline.queue_room(),
            "queue_capacity": pipeline.config.max_queue_size,
            "spool_capacity": spool.max_events if spool is not None else 0,
        }

    def stats(self) -> StatsSnapshot:
        return self._shared.stats()

    @property
    def pipeline(self) -> EventPipeline:
        return self._shared


def _full_reason(full: DiskFull | None) -> str:
    if full is None:
        return "the spool's filesystem was full while the batch was written"
    return f"the spool's filesystem is full ({full.error}); the write is retried"


class _Refused(NotAccepted):
    """Refused while a batch was being handed over (``handed_over``: part of it was)."""

    def __init__(self, reason: str, handed_over: bool) -> None:
        super().__init__(reason, 1.0)
        self.handed_over = handed_over


def _business_event_logs(
    log_records: Sequence[ReadableLogRecord],
) -> list[tuple[LogRecord, Mapping[str, Any]]]:
    """The log records that are business events, with their plain attributes."""
    found: list[tuple[LogRecord, Mapping[str, Any]]] = []
    for readable in log_records:
        record = readable.log_record
        attributes = plain_attributes(record.attributes)
        if is_log_business_event(record.event_name, attributes):
            found.append((record, attributes))
    return found


def _business_event_count(spans: Sequence[ReadableSpan | LinkingSpan]) -> int:
    """How many business events the spans carry (counted, not mapped: a
    :class:`LinkingSpan` carries none)."""
    return sum(count_business_events(span) for span in spans if not isinstance(span, LinkingSpan))
