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

- **Room is reserved** in the spool for a batch before it is handed over, counted together
  with the batches not written yet (:mod:`otel_greenflash._lane.spool_room`), so batches
  arriving together never overfill the spool (which would evict events already acknowledged).
- **The queue never overflows.** The pipeline's queue refuses what does not fit; the intake
  hands a batch over in parts no larger than the queue's free room (one part at a time) and
  waits for the worker between parts, so a batch larger than the queue is taken whole and no
  batch's records are dropped because of another one.

With conversation capture on (``GREENFLASH_CAPTURE_CONVERSATIONS``), LLM spans and the GenAI
log events go through the same way and become Messages and Ratings API requests; a
``greenflash.rating`` log record becomes a rating whatever the setting. The answer to the
sender stays about business events (accepted, invalid, partial success); room is reserved for
the spool row each such record may add, so they never push acknowledged events out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from .. import attributes as attr
from .._config import ConfigurationError, GreenflashConfig
from .._deliver.transport import Transport
from .._intake_kind import IntakeKind
from .._lane.spool_room import RETRY_AFTER_SECONDS, NoRoom, SpoolRoom
from .._pipeline.intake import PipelineIntake
from .._pipeline.pipeline import EventPipeline
from .._records import (
    EVENT,
    LinkingSpan,
    MapOutcome,
    count_business_events,
    log_record_kind,
    plain_attributes,
)
from .._stats import StatsSnapshot
from ..logs import event_log_of


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

    _kind = IntakeKind.OTLP

    def __init__(self, config: GreenflashConfig, *, transport: Transport | None = None) -> None:
        if not config.spool_dir:
            raise ConfigurationError("the gateway acknowledges through the spool: set spool_dir")
        if not config.enabled:
            raise ConfigurationError("the gateway cannot run with GREENFLASH_ENABLED=false")
        pipeline = self._join(config, on_error=None, on_drop=None, transport=transport)
        assert pipeline is not None  # enabled, checked above
        self.captures_conversations = config.capture_conversations
        """LLM calls and GenAI evaluations are taken too (conversation capture is on)."""
        self.llm_call_keys = attr.GENAI_SPAN_MARKERS if self.captures_conversations else frozenset()
        """Keys of which an LLM span carries one (none with capture off): the decoder decodes
        a span that mentions one in full."""
        self._room = SpoolRoom(pipeline.feed)
        self._renewing_room = threading.Lock()
        """Two requests after a fork build one room, not one each (see :meth:`_spool_room`)."""
        self._handing_over = threading.Lock()
        """One part of a batch at a time goes to the pipeline's queue (see :meth:`_hand_over`)."""
        pipeline.take_in(config.timeout_seconds)  # the worker opens the spool

    def accept(
        self,
        spans: Sequence[ReadableSpan | LinkingSpan],
        log_records: Sequence[ReadableLogRecord],
        timeout_seconds: float,
    ) -> Acceptance:
        """Take a batch; return once its business events are durable (and the messages and
        ratings requests it makes now are in the spool too). Blocking: call it from a thread.
        Raises :class:`NotAccepted` when the batch cannot be kept now.

        ``spans`` in the order they ended; a :class:`LinkingSpan` stands for a span without
        business events or an LLM call (linked exactly as the same span given in full would
        be)."""
        deadline = time.monotonic() + timeout_seconds
        received_ns = time.time_ns()
        pipeline = self._shared
        if self._is_shutdown or pipeline.is_shutdown:
            raise NotAccepted("the gateway is shutting down", 1.0)
        room = self._spool_room()
        usable, reason = self._usable()
        if not usable:
            raise NotAccepted(reason, room.retry_after())
        taken_logs = _taken_logs(log_records, capture=self.captures_conversations)
        event_logs = sum(1 for *_, kind in taken_logs if kind == EVENT)
        events = _business_event_count(spans) + event_logs
        requests = _llm_call_count(spans, self.llm_call_keys) + len(taken_logs) - event_logs
        try:
            reservation = room.reserve(events + requests)
            outcome = MapOutcome()
            try:
                self._hand_over(pipeline, spans, taken_logs, outcome, received_ns, deadline)
                if not pipeline.take_in(max(0.0, deadline - time.monotonic())):
                    raise _Refused("the batch was not written to the spool in time")
                if pipeline.is_shutdown:
                    raise _Refused("the gateway is shutting down")
                if requests and pipeline.feed.disk.writes_missed != reservation.misses_before:
                    # Its messages or ratings rows may be among the writes a full disk refused
                    # (they carry no id the map stage reports, as events do): not kept, so refused.
                    raise NoRoom(
                        "the spool's filesystem was full while the batch was written",
                        room.retry_after(),
                    )
                room.confirm(reservation, outcome.insert_ids)
            except BaseException as error:
                handed_over = not isinstance(error, _Refused) or error.handed_over
                room.give_back(reservation, handed_over=handed_over)
                raise
        except NoRoom as no_room:
            raise NotAccepted(no_room.reason, no_room.retry_after_seconds) from None
        invalid = outcome.invalid
        return Acceptance(
            events - invalid, invalid, outcome.first_problem, outcome.rejected_records
        )

    def _hand_over(
        self,
        pipeline: EventPipeline,
        spans: Sequence[ReadableSpan | LinkingSpan],
        taken_logs: Sequence[tuple[LogRecord, Mapping[str, Any], str]],
        outcome: MapOutcome,
        received_ns: int,
        deadline: float,
    ) -> None:
        """Give the batch to the pipeline in order, in parts that fit the queue's free room,
        waiting for the worker between parts; each record tells ``outcome`` how it mapped.
        Raises :class:`_Refused` when the queue does not free up before ``deadline``.

        A full span queues at most one record, a log record taken (of any kind) one, a
        :class:`LinkingSpan` none. One part is handed over at a time (of any batch), so the
        room counted is there for the whole part: only the worker takes from the queue."""
        span_ended = pipeline.span_ended
        linking_span_ended = pipeline.linking_span_ended
        span_count, log_count = len(spans), len(taken_logs)
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
                    record, attributes, kind = taken_logs[next_log]
                    event_log = event_log_of(record, attributes, None, kind=kind)  # no live spans
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
                raise _Refused("the gateway is shutting down", handed_over=handed_over)
            # The queue is full: wait for the worker to take in what is queued.
            if not pipeline.take_in(max(0.0, deadline - time.monotonic())):
                raise _Refused(
                    "the batch was not written to the spool in time", handed_over=handed_over
                )

    # -- state -------------------------------------------------------------------------------

    def _spool_room(self) -> SpoolRoom:
        """Room in the pipeline's spool (a forked child's pipeline has a feed of its own)."""
        feed = self._shared.feed
        room = self._room
        if room.feed is feed:
            return room
        with self._renewing_room:
            if self._room.feed is not feed:
                self._room = SpoolRoom(feed)
            return self._room

    def _usable(self) -> tuple[bool, str]:
        """Whether a batch can be taken at all (cheap: checked for every request)."""
        pipeline = self._shared
        if pipeline.is_shutdown:
            return False, "shutting down"
        if not pipeline.enabled:
            return False, "GREENFLASH_API_KEY is not set"
        return self._spool_room().usable()

    def liveness(self) -> tuple[bool, str]:
        """Alive unless only a restart can help (see :meth:`SpoolRoom.liveness`)."""
        return self._spool_room().liveness()

    def readiness(self) -> tuple[bool, str]:
        """Ready when events can be delivered (API key or transport), the spool is open and
        it has room for at least one more event."""
        ready, reason = self._usable()
        if not ready:
            return ready, reason
        return self._spool_room().has_room()

    def queue_depth(self) -> dict[str, int]:
        """Records in the pipeline's queue now, its capacity, and the spool's bound."""
        pipeline = self._shared
        capacity = pipeline.config.max_queue_size
        return {
            "queue_depth": capacity - pipeline.queue_room(),
            "queue_capacity": capacity,
            "spool_capacity": self._spool_room().capacity,
        }

    def stats(self) -> StatsSnapshot:
        return self._shared.stats()

    @property
    def pipeline(self) -> EventPipeline:
        return self._shared


