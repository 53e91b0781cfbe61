"""Finished records: what every intake hands the pipeline, before linking and mapping.

An intake (span processor, span or log record exporter, log record processor, decoded OTLP)
turns what it was given into one of these, on the caller's thread, keeping only references:
the pipeline's worker links and maps them later.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from . import attributes as attr
from ._event import BusinessEvent, Endpoint, InvalidAttribute

EVENT = "event"
"""Record kinds: a business event (the default),"""
LLM_CALL = "llm_call"
"""an LLM call a GenAI instrumentation recorded (``gen_ai.client.inference.operation.details``),"""
EVALUATION = "evaluation"
"""a ``gen_ai.evaluation.result`` event,"""
FEEDBACK = "feedback"
"""a user's rating (``greenflash.rating``, :func:`otel_greenflash.rate`)."""
OPERATION_DETAILS_EVENT_NAME = attr.GENAI_OPERATION_DETAILS_EVENT
EVALUATION_EVENT_NAME = attr.GENAI_EVALUATION_EVENT

LOG_EVENT_NAME = attr.SPAN_EVENT_NAME
"""The ``event_name`` that makes a log record a business event (``greenflash.event``)."""
_EVENT_TYPE = attr.EVENT_TYPE
_SPAN_EVENT_NAME = attr.SPAN_EVENT_NAME


@dataclass(slots=True)
class LinkedSpan:
    """A span a waiting record links through (its live ancestor, or the span a log record was
    emitted in), kept without holding the span: a weak reference to read it while something
    else keeps it, and its id attributes at the time the record began to wait."""

    trace_id: int
    span_id: int
    reference: weakref.ref[ReadableSpan] | None
    ids: Mapping[str, Any]
    """Its attributes under the id and alias keys when the record began to wait."""


Ancestor = ReadableSpan | LinkedSpan


class LinkingSpan(NamedTuple):
    """A finished span that carries no business event, reduced to what the link stage reads
    of it (decoded OTLP builds no SDK span for it; see ``EventPipeline.linking_span_ended``)."""

    trace_id: int
    span_id: int
    root: bool
    """It has no parent span id: its trace's root."""
    ids: Mapping[str, Any]
    """Its attributes under the pipeline's id and alias keys (empty for most spans)."""


@dataclass(slots=True)
class MapOutcome:
    """What the map stage made of the records that carry it, for an intake that answers for a
    batch (the gateway): filled on the worker the first time each record is mapped (when it
    goes out, or is held in the spool while it waits), so it is complete once the worker has
    taken the batch in."""

    insert_ids: set[str] = field(default_factory=set)
    """The valid events' insertIds."""
    invalid: int = 0
    """Events that break the attribute convention (never sent)."""
    rejected_records: int = 0
    """Records carrying at least one invalid event."""
    first_problem: str = ""
    """What was wrong with the first invalid event mapped ('' when none)."""

    def add(self, events: Sequence[BusinessEvent], invalid: Sequence[InvalidAttribute]) -> None:
        """One record's mapping."""
        self.insert_ids.update(event.insert_id for event in events)
        if invalid:
            self.rejected_records += 1
            self.invalid += len(invalid)
            if not self.first_problem:
                self.first_problem = invalid[0].describe()

    def unmappable(self, events: int) -> None:
        """A record whose mapping failed: its ``events`` are counted invalid."""
        self.rejected_records += 1
        self.invalid += events
        if not self.first_problem:
            self.first_problem = "an event could not be mapped (see the gateway's log)"


@dataclass(slots=True, repr=False)
class EventSpan:
    """An ended span carrying business events (or an LLM call), plus what its end captured for
    linking. ``repr`` shows no attribute: they may hold prompts."""

    span: ReadableSpan
    ancestors: tuple[Ancestor, ...]
    baggage: Mapping[str, object] | None
    id_like_keys: tuple[str, ...] | None = None
    """Set on a record slimmed to wait (see :mod:`._link.waiting`): the keys that looked
    like ids on what it was slimmed from (the unlinked warning names them)."""
    outcome: MapOutcome | None = None
    """Told what the map stage made of this record, the first time it is mapped."""
    llm_call: bool = False
    """The span looks like an LLM call (conversation capture is on): its messages are mapped too."""

    @property
    def trace_id(self) -> int:
        context = self.span.context
        return context.trace_id if context is not None else 0

    def __repr__(self) -> str:
        return f"EventSpan(name={self.span.name!r}, llm_call={self.llm_call})"

    @property
    def is_local_root(self) -> bool:
        parent = self.span.parent
        return parent is None or parent.is_remote


