"""The mapping rules: finished records to Events API bodies. Pure: no threads, no I/O; the
map stage that runs them is :mod:`.mapper`.

:func:`map_span` and :func:`map_log_record` do the full conversion off the application thread
(the cheap test run on every span end is :func:`otel_greenflash._records.has_business_events`).
"""

from __future__ import annotations

import decimal
import functools
import json
import math
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from .. import attributes as attr
from .._event import (
    BusinessEvent,
    InvalidAttribute,
    clean_text,
    is_clean_text,
    join_surrogate_pairs,
)
from .._link.rules import MAX_ID_LENGTH, LinkKeys, is_too_long_id
from .._records import log_record_insert_id, plain_attributes

Attributes = Mapping[str, AttributeValue]

_DEFAULT_LINK_KEYS = LinkKeys()

VALUE_TYPES = ("currency", "numeric", "text", "boolean")
VALUE_TYPE_ALIASES = {"count": "numeric"}
INFLUENCES = ("positive", "negative", "neutral")

MAX_PROPERTY_DEPTH = 100
"""Most levels of objects and lists in ``properties`` (the properties object is level 1)."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
_WHOLE = re.compile(r"\+?[0-9]+")
_HALF_UP = decimal.Context(rounding=decimal.ROUND_HALF_UP)
_ALLOWED_VALUE = {
    None: "a string, boolean, integer or finite float",
    "text": "for value type text: a string, boolean, integer or finite float",
    "currency": "for value type currency: a number, or a decimal string such as '149', "
    "'149.5' or '-12.25' (sent with two decimals)",
    "numeric": "for value type numeric: a number, or a numeric string such as '42', '-3.5' "
    "or '1e6'",
    "count": "for value type count: a whole number of at least 0, as an integer or a string "
    "of digits",
    "boolean": "for value type boolean: True/False, or 'true'/'false' (any case)",
}


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


def map_log_record(
    attributes: Attributes,
    *,
    event_name: str | None,
    time_ns: int | None,
    observed_time_ns: int | None,
    trace_id: int,
    span_id: int,
    linked: Attributes | None = None,
    default_product_id: str | None = None,
    link_keys: LinkKeys | None = None,
    body: object = None,
    severity: str | None = None,
    received_time_ns: int | None = None,
    source: str = "log record",
    insert_id: str | None = None,
) -> MappingResult:
    """Build the business event of one log record (its attributes follow the span table).

    Its own ids come first, then ``linked``. The default insertId is derived from the record
    alone (see :func:`log_record_insert_id`), so the same record exported twice is one event;
    ``insert_id`` is that id computed earlier (the record was slimmed since).
    ``eventAt`` defaults to its timestamp, else its observed timestamp, else
    ``received_time_ns`` (when a receiver took it; not part of the insertId).
    """
    keys = link_keys if link_keys is not None else _DEFAULT_LINK_KEYS
    result = MappingResult()
    _collect(
        result,
        event_name or "",
        attributes,
        [keys.ids_from(attributes), *([linked] if linked else [])],
        default_product_id,
        default_insert_id=insert_id
        or log_record_insert_id(
            attributes, event_name, time_ns, observed_time_ns, trace_id, span_id, body, severity
        ),
        default_time_ns=time_ns or observed_time_ns or received_time_ns,
        source=source,
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
    source: str = "span",
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
            InvalidAttribute(span_name, invalid.attribute, invalid.problem, invalid.allowed, source)
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
                source,
            )
        )
        return
    origin = span_name if source == "span" else f"{source} {span_name}".strip()
    result.events.append(BusinessEvent(body, str(body["insertId"]), origin))


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
        body["valueType"] = VALUE_TYPE_ALIASES.get(value_type, value_type)

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

    body["insertId"] = _insert_id(attributes.get(attr.EVENT_INSERT_ID), default_insert_id)
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
    return clean_text(value)


def _insert_id(value: object, default: str) -> str:
    """A custom insertId is the event's identity: it is sent exactly as given, or the event is
    invalid. Replacing characters in it could give two events one id, and the API would keep
    only the first."""
    if value is None:
        return default
    allowed = "a non-empty string of valid Unicode text (no NUL, no unpaired surrogate)"
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(attr.EVENT_INSERT_ID, _got(value), allowed)
    if is_clean_text(value):
        return value
    joined = join_surrogate_pairs(value)  # a pair is one character, as on the wire
    if not is_clean_text(joined):
        raise _Invalid(attr.EVENT_INSERT_ID, "holds a NUL or an unpaired surrogate", allowed)
    return joined


def _value_type(raw: object, value: object) -> str | None:
    """The declared value type, lower case (``count`` kept until the body is written), or
    the one inferred from the value."""
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
    if folded not in VALUE_TYPES and folded not in VALUE_TYPE_ALIASES:
        raise _Invalid(attr.EVENT_VALUE_TYPE, "is not a known value type", allowed)
    return folded


def _value_text(value: object, value_type: str | None) -> str:
    """The ``value`` field: checked against the value type and written in its one form."""
    allowed = _ALLOWED_VALUE[value_type]
    if value is None:
        raise _Invalid(attr.EVENT_VALUE, "is missing", allowed)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(attr.EVENT_VALUE, "is not a finite number", allowed)
    if value_type in ("currency", "numeric", "count", "boolean"):
        text = _typed_value_text(value, value_type)
        if text is None:
            raise _Invalid(attr.EVENT_VALUE, _mismatch(value, value_type), allowed)
        return text
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise _Invalid(attr.EVENT_VALUE, _got(value), allowed)


def _typed_value_text(value: object, value_type: str) -> str | None:
    """The value written as ``value_type`` wants it, or None when it is not such a value.

    currency: two decimals (``149`` and ``"149"`` → ``"149.00"``; strings with more decimals
    are rounded half away from zero, floats as ``format(x, ".2f")``); numeric: the number as
    JSON writes numbers (``"+5"`` → ``"5"``, ``".5"`` → ``"0.5"``, digits never changed);
    count: a whole number ≥ 0 in decimal; boolean: ``"true"``/``"false"``.
    """
    if value_type == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
        return None
    if isinstance(value, bool):  # a bool is an int to Python, never a number here
        return None
    if value_type == "count":
        if isinstance(value, int):
            return str(value) if value >= 0 else None
        if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
            return value.strip().lstrip("+").lstrip("0") or "0"
        return None
    if value_type == "currency":
        if isinstance(value, int):
            return f"{value}.00"
        if isinstance(value, float):
            return _unsigned_zero(f"{value:.2f}")
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            with decimal.localcontext(_HALF_UP):
                return _unsigned_zero(format(decimal.Decimal(value.strip()), ".2f"))
        return None
    # numeric
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _json_number(value.strip())
    return None


_NOT_A = {
    "currency": "is a string that is not a decimal amount",
    "numeric": "is a string that is not a number",
    "count": "is a string that is not a whole number",
    "boolean": "is a string other than 'true' or 'false'",
}


def _mismatch(value: object, value_type: str) -> str:
    """What is wrong with a value its value type does not take (never the value itself)."""
    if isinstance(value, str):
        return _got(value) if not value.strip() else _NOT_A[value_type]
    if isinstance(value, int) and not isinstance(value, bool) and value_type == "count":
        return "is a negative number for value type count"
    return f"has type {type(value).__name__}, which value type {value_type} does not take"


def _unsigned_zero(amount: str) -> str:
    return amount[1:] if amount == "-0.00" else amount


def _json_number(text: str) -> str | None:
    """A numeric string in JSON's number syntax, or None when it is not a number."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    sign, whole, fraction, exponent = match.groups()
    if not whole and not fraction:  # "", "+", ".", "e5"
        return None
    number = ("-" if sign == "-" else "") + (whole.lstrip("0") or "0")
    if fraction:
        number += "." + fraction
    if exponent is not None:
        number += "e" + exponent
    return number


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