class _Refused(NotAccepted):
    """Refused after the batch was (``handed_over``) or while it was being handed over."""

    def __init__(self, reason: str, *, handed_over: bool = True) -> None:
        super().__init__(reason, 1.0)
        self.handed_over = handed_over


def _taken_logs(
    log_records: Sequence[ReadableLogRecord], *, capture: bool
) -> list[tuple[LogRecord, Mapping[str, Any], str]]:
    """The log records the pipeline takes (business events, users' ratings, and with
    ``capture`` LLM calls and evaluations), with their plain attributes and kind."""
    found: list[tuple[LogRecord, Mapping[str, Any], str]] = []
    for readable in log_records:
        record = readable.log_record
        attributes = plain_attributes(record.attributes)
        kind = log_record_kind(record.event_name, attributes, capture=capture)
        if kind is not None:
            found.append((record, attributes, kind))
    return found


def _llm_call_count(
    spans: Sequence[ReadableSpan | LinkingSpan], llm_call_keys: frozenset[str]
) -> int:
    """How many of the spans the link stage takes as LLM calls (each makes at most one
    Messages API request): those carrying one of ``llm_call_keys`` (none with capture off)."""
    if not llm_call_keys:
        return 0
    disjoint = llm_call_keys.isdisjoint
    return sum(
        1
        for span in spans
        if not isinstance(span, LinkingSpan) and not disjoint(plain_attributes(span._attributes))
    )


def _business_event_count(spans: Sequence[ReadableSpan | LinkingSpan]) -> int:
    """How many business events the spans carry (counted, not mapped: a
    :class:`LinkingSpan` carries none)."""
    return sum(count_business_events(span) for span in spans if not isinstance(span, LinkingSpan))
