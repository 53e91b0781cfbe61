"""Tests of the Events API request contract validator (``validate_event_body``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from otel_greenflash.testing import validate_event_body
from tests.support.common import CONVERSATION_ID, PRODUCT_ID

USER_ID = "5d2e8c1a-3b4f-4a6d-9e7c-8f1b2a3c4d5e"
ORGANIZATION_ID = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f"

FULL_BODY: Mapping[str, object] = {
    "eventType": "upgrade",
    "productId": PRODUCT_ID,
    "value": "149.00",
    "valueType": "currency",
    "influence": "positive",
    "qualityImpactScore": 0.5,
    "conversationId": CONVERSATION_ID,
    "externalConversationId": "conversation-1",
    "userId": USER_ID,
    "externalUserId": "user-1",
    "organizationId": ORGANIZATION_ID,
    "externalOrganizationId": "acme",
    "eventAt": "2026-05-01T12:00:00.123Z",
    "properties": {"plan": "pro", "seats": [1, 2]},
    "insertId": "otel-0123456789abcdef0123456789abcdef-0123456789abcdef",
    "sampleRate": 1.0,
    "forceSample": False,
}

MINIMAL_BODY: Mapping[str, object] = {
    "eventType": "upgrade",
    "productId": PRODUCT_ID,
    "value": "pro",
}


def body_with(
    updates: Mapping[str, object] | None = None, *, without: Sequence[str] = ()
) -> dict[str, object]:
    """FULL_BODY plus ``updates``, minus the fields in ``without``."""
    body = {**FULL_BODY, **(updates or {})}
    for name in without:
        body.pop(name, None)
    return body


def only_error(body: object) -> str:
    """The single error reported for ``body``; fails if there are none or several."""
    (error,) = validate_event_body(body)
    return error


def test_full_body_is_valid() -> None:
    assert validate_event_body(FULL_BODY) == []


def test_minimal_body_is_valid() -> None:
    assert validate_event_body(MINIMAL_BODY) == []


@pytest.mark.parametrize("body", [[], "body", None, 42])
def test_body_must_be_an_object(body: object) -> None:
    assert "object" in only_error(body)


@pytest.mark.parametrize("name", ["eventType", "productId", "value"])
def test_required_field_missing_is_rejected(name: str) -> None:
    error = only_error(body_with(without=[name]))
    assert name in error
    assert "required" in error


@pytest.mark.parametrize("name", ["eventName", "timestamp", "product_id"])
def test_unknown_field_is_rejected(name: str) -> None:
    error = only_error(body_with({name: "x"}))
    assert name in error
    assert "unknown" in error


@pytest.mark.parametrize(
    "name",
    [
        "eventType",
        "value",
        "externalConversationId",
        "externalUserId",
        "externalOrganizationId",
        "insertId",
    ],
)
@pytest.mark.parametrize("value", [42, 1.5, True, None, ["x"]])
def test_string_field_with_other_type_is_rejected(name: str, value: object) -> None:
    assert name in only_error(body_with({name: value}))


@pytest.mark.parametrize("event_type", ["", "   "])
def test_empty_event_type_is_rejected(event_type: str) -> None:
    assert "eventType" in only_error(body_with({"eventType": event_type}))


def test_empty_value_is_accepted() -> None:
    assert validate_event_body(body_with({"value": ""})) == []


@pytest.mark.parametrize("name", ["productId", "conversationId", "userId", "organizationId"])
@pytest.mark.parametrize("value", ["not-a-uuid", "", "123e4567-e89b-12d3-a456", 42, None])
def test_uuid_field_that_is_not_a_uuid_is_rejected(name: str, value: object) -> None:
    error = only_error(body_with({name: value}))
    assert name in error
    assert "UUID" in error


@pytest.mark.parametrize("value_type", ["currency", "numeric", "text", "boolean"])
def test_known_value_type_is_accepted(value_type: str) -> None:
    assert validate_event_body(body_with({"valueType": value_type})) == []


@pytest.mark.parametrize("value_type", ["count", "Currency", "money", "", 1])
def test_unknown_value_type_is_rejected(value_type: object) -> None:
    assert "valueType" in only_error(body_with({"valueType": value_type}))


@pytest.mark.parametrize("influence", ["positive", "negative", "neutral"])
def test_known_influence_is_accepted(influence: str) -> None:
    assert validate_event_body(body_with({"influence": influence})) == []


@pytest.mark.parametrize("influence", ["Positive", "good", "", 1])
def test_unknown_influence_is_rejected(influence: object) -> None:
    assert "influence" in only_error(body_with({"influence": influence}))


@pytest.mark.parametrize("score", [-1, -1.0, 0, 0.25, 1, 1.0])
def test_quality_impact_score_in_range_is_accepted(score: float) -> None:
    assert validate_event_body(body_with({"qualityImpactScore": score})) == []


@pytest.mark.parametrize("score", [-1.01, 1.5, math.nan, math.inf, True, "0.5", None])
def test_quality_impact_score_out_of_range_or_not_a_number_is_rejected(score: object) -> None:
    assert "qualityImpactScore" in only_error(body_with({"qualityImpactScore": score}))


@pytest.mark.parametrize("rate", [0, 0.0, 0.5, 1, 1.0])
def test_sample_rate_in_range_is_accepted(rate: float) -> None:
    assert validate_event_body(body_with({"sampleRate": rate})) == []


@pytest.mark.parametrize("rate", [-0.1, 1.1, math.nan, -math.inf, False, "1", None])
def test_sample_rate_out_of_range_or_not_a_number_is_rejected(rate: object) -> None:
    assert "sampleRate" in only_error(body_with({"sampleRate": rate}))


@pytest.mark.parametrize("force", [True, False])
def test_force_sample_boolean_is_accepted(force: bool) -> None:
    assert validate_event_body(body_with({"forceSample": force})) == []


@pytest.mark.parametrize("force", [1, 0, "true", None])
def test_force_sample_that_is_not_a_boolean_is_rejected(force: object) -> None:
    assert "forceSample" in only_error(body_with({"forceSample": force}))


@pytest.mark.parametrize("properties", [{}, {"nested": {"a": [1, None]}}])
def test_properties_object_is_accepted(properties: object) -> None:
    assert validate_event_body(body_with({"properties": properties})) == []


@pytest.mark.parametrize("properties", [[], ["plan"], '{"plan": "pro"}', 1, None])
def test_properties_that_is_not_an_object_is_rejected(properties: object) -> None:
    assert "properties" in only_error(body_with({"properties": properties}))


@pytest.mark.parametrize(
    "event_at",
    [
        "2026-05-01T12:00:00Z",
        "2026-05-01T12:00:00.123Z",
        "2026-05-01T12:00:00.123456789Z",
        "2026-05-01T14:00:00+02:00",
        "2026-05-01T07:00:00.5-05:00",
    ],
)
def test_event_at_with_zone_is_accepted(event_at: str) -> None:
    assert validate_event_body(body_with({"eventAt": event_at})) == []


@pytest.mark.parametrize(
    "event_at",
    [
        "2026-05-01T12:00:00",
        "2026-05-01",
        "2026-05-01 12:00:00Z",
        "2026-05-01T12:00Z",
        "2026-05-01T12:00:00+0200",
        "20260501T120000Z",
        "yesterday",
        "",
        1_777_636_800,
        None,
    ],
)
def test_event_at_without_zone_or_not_iso_8601_is_rejected(event_at: object) -> None:
    assert "eventAt" in only_error(body_with({"eventAt": event_at}))


def test_event_at_with_trailing_newline_is_rejected() -> None:
    assert "eventAt" in only_error(body_with({"eventAt": "2026-05-01T12:00:00Z\n"}))


@pytest.mark.parametrize("event_at", ["2026-13-01T12:00:00Z", "2026-05-01T25:00:00Z"])
def test_event_at_that_is_not_a_real_date_time_is_rejected(event_at: str) -> None:
    assert "eventAt" in only_error(body_with({"eventAt": event_at}))


def test_every_broken_rule_is_reported() -> None:
    body = body_with({"influence": "good", "sampleRate": 2}, without=["value"])
    errors = validate_event_body(body)
    assert len(errors) == 3
    assert any("influence" in error for error in errors)
    assert any("sampleRate" in error for error in errors)
    assert any("value" in error for error in errors)
