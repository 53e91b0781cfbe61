"""Tests of the pure span → Events API body mapping (``otel_greenflash._map.rules``).

Every span here is a real SDK span: started and ended on a ``TracerProvider`` and taken,
finished, from an ``InMemorySpanExporter``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import Attributes, AttributeValue

from otel_greenflash import attributes as attr
from otel_greenflash._event import BusinessEvent, InvalidAttribute
from otel_greenflash._map.rules import (
    MappingResult,
    format_timestamp,
    map_log_record,
    map_span,
)
from otel_greenflash._records import has_business_events
from otel_greenflash.testing import validate_event_body
from tests.support.common import CONVERSATION_ID, PRODUCT_ID

OTHER_PRODUCT_ID = "9a1c3e5f-7b2d-4c6e-8f0a-1b3d5f7a9c2e"
USER_ID = "5d2e8c1a-3b4f-4a6d-9e7c-8f1b2a3c4d5e"
OTHER_USER_ID = "7e4a9b2c-1d3f-4e5a-8b6c-9d0e1f2a3b4c"
ORGANIZATION_ID = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f"

SPAN_NAME = "checkout"
START_NS = 1_777_636_800_123_456_789  # 2026-05-01T12:00:00.123456789Z
EVENT_NS = START_NS + 1_000_000_000  # 2026-05-01T12:00:01.123456789Z
END_NS = START_NS + 2_500_000_000  # 2026-05-01T12:00:02.623456789Z

SECRET = "sk-live-TOP-SECRET-4242"

# The smallest attributes that make a valid business event (with a default product id).
MINIMAL: Mapping[str, object] = {attr.EVENT_TYPE: "upgrade", attr.EVENT_VALUE: "pro"}

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider(shutdown_on_exit=False)
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
_TRACER = _PROVIDER.get_tracer("tests.map.test_mapping")


@dataclass(frozen=True)
class SpanEvent:
    """A span event to record on a test span."""

    name: str = attr.SPAN_EVENT_NAME
    attributes: Mapping[str, object] = field(default_factory=dict)
    timestamp: int = EVENT_NS


def make_span(
    attributes: Mapping[str, object] | None = None,
    *,
    events: Sequence[SpanEvent] = (),
    name: str = SPAN_NAME,
) -> ReadableSpan:
    """Start and end a real span; return the finished ``ReadableSpan`` the exporter got."""
    _EXPORTER.clear()
    span = _TRACER.start_span(name, attributes=cast(Attributes, attributes), start_time=START_NS)
    for event in events:
        span.add_event(event.name, cast(Attributes, event.attributes), timestamp=event.timestamp)
    span.end(end_time=END_NS)
    (finished,) = _EXPORTER.get_finished_spans()
    _EXPORTER.clear()
    return finished


def with_attributes(
    updates: Mapping[str, object] | None = None, *, without: Sequence[str] = ()
) -> dict[str, object]:
    """MINIMAL plus ``updates``, minus the keys in ``without``."""
    merged = {**MINIMAL, **(updates or {})}
    for key in without:
        merged.pop(key, None)
    return merged


def as_linked(ids: Mapping[str, object]) -> Mapping[str, AttributeValue]:
    return cast(Mapping[str, AttributeValue], ids)


def map_attributes(
    attributes: Mapping[str, object],
    *,
    default_product_id: str | None = PRODUCT_ID,
    linked: Mapping[str, object] | None = None,
) -> MappingResult:
    return map_span(
        make_span(attributes),
        default_product_id=default_product_id,
        linked=as_linked(linked) if linked is not None else None,
    )


def body_of(
    attributes: Mapping[str, object],
    *,
    default_product_id: str | None = PRODUCT_ID,
    linked: Mapping[str, object] | None = None,
) -> Mapping[str, object]:
    """The one body built from a span carrying ``attributes``; fails if it was rejected."""
    result = map_attributes(attributes, default_product_id=default_product_id, linked=linked)
    assert [invalid.describe() for invalid in result.invalid] == []
    (event,) = result.events
    return event.body


def rejection_of(
    attributes: Mapping[str, object], *, default_product_id: str | None = PRODUCT_ID
) -> InvalidAttribute:
    """The one rejection for a span carrying ``attributes``; fails if a body was built."""
    result = map_attributes(attributes, default_product_id=default_product_id)
    assert result.events == []
    (invalid,) = result.invalid
    return invalid


def properties_of(attributes: Mapping[str, object]) -> object:
    return body_of(with_attributes(attributes)).get("properties")


# --- greenflash.event.type -------------------------------------------------------------


def test_event_type_becomes_event_type() -> None:
    assert body_of(MINIMAL)["eventType"] == "upgrade"


@pytest.mark.parametrize("event_type", ["", "   ", 42, True, 1.5, ("upgrade",)])
def test_event_type_must_be_a_non_empty_string(event_type: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_TYPE: event_type}))
    assert invalid.attribute == attr.EVENT_TYPE


def test_span_event_without_event_type_is_invalid() -> None:
    span = make_span(events=[SpanEvent(attributes={attr.EVENT_VALUE: "pro"})])
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert result.events == []
    (invalid,) = result.invalid
    assert invalid.attribute == attr.EVENT_TYPE
    assert "missing" in invalid.problem


# --- greenflash.event.value ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pro", "pro"),
        ("149.5", "149.5"),
        (True, "true"),
        (False, "false"),
        (149, "149"),
        (-3, "-3"),
        (0, "0"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (1 / 3, "0.3333333333333333"),
        (1e16, "1e+16"),
        (-0.0, "-0.0"),
    ],
)
def test_value_is_rendered_as_text(value: object, expected: str) -> None:
    assert body_of(with_attributes({attr.EVENT_VALUE: value}))["value"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(149, "149.00"), (149.5, "149.50"), (0, "0.00"), (-12.25, "-12.25"), (19.999, "20.00")],
)
def test_currency_numbers_get_two_decimals(value: object, expected: str) -> None:
    attributes = with_attributes({attr.EVENT_VALUE: value, attr.EVENT_VALUE_TYPE: "currency"})
    assert body_of(attributes)["value"] == expected


def test_currency_string_value_gets_two_decimals_rounded_half_up() -> None:
    attributes = with_attributes({attr.EVENT_VALUE: "149.995", attr.EVENT_VALUE_TYPE: "currency"})
    assert body_of(attributes)["value"] == "150.00"


def test_currency_int_above_float_precision_keeps_its_digits() -> None:
    attributes = with_attributes({attr.EVENT_VALUE: 2**53 + 1, attr.EVENT_VALUE_TYPE: "currency"})
    assert body_of(attributes)["value"] == "9007199254740993.00"


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, ("a", "b"), (1, 2)],
    ids=["nan", "inf", "-inf", "str-tuple", "int-tuple"],
)
def test_value_must_be_a_scalar_finite_value(value: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_VALUE: value}))
    assert invalid.attribute == attr.EVENT_VALUE


def test_a_bytes_value_is_rejected() -> None:
    """Bytes reach the mapper as an OTLP ``bytes_value`` through the gateway, or from an SDK
    that keeps them (newer ones do; 1.39 decodes them to ``str`` when the span is built). The
    span is built here as the gateway builds it, so the test holds on every SDK."""
    real = make_span(MINIMAL)
    span = ReadableSpan(
        name=real.name,
        context=real.context,
        attributes=with_attributes({attr.EVENT_VALUE: b"bytes"}),  # type: ignore[arg-type]
        start_time=real.start_time,
        end_time=real.end_time,
        resource=real.resource,
    )
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert result.events == []
    [invalid] = result.invalid
    assert invalid.attribute == attr.EVENT_VALUE


def test_missing_value_is_invalid() -> None:
    invalid = rejection_of(with_attributes(without=[attr.EVENT_VALUE]))
    assert invalid.attribute == attr.EVENT_VALUE
    assert "missing" in invalid.problem


# --- greenflash.event.value_type -------------------------------------------------------


@pytest.mark.parametrize(
    ("value_type", "value", "expected"),
    [
        ("currency", "1", "currency"),
        ("CURRENCY", "1", "currency"),
        ("numeric", "1", "numeric"),
        ("Numeric", "1", "numeric"),
        ("text", "pro", "text"),
        ("TEXT", "pro", "text"),
        ("boolean", "true", "boolean"),
        ("Boolean", "true", "boolean"),
        ("count", "1", "numeric"),
        ("COUNT", "1", "numeric"),
    ],
)
def test_value_type_is_case_insensitive(value_type: str, value: str, expected: str) -> None:
    attributes = with_attributes({attr.EVENT_VALUE_TYPE: value_type, attr.EVENT_VALUE: value})
    assert body_of(attributes)["valueType"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(149, "numeric"), (1.5, "numeric"), (True, "boolean"), (False, "boolean")],
)
def test_value_type_is_inferred_from_value_when_absent(value: object, expected: str) -> None:
    assert body_of(with_attributes({attr.EVENT_VALUE: value}))["valueType"] == expected


def test_value_type_is_omitted_for_string_value_when_absent() -> None:
    assert "valueType" not in body_of(with_attributes({attr.EVENT_VALUE: "pro"}))


@pytest.mark.parametrize("value_type", ["money", "", "   ", 3, True, ("text",)])
def test_unknown_value_type_is_invalid(value_type: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_VALUE_TYPE: value_type}))
    assert invalid.attribute == attr.EVENT_VALUE_TYPE


# --- greenflash.event.influence --------------------------------------------------------


@pytest.mark.parametrize(
    ("influence", "expected"),
    [
        ("positive", "positive"),
        ("POSITIVE", "positive"),
        ("negative", "negative"),
        ("Negative", "negative"),
        ("neutral", "neutral"),
        ("NeUtRaL", "neutral"),
    ],
)
def test_influence_is_a_case_insensitive_enum(influence: str, expected: str) -> None:
    assert body_of(with_attributes({attr.EVENT_INFLUENCE: influence}))["influence"] == expected


def test_influence_is_omitted_when_absent() -> None:
    assert "influence" not in body_of(MINIMAL)


@pytest.mark.parametrize("influence", ["good", "", 1, True])
def test_unknown_influence_is_invalid(influence: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_INFLUENCE: influence}))
    assert invalid.attribute == attr.EVENT_INFLUENCE


# --- quality_impact_score, sample_rate, force_sample -----------------------------------


@pytest.mark.parametrize("score", [-1, -1.0, -0.5, 0, 0.25, 1, 1.0])
def test_quality_impact_score_in_range_is_kept(score: float) -> None:
    body = body_of(with_attributes({attr.EVENT_QUALITY_IMPACT_SCORE: score}))
    assert body["qualityImpactScore"] == score


@pytest.mark.parametrize("score", [1.5, -1.01, 2, math.nan, math.inf, True, False, "0.5", (0.5,)])
def test_quality_impact_score_out_of_range_or_not_a_number_is_invalid(score: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_QUALITY_IMPACT_SCORE: score}))
    assert invalid.attribute == attr.EVENT_QUALITY_IMPACT_SCORE


@pytest.mark.parametrize("rate", [0, 0.0, 0.5, 1, 1.0])
def test_sample_rate_in_range_is_kept(rate: float) -> None:
    assert body_of(with_attributes({attr.EVENT_SAMPLE_RATE: rate}))["sampleRate"] == rate


@pytest.mark.parametrize("rate", [-0.1, 1.1, 2, math.nan, -math.inf, True, "0.5"])
def test_sample_rate_out_of_range_or_not_a_number_is_invalid(rate: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_SAMPLE_RATE: rate}))
    assert invalid.attribute == attr.EVENT_SAMPLE_RATE


@pytest.mark.parametrize("force", [True, False])
def test_force_sample_boolean_is_kept(force: bool) -> None:
    assert body_of(with_attributes({attr.EVENT_FORCE_SAMPLE: force}))["forceSample"] is force


@pytest.mark.parametrize("force", [1, 0, "true", 1.0])
def test_force_sample_must_be_a_boolean(force: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_FORCE_SAMPLE: force}))
    assert invalid.attribute == attr.EVENT_FORCE_SAMPLE


def test_optional_fields_are_omitted_when_absent() -> None:
    assert set(body_of(MINIMAL)) == {"eventType", "value", "productId", "eventAt", "insertId"}


# --- properties ------------------------------------------------------------------------


def test_flattened_properties_keep_their_types() -> None:
    prefix = attr.EVENT_PROPERTIES_PREFIX
    properties = properties_of(
        {
            prefix + "plan": "pro",
            prefix + "seats": 5,
            prefix + "discount": 0.15,
            prefix + "trial": False,
        }
    )
    assert properties == {"plan": "pro", "seats": 5, "discount": 0.15, "trial": False}


def test_flattened_sequence_properties_become_lists() -> None:
    prefix = attr.EVENT_PROPERTIES_PREFIX
    properties = properties_of({prefix + "tags": ("a", "b"), prefix + "counts": (1, 2, 3)})
    assert properties == {"tags": ["a", "b"], "counts": [1, 2, 3]}


def test_json_properties_object_is_merged() -> None:
    raw = '{"plan": "pro", "seats": 5, "nested": {"a": [1, 2.5, null]}}'
    properties = properties_of({attr.EVENT_PROPERTIES: raw})
    assert properties == {"plan": "pro", "seats": 5, "nested": {"a": [1, 2.5, None]}}


def test_json_and_flattened_properties_are_combined() -> None:
    prefix = attr.EVENT_PROPERTIES_PREFIX
    properties = properties_of({attr.EVENT_PROPERTIES: '{"plan": "pro"}', prefix + "seats": 5})
    assert properties == {"plan": "pro", "seats": 5}


def test_flattened_property_wins_over_json_property() -> None:
    prefix = attr.EVENT_PROPERTIES_PREFIX
    properties = properties_of(
        {attr.EVENT_PROPERTIES: '{"plan": "free", "seats": 1}', prefix + "plan": "pro"}
    )
    assert properties == {"plan": "pro", "seats": 1}


def test_properties_are_omitted_when_absent() -> None:
    assert "properties" not in body_of(MINIMAL)


@pytest.mark.parametrize(
    "raw",
    [
        "[1, 2]",
        '"text"',
        "42",
        "null",
        "not json",
        "{'single': 'quotes'}",
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": [-Infinity]}',
        42,
        True,
    ],
)
def test_properties_json_must_be_an_object_string(raw: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_PROPERTIES: raw}))
    assert invalid.attribute == attr.EVENT_PROPERTIES


def test_properties_json_with_overflowing_number_is_invalid() -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_PROPERTIES: '{"amount": 1e400}'}))
    assert invalid.attribute == attr.EVENT_PROPERTIES


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, (1.0, math.nan)], ids=["nan", "inf", "tuple-with-nan"]
)
def test_flattened_property_with_non_finite_float_is_invalid(value: object) -> None:
    key = attr.EVENT_PROPERTIES_PREFIX + "ratio"
    assert rejection_of(with_attributes({key: value})).attribute == key


# --- greenflash.event.insert_id --------------------------------------------------------


def test_insert_id_attribute_is_used() -> None:
    assert body_of(with_attributes({attr.EVENT_INSERT_ID: "order-42"}))["insertId"] == "order-42"


@pytest.mark.parametrize("insert_id", ["", "   ", 42, True])
def test_insert_id_must_be_a_non_empty_string(insert_id: object) -> None:
    invalid = rejection_of(with_attributes({attr.EVENT_INSERT_ID: insert_id}))
    assert invalid.attribute == attr.EVENT_INSERT_ID


def test_default_insert_id_is_derived_from_trace_and_span_ids() -> None:
    span = make_span(MINIMAL)
    context = span.context
    assert context is not None
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    expected = f"otel-{context.trace_id:032x}-{context.span_id:016x}"
    assert event.body["insertId"] == expected
    assert re.fullmatch(r"otel-[0-9a-f]{32}-[0-9a-f]{16}", expected)


def test_business_event_insert_id_matches_body() -> None:
    (event,) = map_span(make_span(MINIMAL), default_product_id=PRODUCT_ID).events
    assert event.insert_id == event.body["insertId"]


def test_span_event_insert_id_appends_its_index_in_span_events() -> None:
    span = make_span(
        events=[
            SpanEvent(name="cache.miss"),
            SpanEvent(attributes=MINIMAL),
            SpanEvent(attributes=MINIMAL),
        ]
    )
    context = span.context
    assert context is not None
    base = f"otel-{context.trace_id:032x}-{context.span_id:016x}"
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert [event.body["insertId"] for event in result.events] == [f"{base}-1", f"{base}-2"]


def test_mapping_the_same_span_twice_gives_the_same_insert_ids() -> None:
    span = make_span(MINIMAL, events=[SpanEvent(attributes=MINIMAL)])
    first = map_span(span, default_product_id=PRODUCT_ID)
    second = map_span(span, default_product_id=PRODUCT_ID)
    assert [e.insert_id for e in first.events] == [e.insert_id for e in second.events]
    assert len({e.insert_id for e in first.events}) == 2


# --- greenflash.event.at / default eventAt ---------------------------------------------


def test_event_at_defaults_to_span_end_time() -> None:
    assert body_of(MINIMAL)["eventAt"] == "2026-05-01T12:00:02.623Z"


def test_span_event_at_defaults_to_its_timestamp() -> None:
    span = make_span(events=[SpanEvent(attributes=MINIMAL, timestamp=EVENT_NS)])
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    assert event.body["eventAt"] == "2026-05-01T12:00:01.123Z"


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-05-01T12:00:00Z", "2026-05-01T12:00:00.000Z"),
        ("2026-05-01T12:00:00z", "2026-05-01T12:00:00.000Z"),
        ("2026-05-01T12:00:00.123456Z", "2026-05-01T12:00:00.123Z"),
        ("2026-05-01T12:00:00.500+00:00", "2026-05-01T12:00:00.500Z"),
        ("2026-05-01T14:30:00+02:00", "2026-05-01T12:30:00.000Z"),
        ("2026-05-01T07:00:00.250-05:00", "2026-05-01T12:00:00.250Z"),
        ("2026-05-01T00:30:00+01:00", "2026-04-30T23:30:00.000Z"),
        ("2026-05-01T12:00:00", "2026-05-01T12:00:00.000Z"),
        ("2026-05-01T12:00:00.042", "2026-05-01T12:00:00.042Z"),
        # Parsed alike on Python 3.10 (whose fromisoformat takes none of these) and 3.11+:
        ("2026-05-01T12:00:00.5+02:00", "2026-05-01T10:00:00.500Z"),
        ("2026-05-01T12:00:00,25Z", "2026-05-01T12:00:00.250Z"),
        ("2026-05-01T12:00:00.123456789Z", "2026-05-01T12:00:00.123Z"),
        ("2026-05-01T14:30:00+0200", "2026-05-01T12:30:00.000Z"),
        ("2026-05-01T14:30:00-02", "2026-05-01T16:30:00.000Z"),
    ],
)
def test_event_at_overrides_time_and_is_normalised_to_utc(at: str, expected: str) -> None:
    assert body_of(with_attributes({attr.EVENT_AT: at}))["eventAt"] == expected


@pytest.mark.parametrize(
    "at", ["yesterday", "", "2026-13-01T00:00:00Z", "2026-05-01T25:00:00Z", 1_777_636_800, True]
)
def test_event_at_must_be_an_iso_8601_string(at: object) -> None:
    assert rejection_of(with_attributes({attr.EVENT_AT: at})).attribute == attr.EVENT_AT


@pytest.mark.parametrize("at", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_event_at_out_of_range_after_utc_conversion_is_invalid(at: str) -> None:
    assert rejection_of(with_attributes({attr.EVENT_AT: at})).attribute == attr.EVENT_AT


def test_event_at_before_year_1000_keeps_four_digit_year() -> None:
    body = body_of(with_attributes({attr.EVENT_AT: "0999-12-31T23:59:59Z"}))
    assert body["eventAt"] == "0999-12-31T23:59:59.000Z"


@pytest.mark.parametrize(
    ("time_ns", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (999_999, "1970-01-01T00:00:00.000Z"),
        (1_000_000, "1970-01-01T00:00:00.001Z"),
        (1_999_999, "1970-01-01T00:00:00.001Z"),
        (START_NS, "2026-05-01T12:00:00.123Z"),
        (1_777_636_799_999_999_999, "2026-05-01T11:59:59.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_format_timestamp_is_utc_with_truncated_milliseconds(time_ns: int, expected: str) -> None:
    assert format_timestamp(time_ns) == expected


# --- ids -------------------------------------------------------------------------------


def test_product_id_attribute_wins_over_default() -> None:
    body = body_of(with_attributes({attr.PRODUCT_ID: OTHER_PRODUCT_ID}))
    assert body["productId"] == OTHER_PRODUCT_ID


def test_product_id_falls_back_to_default() -> None:
    assert body_of(MINIMAL, default_product_id=PRODUCT_ID)["productId"] == PRODUCT_ID


def test_missing_product_id_is_invalid() -> None:
    invalid = rejection_of(MINIMAL, default_product_id=None)
    assert invalid.attribute == attr.PRODUCT_ID


def test_default_product_id_must_be_a_uuid() -> None:
    invalid = rejection_of(MINIMAL, default_product_id="my-product")
    assert invalid.attribute == attr.PRODUCT_ID


@pytest.mark.parametrize(
    ("key", "uuid"),
    [
        (attr.PRODUCT_ID, OTHER_PRODUCT_ID),
        (attr.CONVERSATION_ID, CONVERSATION_ID),
        (attr.USER_ID, USER_ID),
        (attr.ORGANIZATION_ID, ORGANIZATION_ID),
    ],
)
def test_uuid_id_maps_to_its_field(key: str, uuid: str) -> None:
    assert body_of(with_attributes({key: uuid}))[attr.ID_FIELDS[key]] == uuid


def test_uuid_id_is_written_in_canonical_form() -> None:
    raw = CONVERSATION_ID.upper().replace("-", "")
    assert body_of(with_attributes({attr.CONVERSATION_ID: raw}))["conversationId"] == (
        CONVERSATION_ID
    )


@pytest.mark.parametrize("key", attr.UUID_ID_KEYS)
@pytest.mark.parametrize("value", ["not-a-uuid", "", 42, True, (CONVERSATION_ID,)])
def test_uuid_id_that_is_not_a_uuid_is_invalid(key: str, value: object) -> None:
    assert rejection_of(with_attributes({key: value})).attribute == key


@pytest.mark.parametrize("key", attr.EXTERNAL_ID_KEYS)
@pytest.mark.parametrize(("value", "expected"), [("crm-42", "crm-42"), (42, "42")])
def test_external_id_maps_to_its_field_as_string(key: str, value: object, expected: str) -> None:
    assert body_of(with_attributes({key: value}))[attr.ID_FIELDS[key]] == expected


@pytest.mark.parametrize("key", attr.EXTERNAL_ID_KEYS)
@pytest.mark.parametrize("value", ["", "   ", True, 1.5, ("crm-42",)])
def test_external_id_must_be_a_string_or_int(key: str, value: object) -> None:
    assert rejection_of(with_attributes({key: value})).attribute == key


def test_span_event_takes_missing_ids_from_span() -> None:
    span = make_span(
        {attr.CONVERSATION_ID: CONVERSATION_ID, attr.USER_EXTERNAL_ID: "user-7"},
        events=[SpanEvent(attributes=MINIMAL)],
    )
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    assert event.body["conversationId"] == CONVERSATION_ID
    assert event.body["externalUserId"] == "user-7"


def test_span_event_own_id_wins_over_span_id() -> None:
    span = make_span(
        {attr.USER_ID: USER_ID},
        events=[SpanEvent(attributes=with_attributes({attr.USER_ID: OTHER_USER_ID}))],
    )
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    assert event.body["userId"] == OTHER_USER_ID


def test_span_event_does_not_inherit_event_fields_from_span() -> None:
    span = make_span(
        {attr.EVENT_INFLUENCE: "positive", attr.EVENT_VALUE_TYPE: "currency"},
        events=[SpanEvent(attributes=with_attributes({attr.EVENT_VALUE: 149}))],
    )
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    assert "influence" not in event.body
    assert event.body["value"] == "149"


def test_linked_ids_fill_ids_missing_on_the_span() -> None:
    body = body_of(
        with_attributes({attr.USER_ID: USER_ID}),
        linked={attr.USER_ID: OTHER_USER_ID, attr.CONVERSATION_ID: CONVERSATION_ID},
    )
    assert body["userId"] == USER_ID
    assert body["conversationId"] == CONVERSATION_ID


def test_linked_ids_come_after_span_ids_for_span_events() -> None:
    span = make_span({attr.USER_ID: USER_ID}, events=[SpanEvent(attributes=MINIMAL)])
    linked = as_linked({attr.USER_ID: OTHER_USER_ID, attr.ORGANIZATION_EXTERNAL_ID: "acme"})
    (event,) = map_span(span, default_product_id=PRODUCT_ID, linked=linked).events
    assert event.body["userId"] == USER_ID
    assert event.body["externalOrganizationId"] == "acme"


def test_linked_product_id_wins_over_default() -> None:
    body = body_of(MINIMAL, linked={attr.PRODUCT_ID: OTHER_PRODUCT_ID})
    assert body["productId"] == OTHER_PRODUCT_ID


# --- span events -----------------------------------------------------------------------


def test_span_event_named_greenflash_event_is_an_event() -> None:
    span = make_span(events=[SpanEvent(name=attr.SPAN_EVENT_NAME, attributes=MINIMAL)])
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    assert event.event_type == "upgrade"


def test_span_event_with_other_name_carrying_event_type_is_an_event() -> None:
    span = make_span(events=[SpanEvent(name="purchase", attributes=MINIMAL)])
    (event,) = map_span(span, default_product_id=PRODUCT_ID).events
    assert event.event_type == "upgrade"


def test_several_span_events_each_become_an_event_in_order() -> None:
    span = make_span(
        events=[
            SpanEvent(attributes=with_attributes({attr.EVENT_TYPE: "signup"})),
            SpanEvent(attributes=with_attributes({attr.EVENT_TYPE: "upgrade"})),
            SpanEvent(attributes=with_attributes({attr.EVENT_TYPE: "churn"})),
        ]
    )
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert [event.event_type for event in result.events] == ["signup", "upgrade", "churn"]


def test_unrelated_span_events_are_ignored() -> None:
    span = make_span(
        MINIMAL,
        events=[
            SpanEvent(name="exception", attributes={"exception.type": "ValueError"}),
            SpanEvent(name="cache.miss", attributes={attr.EVENT_VALUE: "pro"}),
        ],
    )
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert result.invalid == []
    assert len(result.events) == 1


def test_span_can_be_an_event_and_carry_event_span_events() -> None:
    span = make_span(
        with_attributes({attr.EVENT_TYPE: "checkout"}),
        events=[SpanEvent(attributes=with_attributes({attr.EVENT_TYPE: "coupon"}))],
    )
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert [event.event_type for event in result.events] == ["checkout", "coupon"]


def test_invalid_span_event_does_not_block_the_others() -> None:
    span = make_span(
        events=[
            SpanEvent(attributes=with_attributes({attr.EVENT_INFLUENCE: "great"})),
            SpanEvent(attributes=MINIMAL),
        ]
    )
    result = map_span(span, default_product_id=PRODUCT_ID)
    assert [invalid.attribute for invalid in result.invalid] == [attr.EVENT_INFLUENCE]
    assert len(result.events) == 1


def test_span_without_business_events_maps_to_nothing() -> None:
    result = map_span(make_span({"http.method": "GET"}), default_product_id=PRODUCT_ID)
    assert result.events == []
    assert result.invalid == []


# --- has_business_events ---------------------------------------------------------------


def test_has_business_events_is_false_for_a_plain_span() -> None:
    assert not has_business_events(make_span({"http.method": "GET"}))


def test_has_business_events_is_false_for_unrelated_span_events() -> None:
    span = make_span(
        {attr.EVENT_VALUE: "pro"},
        events=[SpanEvent(name="exception", attributes={attr.EVENT_VALUE: "pro"})],
    )
    assert not has_business_events(span)


def test_has_business_events_is_true_for_a_span_with_event_type() -> None:
    assert has_business_events(make_span(MINIMAL))


def test_has_business_events_is_true_for_a_greenflash_span_event() -> None:
    assert has_business_events(make_span(events=[SpanEvent(name=attr.SPAN_EVENT_NAME)]))


def test_has_business_events_is_true_for_a_span_event_with_event_type() -> None:
    span = make_span(events=[SpanEvent(name="purchase", attributes=MINIMAL)])
    assert has_business_events(span)


# --- no private data in messages -------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        attr.EVENT_VALUE_TYPE,
        attr.EVENT_INFLUENCE,
        attr.EVENT_QUALITY_IMPACT_SCORE,
        attr.EVENT_SAMPLE_RATE,
        attr.EVENT_FORCE_SAMPLE,
        attr.EVENT_PROPERTIES,
        attr.EVENT_AT,
        attr.PRODUCT_ID,
        attr.CONVERSATION_ID,
        attr.USER_ID,
        attr.ORGANIZATION_ID,
    ],
)
def test_invalid_attribute_description_never_contains_the_value(key: str) -> None:
    invalid = rejection_of(with_attributes({key: SECRET}))
    description = invalid.describe()
    assert SPAN_NAME in description
    assert key in description
    assert SECRET not in description
    assert SECRET not in repr(invalid)


def test_business_event_repr_never_contains_body_values() -> None:
    attributes = with_attributes(
        {
            attr.EVENT_VALUE: SECRET,
            attr.USER_EXTERNAL_ID: SECRET,
            attr.EVENT_PROPERTIES_PREFIX + "token": SECRET,
        }
    )
    (event,) = map_span(make_span(attributes), default_product_id=PRODUCT_ID).events
    text = repr(event)
    assert SECRET not in text
    assert SPAN_NAME in text
    assert event.insert_id in text
    assert isinstance(event, BusinessEvent)


# --- property: any attributes map safely ------------------------------------------------

KNOWN_KEYS = (
    attr.EVENT_TYPE,
    attr.EVENT_VALUE,
    attr.EVENT_VALUE_TYPE,
    attr.EVENT_INFLUENCE,
    attr.EVENT_QUALITY_IMPACT_SCORE,
    attr.EVENT_PROPERTIES,
    attr.EVENT_INSERT_ID,
    attr.EVENT_SAMPLE_RATE,
    attr.EVENT_FORCE_SAMPLE,
    attr.EVENT_AT,
    *attr.ID_KEYS,
)

# Values that pass each rule, so that many generated events are valid and reach the body checks.
VALID_EXAMPLES: Mapping[str, Sequence[object]] = {
    attr.EVENT_VALUE_TYPE: ("currency", "Count", "text", "BOOLEAN", "numeric"),
    attr.EVENT_INFLUENCE: ("positive", "NEGATIVE", "neutral"),
    attr.EVENT_QUALITY_IMPACT_SCORE: (-1, -0.5, 0, 1.0),
    attr.EVENT_SAMPLE_RATE: (0, 0.25, 1),
    attr.EVENT_FORCE_SAMPLE: (True, False),
    attr.EVENT_PROPERTIES: ('{"plan": "pro", "seats": [1, 2]}', "{}"),
    attr.EVENT_INSERT_ID: ("order-42",),
    attr.EVENT_AT: ("2026-05-01T12:00:00Z", "2026-05-01T12:00:00.500+02:00", "2026-05-01T12:00:00"),
    attr.PRODUCT_ID: (PRODUCT_ID, OTHER_PRODUCT_ID.upper()),
    attr.CONVERSATION_ID: (CONVERSATION_ID,),
    attr.USER_ID: (USER_ID,),
    attr.ORGANIZATION_ID: (ORGANIZATION_ID,),
    attr.CONVERSATION_EXTERNAL_ID: ("conversation-1", 7),
    attr.USER_EXTERNAL_ID: ("user-1", -3),
    attr.ORGANIZATION_EXTERNAL_ID: ("acme",),
}

scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
attribute_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4).map(tuple),
    # SDKs with extended attribute support keep these (and mixed tuples); older ones drop them.
    st.none(),
    st.binary(max_size=4),
    st.dictionaries(st.text(min_size=1, max_size=5), scalars, max_size=3),
)
property_keys = st.text(min_size=1, max_size=10).map(lambda key: attr.EVENT_PROPERTIES_PREFIX + key)
attribute_keys = st.one_of(
    st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=20), property_keys
)


def merged(base: Mapping[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    return {**base, **extra}


# Mostly-valid events: every convention key holds a valid value, plus random other keys.
plausible_dicts = st.builds(
    merged,
    st.fixed_dictionaries(
        {attr.EVENT_TYPE: st.sampled_from(("upgrade", "signup")), attr.EVENT_VALUE: scalars},
        optional={key: st.sampled_from(values) for key, values in VALID_EXAMPLES.items()},
    ),
    st.dictionaries(
        st.one_of(st.text(min_size=1, max_size=20), property_keys), attribute_values, max_size=4
    ),
)
# Anything at all under any key, convention or not.
random_dicts = st.builds(
    merged,
    st.fixed_dictionaries({}, optional={attr.EVENT_TYPE: scalars, attr.EVENT_VALUE: scalars}),
    st.dictionaries(attribute_keys, attribute_values, max_size=10),
)
attribute_dicts = st.one_of(plausible_dicts, random_dicts)
linked_ids = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {}, optional={key: st.sampled_from(VALID_EXAMPLES[key]) for key in attr.ID_KEYS}
    ),
    st.dictionaries(st.sampled_from(attr.ID_KEYS), scalars, max_size=3),
)
span_events = st.lists(
    st.builds(
        SpanEvent,
        name=st.sampled_from([attr.SPAN_EVENT_NAME, "exception", "purchase"]),
        attributes=attribute_dicts,
    ),
    max_size=3,
)


def expected_event_count(span: ReadableSpan) -> int:
    """How many business events the finished span carries (after the SDK's own filtering)."""
    count = 1 if attr.EVENT_TYPE in (span.attributes or {}) else 0
    for event in span.events:
        if event.name == attr.SPAN_EVENT_NAME or attr.EVENT_TYPE in (event.attributes or {}):
            count += 1
    return count


@settings(max_examples=200, deadline=None)
@given(
    attributes=attribute_dicts,
    events=span_events,
    linked=linked_ids,
    default_product_id=st.sampled_from([PRODUCT_ID, None]),
)
def test_any_attributes_map_to_contract_valid_bodies_or_invalid(
    attributes: dict[str, object],
    events: list[SpanEvent],
    linked: dict[str, object] | None,
    default_product_id: str | None,
) -> None:
    span = make_span(attributes, events=events)
    result = map_span(
        span,
        default_product_id=default_product_id,
        linked=as_linked(linked) if linked is not None else None,
    )
    expected = expected_event_count(span)
    assert len(result.events) + len(result.invalid) == expected
    assert has_business_events(span) is (expected > 0)
    for event in result.events:
        assert validate_event_body(event.body) == []
        json.dumps(event.body, allow_nan=False)


def test_a_log_record_may_carry_its_properties_as_a_map() -> None:
    """Log record attributes are AnyValue: ``greenflash.event.properties`` may be a map, checked
    like the JSON string (nesting, 64-bit integers); a span attribute cannot be one."""
    base = {
        "greenflash.event.type": "upgrade_purchased",
        "greenflash.event.value": "149.00",
        "greenflash.product.id": PRODUCT_ID,
    }
    ok = map_log_record(
        {**base, "greenflash.event.properties": {"plan": "pro", "seats": [1, 2], "x": {"y": 1}}},
        event_name="greenflash.event",
        time_ns=1_700_000_000_000_000_000,
        observed_time_ns=None,
        trace_id=1,
        span_id=2,
    )
    assert [event.body["properties"] for event in ok.events] == [
        {"plan": "pro", "seats": [1, 2], "x": {"y": 1}}
    ]
    too_big = map_log_record(
        {**base, "greenflash.event.properties": {"n": 2**64}},
        event_name="greenflash.event",
        time_ns=1,
        observed_time_ns=None,
        trace_id=1,
        span_id=2,
    )
    assert not too_big.events
    [problem] = too_big.invalid
    assert problem.source == "log record"
    assert problem.describe().startswith("business event on log record 'greenflash.event'")
    assert "beyond 64 bits" in problem.problem