@dataclass(slots=True, repr=False)
class EventLog:
    """A log record that is a business event (or an LLM call, an evaluation, a rating), and
    what its emission captured for linking. ``repr`` shows no attribute or body.

    ``span`` is the span the record was emitted in when that span was at hand (a log record
    processor reads it from the emit context); exporters see ids only.
    """

    attributes: Mapping[str, Any]
    event_name: str | None
    timestamp: int | None
    observed_timestamp: int | None
    trace_id: int
    span_id: int
    span: ReadableSpan | LinkedSpan | None = None
    ancestors: tuple[Ancestor, ...] = ()
    baggage: Mapping[str, object] | None = None
    sampled: bool = True
    """The record's trace flags say sampled (its spans reach exporters)."""
    body: Any = None
    severity: str | None = None
    received_timestamp: int | None = None
    """When a receiver (the gateway) took a record that carries neither timestamp: its
    ``eventAt``, never part of its insertId (a replayed record stays one event)."""
    source: str = "log record"
    """What made it, for messages: a log record, or ``track()`` called outside a span that
    takes span events (see :func:`otel_greenflash.track`)."""
    insert_id: str | None = None
    """Its default insertId, computed before it was slimmed to wait (the digest reads every
    attribute and the body, which the slim record no longer holds)."""
    id_like_keys: tuple[str, ...] | None = None
    """As :attr:`EventSpan.id_like_keys`."""
    outcome: MapOutcome | None = None
    """As :attr:`EventSpan.outcome`."""
    kind: str = EVENT
    """:data:`EVENT`, :data:`LLM_CALL`, :data:`EVALUATION` or :data:`FEEDBACK`."""

    def __repr__(self) -> str:
        return f"EventLog(event_name={self.event_name!r}, kind={self.kind!r})"

    @property
    def time_ns(self) -> int | None:
        return self.timestamp or self.observed_timestamp

    @property
    def in_ended_local_root(self) -> bool:
        """Emitted in its trace's local root, which has ended since: nothing to wait for."""
        span = self.span
        if not isinstance(span, ReadableSpan) or span.end_time is None:
            return False
        parent = span.parent
        return parent is None or parent.is_remote


Record = EventSpan | EventLog | BusinessEvent
"""What the pipeline's queue holds (a ``BusinessEvent`` is already mapped: ``track()``)."""


QUEUED_SPAN_BYTES = 2560
"""What a queued event span holds besides its attributes: the SDK's span objects and the record
around them (a span with three short attributes holds about 2.9 KB in all, measured with
``tracemalloc``), rounded."""
QUEUED_SPAN_EVENT_BYTES = 512
"""What one span event of a queued span holds besides its attributes."""
QUEUED_LOG_BYTES = 1024
"""What a queued log record (or ``track()`` event) holds besides its values."""
VALUE_BYTES = 100
"""One attribute (key, value object, its slot) or one element of a sequence, besides the
characters of a string."""

FEW_ATTRIBUTES = 8
"""An event span with at most this many attributes is estimated by its counts alone (the
business event's own few); one with more (an LLM instrumentation's span carrying an event)
by the length of its string values too."""


def queue_bytes(record: Record) -> int:
    """About how many bytes ``record`` holds while it waits in the queue before the worker,
    estimated on the application thread. A typical event span costs a few lookups: a fixed
    part, :data:`VALUE_BYTES` per attribute and :data:`QUEUED_SPAN_EVENT_BYTES` per span event
    (past :data:`FEW_ATTRIBUTES`, its string values' lengths too). LLM calls, log records and
    ``track()`` bodies are counted through their values (:func:`nested_bytes`). Values shared
    with other records (live ancestors, the resource) are not counted."""
    if isinstance(record, EventSpan):
        span = record.span
        attributes = span._attributes
        attributes = getattr(attributes, "_dict", attributes) or _EMPTY
        count = len(attributes)
        if record.llm_call or count > FEW_ATTRIBUTES:
            size = QUEUED_SPAN_BYTES + nested_bytes(attributes)
        else:
            size = QUEUED_SPAN_BYTES + VALUE_BYTES * count
        events = span._events
        events = getattr(events, "_dq", events)
        if events:
            size += QUEUED_SPAN_EVENT_BYTES * len(events)
            if record.llm_call:
                for event in events:
                    size += nested_bytes(plain_attributes(event.attributes))
        return size
    if isinstance(record, EventLog):
        return (
            QUEUED_LOG_BYTES
            + nested_bytes(plain_attributes(record.attributes))
            + nested_bytes(record.body)
        )
    return QUEUED_LOG_BYTES + nested_bytes(record.body)


MAX_VALUES_WALKED = 10_000
"""Values :func:`nested_bytes` looks at, at most: a body that refers to itself (or a huge one)
costs the application thread a bounded walk; past it, what is left counts as large."""


