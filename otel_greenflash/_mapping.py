"""Pure mapping from finished spans to Events API bodies. No threads, no I/O.

:func:`has_business_events` is the cheap test run on every span end;
:func:`map_span` does the full conversion off the application thread.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from . import attributes as attr
from ._event import BusinessEvent, InvalidAttribute
from ._linking import LinkKeys

Attributes = Mapping[str, AttributeValue]

_DEFAULT_LINK_KEYS = LinkKeys()

VALUE_TYPES = ("currency", "numeric", "text", "boolean")
VALUE_TYPE_ALIASES = {"count": "numeric"}
INFLUENCES = ("positive", "negative", "neutral")


@dataclass(slots=True)
class MappingResult:
    """The events built from one span, and the ones rejected."""

    events: list[BusinessEvent] = field(default_factory=list)
    invalid: list[InvalidAttribute] = field(default_factory=list)


class _Invalid(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, attribute: str, problem: str, allowed: str) -> None:
        super().__init__(attribute)
        self.attribute = attribute
        self.problem = problem
        self.allowed = allowed


_EVENT_TYPE = attr.EVENT_TYPE
_SPAN_EVENT_NAME = attr.SPAN_EVENT_NAME


def plain_attributes(attributes: Attributes | None) -> Mapping[str, Any]:
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


def map_span(
    span: ReadableSpan,
    *,
    default_product_id: str | None = None,
    linked: Attributes | None = None,
    link_keys: LinkKeys | None = None,
) -> MappingResult:
    """Build every business event carried by ``span``.

    Ids are looked up on the event itself (``greenflash.*`` keys, then aliases), then for span
    events on the span, then in ``linked`` (ids resolved elsewhere in the trace), then
    ``default_product_id``. A malformed ``greenflash.*`` id on the event itself makes the
    event invalid; elsewhere a malformed id is skipped.
    """
    keys = link_keys if link_keys is not None else _DEFAULT_LINK_KEYS
    result = MappingResult()
    span_name = span.name
    span_attributes: Attributes = plain_attributes(span.attributes)  # C-level lookups
    context = span.context
    trace_id = context.trace_id if context is not None else 0
    span_id = context.span_id if context is not None else 0
    base_id = f"otel-{trace_id:032x}-{span_id:016x}"
    span_ids = keys.ids_from(span_attributes)
    linked_sources: list[Attributes] = [linked] if linked else []

    if attr.EVENT_TYPE in span_attributes:
        end_ns = span.end_time if span.end_time is not None else span.start_time
        _collect(
            result,
            span_name,
            span_attributes,
            [span_ids, *linked_sources],
            default_product_id,
            default_insert_id=base_id,
            default_time_ns=end_ns,
        )
    for index, event in enumerate(span.events):
        event_attributes: Attributes = plain_attributes(event.attributes)
        if event.name != attr.SPAN_EVENT_NAME and attr.EVENT_TYPE not in event_attributes:
            continue
        _collect(
            result,
            span_name,
            event_attributes,
            [keys.ids_from(event_attributes), span_ids, *linked_sources],
            default_product_id,
            default_insert_id=f"{base_id}-{index}",
            default_time_ns=event.timestamp,
        )
    return result


def map_event_attributes(
    attributes: Attributes,
    *,
    source_name: str,
    insert_id: str,
    time_ns: int,
    linked: Attributes | None = None,
    default_product_id: str | None = None,
    link_keys: LinkKeys | None = None,
) -> MappingResult:
    """Build one business event from bare attributes (no span), e.g. for ``track()``."""
    keys = link_keys if link_keys is not None else _DEFAULT_LINK_KEYS
    result = MappingResult()
    _collect(
        result,
        source_name,
        attributes,
        [keys.ids_from(attributes), *([linked] if linked else [])],
        default_product_id,
        default_insert_id=insert_id,
        default_time_ns=time_ns,
    )
    return result


def _collect(
    result: MappingResult,
    span_name: str,
    attributes: Attributes,
    id_sources: Sequence[Attributes],
    default_product_id: str | None,
    *,
    default_insert_id: str,
    default_time_ns: int | None,
) -> None:
    try:
        body = build_body(
            attributes,
            id_sources=id_sources,
            default_product_id=default_product_id,
            default_insert_id=default_insert_id,
            default_time_ns=default_time_ns,
        )
    except _Invalid as invalid:
        result.invalid.append(
            InvalidAttribute(span_name, invalid.attribute, invalid.problem, invalid.allowed)
        )
        return
    except (ValueError, TypeError, OverflowError, OSError, RecursionError) as error:
        # Values the checks above let through but Python cannot convert (a 5000-digit int,
        # a timestamp past year 9999, JSON nested 100k deep): still one event, still reported.
        result.invalid.append(
            InvalidAttribute(
                span_name,
                attr.EVENT_PREFIX + "*",
                f"could not be converted ({type(error).__name__})",
                "values of the sizes and ranges in the attribute table",
            )
        )
        return
    result.events.append(BusinessEvent(body, str(body["insertId"]), span_name))


def build_body(
    attributes: Attributes,
    *,
    id_sources: Sequence[Attributes] = (),
    default_product_id: str | None = None,
    default_insert_id: str,
    default_time_ns: int | None = None,
) -> dict[str, object]:
    """Return the Events API JSON body for one event's attributes.

    Raises ``_Invalid`` (private) when an attribute breaks the convention.
    """
    body: dict[str, object] = {"eventType": _event_type(attributes.get(attr.EVENT_TYPE))}

    value = attributes.get(attr.EVENT_VALUE)
    value_type = _value_type(attributes.get(attr.EVENT_VALUE_TYPE), value)
    body["value"] = _value_text(value, value_type)
    if value_type is not None:
        body["valueType"] = value_type

    influence = attributes.get(attr.EVENT_INFLUENCE)
    if influence is not None:
        body["influence"] = _enum(attr.EVENT_INFLUENCE, influence, INFLUENCES)

    score = attributes.get(attr.EVENT_QUALITY_IMPACT_SCORE)
    if score is not None:
        body["qualityImpactScore"] = _number(attr.EVENT_QUALITY_IMPACT_SCORE, score, -1.0, 1.0)

    sample_rate = attributes.get(attr.EVENT_SAMPLE_RATE)
    if sample_rate is not None:
        body["sampleRate"] = _number(attr.EVENT_SAMPLE_RATE, sample_rate, 0.0, 1.0)

    force_sample = attributes.get(attr.EVENT_FORCE_SAMPLE)
    if force_sample is not None:
        if not isinstance(force_sample, bool):
            raise _Invalid(attr.EVENT_FORCE_SAMPLE, _got(force_sample), "a boolean")
        body["forceSample"] = force_sample

    body.update(_ids(attributes, id_sources, default_product_id))

    at = attributes.get(attr.EVENT_AT)
    if at is not None:
        body["eventAt"] = _parse_event_at(at)
    elif default_time_ns is not None:
        body["eventAt"] = format_timestamp(default_time_ns)

    properties = _properties(attributes)
    if properties:
        body["properties"] = properties

    insert_id = attributes.get(attr.EVENT_INSERT_ID)
    if insert_id is None:
        body["insertId"] = default_insert_id
    elif isinstance(insert_id, str) and insert_id.strip():
        body["insertId"] = insert_id
    else:
        raise _Invalid(attr.EVENT_INSERT_ID, _got(insert_id), "a non-empty string")
    return body


def format_timestamp(time_ns: int) -> str:
    """Format epoch nanoseconds as UTC ISO 8601 with milliseconds and a ``Z`` suffix."""
    seconds, remainder = divmod(time_ns // 1_000_000, 1000)
    return _iso_millis(datetime.fromtimestamp(seconds, tz=timezone.utc), remainder)


def _iso_millis(moment: datetime, millis: int) -> str:
    # strftime's %Y does not zero-pad years before 1000 on every platform
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{millis:03d}Z"
    )


def _got(value: object) -> str:
    """Describe a bad value by its type only: values may be private data."""
    if isinstance(value, str):
        return "is a string in the wrong format" if value.strip() else "is an empty string"
    return f"has type {type(value).__name__}"


def _event_type(value: object) -> str:
    if value is None:
        raise _Invalid(attr.EVENT_TYPE, "is missing", "a non-empty string such as 'upgrade'")
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(attr.EVENT_TYPE, _got(value), "a non-empty string such as 'upgrade'")
    return value


def _value_type(raw: object, value: object) -> str | None:
    if raw is None:
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, (int, float)):
            return "numeric"
        return None
    allowed = "one of currency, numeric, text, boolean, count (any case)"
    if not isinstance(raw, str):
        raise _Invalid(attr.EVENT_VALUE_TYPE, _got(raw), allowed)
    folded = raw.strip().lower()
    folded = VALUE_TYPE_ALIASES.get(folded, folded)
    if folded not in VALUE_TYPES:
        raise _Invalid(attr.EVENT_VALUE_TYPE, "is not a known value type", allowed)
    return folded


def _value_text(value: object, value_type: str | None) -> str:
    allowed = "a string, boolean, integer or finite float"
    if value is None:
        raise _Invalid(attr.EVENT_VALUE, "is missing", allowed)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}.00" if value_type == "currency" else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(attr.EVENT_VALUE, "is not a finite number", allowed)
        return f"{value:.2f}" if value_type == "currency" else repr(value)
    raise _Invalid(attr.EVENT_VALUE, _got(value), allowed)


def _enum(name: str, value: object, allowed: Sequence[str]) -> str:
    description = "one of " + ", ".join(allowed) + " (any case)"
    if not isinstance(value, str):
        raise _Invalid(name, _got(value), description)
    folded = value.strip().lower()
    if folded not in allowed:
        raise _Invalid(name, "is not an allowed value", description)
    return folded


def _number(name: str, value: object, low: float, high: float) -> float:
    allowed = f"a number from {low:g} to {high:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(name, _got(value), allowed)
    if not math.isfinite(value) or not low <= value <= high:
        raise _Invalid(name, "is out of range", allowed)
    return float(value) if isinstance(value, float) else value


def _ids(
    attributes: Attributes,
    id_sources: Sequence[Attributes],
    default_product_id: str | None,
) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key in attr.ID_KEYS:
        raw = attributes.get(key)
        if raw is None:
            for source in id_sources:
                raw = source.get(key)
                if raw is not None:
                    break
        if raw is None and key == attr.PRODUCT_ID:
            raw = default_product_id
        if raw is None:
            if key == attr.PRODUCT_ID:
                raise _Invalid(
                    key,
                    "is missing and no product_id is configured",
                    "a Greenflash product UUID on the span or in GREENFLASH_PRODUCT_ID",
                )
            continue
        field_name = attr.ID_FIELDS[key]
        ids[field_name] = _uuid(key, raw) if key in attr.UUID_ID_KEYS else _external_id(key, raw)
    return ids


def _uuid(name: str, value: object) -> str:
    allowed = "a UUID such as '123e4567-e89b-12d3-a456-426614174000'"
    if not isinstance(value, str):
        raise _Invalid(name, _got(value), allowed)
    # Only UUID-sized strings are cached, so the cache stays small whatever the input.
    canonical = _canonical_uuid(value) if len(value) <= 45 else None
    if canonical is None:
        raise _Invalid(name, "is not a UUID", allowed)
    return canonical


@functools.lru_cache(maxsize=1024)
def _canonical_uuid(value: str) -> str | None:
    """Product and conversation ids repeat across events: parse each one once."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _external_id(name: str, value: object) -> str:
    allowed = "a non-empty string or an integer"
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(name, _got(value), allowed)


