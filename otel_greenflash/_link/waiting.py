"""What a record keeps while it waits for its conversation id: only what linking and mapping read.

A record parks until its trace's local root ends, possibly for minutes. Holding the finished
span (or decoded OTLP span, or log record) would hold everything on it: an LLM prompt in one
attribute makes each waiting event cost megabytes. :func:`slim` keeps the span's name, ids,
parent and times, its ``greenflash.event.*`` attributes and id keys (aliases included), the
same of its business span events (the others become empty placeholders, so span event indexes,
and the insertIds built from them, stay the same), and the id keys of its baggage. Live spans it
links through are kept as :class:`~otel_greenflash._records.LinkedSpan` (a weak reference and
their id keys). A log record's insertId digests all its attributes and its body, so it is
computed before they are let go. Mapping the slim record gives the same body as the original.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan

from .. import attributes as attr
from .._records import (
    EVENT,
    Ancestor,
    EventLog,
    EventSpan,
    LinkedSpan,
    log_record_insert_id,
    plain_attributes,
)
from .rules import _INT_ID_LIMIT, MAX_ID_LENGTH, LinkKeys, id_like_keys, is_too_long_id

_NO_RESOURCE = Resource({})
_EVENT_PREFIX = attr.EVENT_PREFIX
_ID_KEYS = frozenset(attr.ID_KEYS)
_GENAI_PREFIXES = ("gen_ai.", "llm.", "openinference.")

RECORD_OVERHEAD_BYTES = 2048
"""What a slim record costs beyond its values (its objects, the waiting entry, dict slots),
rounded up; counted per record by :func:`waiting_bytes`."""


def slim(item: EventSpan | EventLog, keys: LinkKeys) -> EventSpan | EventLog:
    """``item`` with only what linking and mapping read of it (see the module's docstring)."""
    hint = tuple(id_like_keys(attribute_sets(item), keys.aliases))
    ancestors = tuple(_linked(ancestor, keys) for ancestor in item.ancestors)
    baggage = None if item.baggage is None else _ids_only(item.baggage, keys)
    if isinstance(item, EventSpan):
        span = _slim_span(item.span, keys, keep_call=item.llm_call)
        return EventSpan(span, ancestors, baggage, hint, item.outcome, llm_call=item.llm_call)
    if item.kind != EVENT:  # mapping reads every attribute of an LLM call or a rating
        return replace(
            item,
            span=None if item.span is None else _linked(item.span, keys),
            ancestors=ancestors,
            baggage=baggage,
            id_like_keys=hint,
            body=None,
        )
    insert_id = item.insert_id
    if insert_id is None:
        insert_id = log_record_insert_id(
            item.attributes,
            item.event_name,
            item.timestamp,
            item.observed_timestamp,
            item.trace_id,
            item.span_id,
            item.body,
            item.severity,
        )
    return EventLog(
        _kept(item.attributes, keys),
        event_name=item.event_name,
        timestamp=item.timestamp,
        observed_timestamp=item.observed_timestamp,
        trace_id=item.trace_id,
        span_id=item.span_id,
        span=None if item.span is None else _linked(item.span, keys),
        ancestors=ancestors,
        baggage=baggage,
        sampled=item.sampled,
        received_timestamp=item.received_timestamp,
        source=item.source,
        insert_id=insert_id,
        id_like_keys=hint,
        outcome=item.outcome,
    )


def waiting_bytes(item: EventSpan | EventLog) -> int:
    """About how many bytes a slim record holds (``sys.getsizeof`` of its values, counted
    again where shared, plus :data:`RECORD_OVERHEAD_BYTES`)."""
    parts: list[object] = [item.baggage, item.id_like_keys]
    parts.extend(_ancestor_ids(ancestor) for ancestor in item.ancestors)
    if isinstance(item, EventSpan):
        span = item.span
        parts.append(span.name)
        parts.append(span._attributes)
        for event in span._events or ():
            parts.extend((event.name, event.attributes))
    else:
        parts.extend((item.attributes, item.event_name, item.insert_id, item.source))
        if item.span is not None:
            parts.append(_ancestor_ids(item.span))
    return RECORD_OVERHEAD_BYTES + deep_size(parts)


def deep_size(value: object) -> int:
    """``sys.getsizeof`` of ``value`` and of everything inside its mappings and sequences
    (iterative: any nesting depth)."""
    total = 0
    stack = [value]
    while stack:
        current = stack.pop()
        total += sys.getsizeof(current)
        if isinstance(current, Mapping):
            for key, inner in current.items():
                total += sys.getsizeof(key)
                stack.append(inner)
        elif isinstance(current, (list, tuple)):
            stack.extend(current)
    return total


def attribute_sets(record: EventSpan | EventLog) -> list[Mapping[str, object] | None]:
    """Every attribute set linking could have read for ``record`` (for the unlinked hint)."""
    sets: list[Mapping[str, object] | None] = [record.baggage]
    sets.extend(_ancestor_attributes(span) for span in record.ancestors)
    if isinstance(record, EventSpan):
        sets.append(plain_attributes(record.span.attributes))
        sets.extend(plain_attributes(event.attributes) for event in record.span.events)
    else:
        sets.append(record.attributes)
        if record.span is not None:
            sets.append(_ancestor_attributes(record.span))
    return sets


def _slim_span(span: ReadableSpan, keys: LinkKeys, *, keep_call: bool = False) -> ReadableSpan:
    events: list[Event] = []
    for event in span._events or ():
        attributes = plain_attributes(event.attributes)
        if event.name == attr.SPAN_EVENT_NAME or attr.EVENT_TYPE in attributes:
            events.append(Event(event.name, _kept(attributes, keys), event.timestamp))
        else:  # read by no one, but its index is part of the insertIds of the ones after it
            events.append(Event("", None, event.timestamp))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=_NO_RESOURCE,
        attributes=_kept(plain_attributes(span._attributes), keys, keep_call=keep_call),
        events=tuple(events),
        start_time=span.start_time,
        end_time=span.end_time,
    )