_TOO_LONG = f"is longer than {MAX_ID_LENGTH} characters"


def _external_id(name: str, value: object) -> str:
    allowed = f"a non-empty string or an integer, at most {MAX_ID_LENGTH} characters"
    if is_too_long_id(value):
        raise _Invalid(name, _TOO_LONG, allowed)
    if isinstance(value, str) and value.strip():
        return clean_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(name, _got(value), allowed)


if sys.version_info >= (3, 11):
    _from_iso = datetime.fromisoformat
else:
    # Python 3.10's fromisoformat takes only what isoformat() writes: a fraction of exactly 3 or
    # 6 digits after a dot, an offset of +HH:MM. 3.11 takes ISO 8601 at large. The extended
    # format is brought to 3.10's form here, so it parses alike on every Python: a fraction of
    # any length after a dot or a comma (cut to microseconds, as 3.11 does), an offset of +HH,
    # +HHMM or +HH:MM. (The basic format 20260501T120000, week dates and offsets with seconds
    # stay 3.11+ only.)
    _ISO_EXTENDED = re.compile(
        r"(\d{4}-\d\d-\d\d.\d\d(?::\d\d){0,2})(?:[.,](\d+))?(?:([+-]\d\d)(?::?(\d\d))?)?"
    )

    def _from_iso(text: str) -> datetime:
        match = _ISO_EXTENDED.fullmatch(text)
        if match is not None:
            head, fraction, hours, minutes = match.groups()
            if fraction:
                head += "." + (fraction + "00000")[:6]
            if hours:
                head += f"{hours}:{minutes or '00'}"
            text = head
        return datetime.fromisoformat(text)


