"""The intake for decoded OTLP (the gateway): a batch is acknowledged only once durable.

``accept`` feeds finished spans and log records to the pipeline like the exporters do, then
waits until the worker has linked, mapped and written their business events to the spool
(waiting ones as waiting rows). It refuses, so the sender keeps its data and retries, when the
spool cannot take the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from ._config import ConfigurationError, GreenflashConfig
from ._intake import PipelineIntake
from ._mapping import count_business_events, map_log_record, map_span, plain_attributes
from ._pipeline import EventPipeline
from ._records import is_log_business_event
from ._spool import Spool
from ._stats import StatsSnapshot
from ._transport import Transport
from .logs import event_log_of

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


class LinkingSpan(NamedTuple):
    """A finished span that carries no business event, as the link stage reads it: the
    gateway builds no SDK span for it (see :meth:`EventPipeline.linking_span_ended`)."""

    trace_id: int
    span_id: int
    root: bool
    """It has no parent span id: its trace's root."""
    ids: Mapping[str, Any]
    """Its attributes under the pipeline's id and alias keys (empty for most spans)."""


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
        self._counted: tuple[Spool, int, int] | None = None
        """The latest count of a spool: (spool, events not yet delivered, its newest row's
        number when counting began)."""
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
        pipeline = self._shared
        if self._is_shutdown or pipeline.is_shutdown:
            raise NotAccepted("the gateway is shutting down", 1.0)
        ready, reason = self.readiness()
        if not ready:
            raise NotAccepted(reason)
        events, invalid, message = _precheck(pipeline, spans, log_records)
        spool = pipeline.feed.spool
        if spool is not None and events:
            self._check_room(spool, events)
        dropped_before = sum(pipeline.stats_counters.snapshot()["dropped"].values())
        pipeline.check_pid()
        span_ended = pipeline.span_ended
        linking_span_ended = pipeline.linking_span_ended
        for span in spans:
            if isinstance(span, LinkingSpan):
                linking_span_ended(span.trace_id, span.span_id, root=span.root, ids=span.ids)
            else:
                span_ended(span)
        for readable in log_records:
            record = readable.log_record
            attributes = plain_attributes(record.attributes)
            if is_log_business_event(record.event_name, attributes):
                pipeline.log_emitted(event_log_of(record, attributes, pipeline.linker))
        if not pipeline.take_in(timeout_seconds):
            raise NotAccepted("the batch was not written to the spool in time", 1.0)
        if pipeline.feed.spool is None:
            raise NotAccepted("the spool stopped working (see the gateway's log)")
        if sum(pipeline.stats_counters.snapshot()["dropped"].values()) > dropped_before:
            raise NotAccepted("the gateway's queue was full", 1.0)
        return Acceptance(events - invalid, invalid, message)

    def _check_room(self, spool: Spool, events: int) -> None:
        """Refuse when the spool cannot take ``events`` more, exactly as counting its events
        not yet delivered would; but counting scans the whole spool (the longer an outage,
        the longer each request), so it is done only when an upper bound does not settle it.

        The bound: events not yet delivered now are at most those counted last time plus the
        rows written since, and rows written since have numbers above the newest row's number
        read before that count (numbers only grow, and a row's status never goes back to
        pending). Delivered rows only make the bound loose until the next count."""
        counted = self._counted
        if counted is not None and counted[0] is spool:
            _, pending, newest = counted
            written_since = max(0, spool.last_seq() - newest)
            if pending + written_since + events <= spool.max_events:
                return
        newest = spool.last_seq()
        pending, _ = spool.counts()
        self._counted = (spool, pending, newest)
        if pending + events > spool.max_events:
            raise NotAccepted(f"the spool is full ({pending} of {spool.max_events} events waiting)")

    def readiness(self) -> tuple[bool, str]:
        """Ready when events can be delivered (API key or transport) and the spool is open."""
        pipeline = self._shared
        if pipeline.is_shutdown:
            return False, "shutting down"
        if not pipeline.enabled:
            return False, "GREENFLASH_API_KEY is not set"
        if pipeline.feed.spool is None:
            return False, "the spool is not usable (see the gateway's log)"
        return True, "ready"

    def stats(self) -> StatsSnapshot:
        return self._shared.stats()

    @property
    def pipeline(self) -> EventPipeline:
        return self._shared


def _precheck(
    pipeline: EventPipeline,
    spans: Sequence[ReadableSpan | LinkingSpan],
    log_records: Sequence[ReadableLogRecord],
) -> tuple[int, int, str]:
    """Count the batch's business events and the invalid ones, without linking (a pure
    pass; the pipeline maps again with the ids it finds)."""
    config = pipeline.config
    events = invalid = 0
    message = ""
    for span in spans:
        if isinstance(span, LinkingSpan):
            continue  # no business event
        count = count_business_events(span)
        if not count:
            continue
        events += count
        result = map_span(span, default_product_id=config.product_id, link_keys=pipeline.link_keys)
        invalid += len(result.invalid)
        if result.invalid and not message:
            message = result.invalid[0].describe()
    for readable in log_records:
        record = readable.log_record
        attributes = plain_attributes(record.attributes)
        if not is_log_business_event(record.event_name, attributes):
            continue
        events += 1
        result = map_log_record(
            attributes,
            event_name=record.event_name,
            time_ns=record.timestamp,
            observed_time_ns=record.observed_timestamp,
            trace_id=record.trace_id or 0,
            span_id=record.span_id or 0,
            default_product_id=config.product_id,
            link_keys=pipeline.link_keys,
        )
        invalid += len(result.invalid)
        if result.invalid and not message:
            message = result.invalid[0].describe()
    return events, invalid, message