def nested_bytes(value: object) -> int:
    """About how many bytes ``value`` holds, with everything in its mappings and sequences at
    any depth: :data:`VALUE_BYTES` per value, plus the length of each string or bytes. Walks
    at most :data:`MAX_VALUES_WALKED` values; a walk cut short counts 1 MiB more."""
    total = 0
    stack = [value]
    walked = 0
    while stack:
        walked += 1
        if walked > MAX_VALUES_WALKED:  # a cycle, or a body far too large to size cheaply
            return total + 1024 * 1024
        current = stack.pop()
        total += VALUE_BYTES
        if isinstance(current, (str, bytes)):
            total += len(current)
        elif isinstance(current, Mapping):
            for key, inner in current.items():
                total += len(key) if isinstance(key, str) else 0
                stack.append(inner)
        elif isinstance(current, (list, tuple)):
            stack.extend(current)
    return total


def is_log_business_event(event_name: str | None, attributes: Mapping[str, Any] | None) -> bool:
    """A log record is a business event when named ``greenflash.event`` or typed by
    ``greenflash.event.type``."""
    return event_name == LOG_EVENT_NAME or (
        bool(attributes) and attr.EVENT_TYPE in plain_attributes(attributes)
    )


def log_record_kind(
    event_name: str | None, attributes: Mapping[str, Any] | None, *, capture: bool
) -> str | None:
    """What a log record is for the pipeline, or None when it is nothing to it. ``capture``:
    conversation capture is on (LLM calls and evaluations are taken too)."""
    if is_log_business_event(event_name, attributes):
        return EVENT
    if event_name == attr.RATING_EVENT_NAME:
        return FEEDBACK
    if capture:
        if event_name == OPERATION_DETAILS_EVENT_NAME:
            return LLM_CALL
        if event_name == EVALUATION_EVENT_NAME:
            return EVALUATION
    return None


def request_endpoint(record: Record | ReadableSpan) -> Endpoint | None:
    """The endpoint of the request a record makes besides business events (an LLM call's
    messages, a rating), or None."""
    if isinstance(record, EventLog):
        if record.kind == LLM_CALL:
            return Endpoint.MESSAGES
        if record.kind in (EVALUATION, FEEDBACK):
            return Endpoint.RATINGS
    elif isinstance(record, EventSpan) and record.llm_call:
        return Endpoint.MESSAGES
    return None


def event_count(record: Record | ReadableSpan) -> int:
    """How many business events ``record`` stands for."""
    if isinstance(record, EventLog):
        return 1 if record.kind == EVENT else 0
    if isinstance(record, BusinessEvent):
        return 1
    return count_business_events(record.span if isinstance(record, EventSpan) else record)


def plain_attributes(attributes: Mapping[str, AttributeValue] | None) -> Mapping[str, Any]:
    """The plain dict behind the SDK's ``BoundedAttributes`` (its ``in`` goes through a
    Python-level ``__getitem__`` and an exception), or the mapping itself."""
    if not attributes:
        return _EMPTY
    return getattr(attributes, "_dict", attributes)


_EMPTY: Mapping[str, Any] = {}


def has_business_events(span: ReadableSpan) -> bool:
    """Return True when the span or one of its span events is a business event.

    Reads the SDK's own storage (``_attributes``/``_events``) because the public
    properties copy; a non-event span costs a few lookups and no allocation.
    """
    if _EVENT_TYPE in plain_attributes(span._attributes):
        return True
    events = span._events
    if events:
        for event in events:
            if event.name == _SPAN_EVENT_NAME or _EVENT_TYPE in plain_attributes(event.attributes):
                return True
    return False


def count_business_events(span: ReadableSpan) -> int:
    """How many business events ``span`` carries (itself, plus its qualifying span events)."""
    count = 1 if _EVENT_TYPE in plain_attributes(span._attributes) else 0
    for event in span._events or ():
        if event.name == _SPAN_EVENT_NAME or _EVENT_TYPE in plain_attributes(event.attributes):
            count += 1
    return count


def log_record_insert_id(
    attributes: Mapping[str, AttributeValue],
    event_name: str | None,
    time_ns: int | None,
    observed_time_ns: int | None,
    trace_id: int,
    span_id: int,
    body: object = None,
    severity: str | None = None,
) -> str:
    """``otel-log-<trace id>-<span id>-<digest>``: the digest is SHA-256 (first 16 bytes, hex)
    of the record's timestamps, event name, severity, body and attributes (keys sorted). Two
    exports of one record (two processors, a retried batch, a replayed OTLP request) give the
    same id; records that differ in any of these do not."""
    canonical = json.dumps(
        [
            time_ns or 0,
            observed_time_ns or 0,
            event_name or "",
            severity or "",
            body,
            sorted(attributes.items()),
        ],
        default=repr,
        ensure_ascii=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode("ascii", "surrogateescape")).hexdigest()[:32]
    return f"otel-log-{trace_id:032x}-{span_id:016x}-{digest}"