def _kept(
    attributes: Mapping[str, Any], keys: LinkKeys, *, keep_call: bool = False
) -> dict[str, Any]:
    """The attributes mapping reads: ``greenflash.event.*`` ones and id keys (aliases included).

    An id key's value longer than :data:`MAX_ID_LENGTH` is one mapping rejects (on a
    ``greenflash.*`` key: the event is invalid) or skips (an alias): the first is kept cut to
    one character past the limit, which mapping rejects with the same message; the second is
    left out, as is an alias value of a type no id has. ``keep_call``: the attributes of
    the GenAI conventions too (an LLM span's call: messages, model, usage)."""
    link_keys = keys.all_keys
    kept: dict[str, Any] = {}
    for key, value in attributes.items():
        if key.startswith(_EVENT_PREFIX) or (keep_call and key.startswith(_GENAI_PREFIXES)):
            kept[key] = value
        elif key in _ID_KEYS:
            if is_too_long_id(value):
                value = value[: MAX_ID_LENGTH + 1] if isinstance(value, str) else _INT_ID_LIMIT
            kept[key] = value
        elif key in link_keys and _may_be_id(value):
            kept[key] = value
    return kept


def _may_be_id(value: object) -> bool:
    """False for what linking never takes as an id: other types, over-long values."""
    return isinstance(value, (str, int)) and not is_too_long_id(value)


def _ids_only(attributes: Mapping[str, Any], keys: LinkKeys) -> dict[str, Any]:
    """The attributes under the id and alias keys, without values linking skips (over-long
    ones, types no id has)."""
    link_keys = keys.all_keys
    return {
        key: value for key, value in attributes.items() if key in link_keys and _may_be_id(value)
    }


def _linked(span: Ancestor, keys: LinkKeys) -> LinkedSpan:
    if isinstance(span, LinkedSpan):
        return span
    context = span.context
    trace_id = context.trace_id if context is not None else 0
    span_id = context.span_id if context is not None else 0
    ids = _ids_only(plain_attributes(span._attributes), keys)
    # An ended span's attributes are final: its ids now are all there is to read.
    reference = weakref.ref(span) if span.end_time is None else None
    return LinkedSpan(trace_id, span_id, reference, ids)


def _ancestor_ids(span: Ancestor) -> Mapping[str, Any]:
    return span.ids if isinstance(span, LinkedSpan) else plain_attributes(span._attributes)


def _ancestor_attributes(span: Ancestor) -> Mapping[str, object]:
    if isinstance(span, LinkedSpan):
        live = span.reference() if span.reference is not None else None
        return plain_attributes(live._attributes) if live is not None else span.ids
    return plain_attributes(span.attributes)