def _parse_event_at(value: object) -> str:
    allowed = "an ISO 8601 date-time such as '2026-05-01T12:00:00Z' (no zone means UTC)"
    if not isinstance(value, str):
        raise _Invalid(attr.EVENT_AT, _got(value), allowed)
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = _from_iso(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise _Invalid(attr.EVENT_AT, "is not an ISO 8601 date-time", allowed) from None
    return _iso_millis(moment, moment.microsecond // 1000)


def _properties(attributes: Attributes) -> dict[str, object]:
    properties: dict[str, object] = {}
    raw = attributes.get(attr.EVENT_PROPERTIES)
    if raw is not None:
        properties.update(_properties_object(raw))
    prefix = attr.EVENT_PROPERTIES_PREFIX
    for key, value in attributes.items():
        if not key.startswith(prefix) or len(key) == len(prefix):
            continue
        properties[clean_text(key[len(prefix) :])] = _json_value(key, value, _ALLOWED_PROPERTY)
    return properties


def _properties_object(raw: object) -> dict[str, object]:
    """``greenflash.event.properties``: a JSON object string, or a map (log record attributes
    may hold maps)."""
    name = attr.EVENT_PROPERTIES
    if isinstance(raw, Mapping):
        parsed: object = {str(key): value for key, value in raw.items()}
    elif isinstance(raw, str):
        try:
            parsed = json.loads(raw, parse_constant=_reject_constant)
        except RecursionError:  # deeper than the parser goes: far past the limit
            raise _Invalid(name, _TOO_DEEP, _ALLOWED_OBJECT) from None
        except ValueError:
            raise _Invalid(name, "is not valid JSON", _ALLOWED_OBJECT) from None
        if not isinstance(parsed, dict):
            raise _Invalid(name, f"holds a JSON {type(parsed).__name__}", _ALLOWED_OBJECT)
    else:
        raise _Invalid(name, _got(raw), _ALLOWED_OBJECT)
    converted = _json_value(name, parsed, _ALLOWED_OBJECT)
    return converted if isinstance(converted, dict) else {}


_ALLOWED_OBJECT = (
    'a JSON object string such as \'{"plan": "pro"}\' (on a log record also a map), nested at '
    f"most {MAX_PROPERTY_DEPTH} levels deep, integers within 64 bits"
)
_ALLOWED_PROPERTY = (
    "a string, boolean, integer within 64 bits, finite float, or a sequence of those"
)
_TOO_DEEP = f"is nested more than {MAX_PROPERTY_DEPTH} levels deep"


def _json_value(key: str, value: object, allowed: str, depth: int = 0) -> object:
    """A property value as JSON will carry it: text cleaned (see ``clean_text``), sequences as
    lists; anything JSON cannot carry faithfully is invalid."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _Invalid(key, "is an integer beyond 64 bits", allowed)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(key, "is not a finite number", allowed)
        return value
    if depth >= MAX_PROPERTY_DEPTH:
        raise _Invalid(key, _TOO_DEEP, allowed)
    if isinstance(value, Mapping):
        return {
            clean_text(str(name)): _json_value(key, item, allowed, depth + 1)
            for name, item in value.items()
        }
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_json_value(key, item, allowed, depth + 1) for item in value]
    raise _Invalid(key, _got(value), allowed)


def _reject_constant(name: str) -> object:
    raise ValueError(name)