def _parse_event_at(value: object) -> str:
    allowed = "an ISO 8601 date-time such as '2026-05-01T12:00:00Z' (no zone means UTC)"
    if not isinstance(value, str):
        raise _Invalid(attr.EVENT_AT, _got(value), allowed)
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise _Invalid(attr.EVENT_AT, "is not an ISO 8601 date-time", allowed) from None
    return _iso_millis(moment, moment.microsecond // 1000)


def _properties(attributes: Attributes) -> dict[str, object]:
    properties: dict[str, object] = {}
    raw_json = attributes.get(attr.EVENT_PROPERTIES)
    if raw_json is not None:
        allowed = 'a JSON object string such as \'{"plan": "pro"}\''
        if not isinstance(raw_json, str):
            raise _Invalid(attr.EVENT_PROPERTIES, _got(raw_json), allowed)
        try:
            parsed = json.loads(raw_json, parse_constant=_reject_constant)
        except ValueError:
            raise _Invalid(attr.EVENT_PROPERTIES, "is not valid JSON", allowed) from None
        if not isinstance(parsed, dict):
            raise _Invalid(attr.EVENT_PROPERTIES, f"holds a JSON {type(parsed).__name__}", allowed)
        converted = _json_value(attr.EVENT_PROPERTIES, parsed)
        if isinstance(converted, dict):
            properties.update(converted)
    prefix = attr.EVENT_PROPERTIES_PREFIX
    for key, value in attributes.items():
        if not key.startswith(prefix) or len(key) == len(prefix):
            continue
        properties[key[len(prefix) :]] = _json_value(key, value)
    return properties


def _json_value(key: str, value: object) -> object:
    """Check a property value is JSON-safe; sequences become lists."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    allowed = "a string, boolean, integer, finite float, or a sequence of those"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(key, "is not a finite number", allowed)
        return value
    if isinstance(value, Mapping):
        return {str(name): _json_value(key, item) for name, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_json_value(key, item) for item in value]
    raise _Invalid(key, _got(value), allowed)


def _reject_constant(name: str) -> object:
    raise ValueError(name)
