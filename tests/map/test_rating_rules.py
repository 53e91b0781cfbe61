"""Tests of the rating rules (``otel_greenflash._map.rating_rules``): ``gen_ai.evaluation.result``
events and user feedback to ``/ratings`` bodies."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from otel_greenflash._map.genai_calls import Skipped
from otel_greenflash._map.rating_rules import (
    RatingRequest,
    RatingTarget,
    rating_from_evaluation,
    rating_from_feedback,
)
from tests.map.genai_support import START_NS, as_invalid
from tests.support.common import PRODUCT_ID

# ---------------------------------------------------------------------------------------------
# Ratings from evaluations

TARGET = RatingTarget(PRODUCT_ID, external_conversation_id="support-42")


def _rating(result: object) -> Mapping[str, object]:
    assert isinstance(result, RatingRequest), result
    return result.body


@pytest.mark.parametrize(
    ("score", "low", "high"),
    [(0, 0, 1), (0.8, 0, 1), (1, 0, 1), (1.5, 0, 10), (7, 0, 10), (10, 0, 10), (42, 0, 100)],
)
def test_evaluation_score_range_is_inferred(score: float, low: int, high: int) -> None:
    body = _rating(rating_from_evaluation({"gen_ai.evaluation.score.value": score}, TARGET))
    assert (body["rating"], body["ratingMin"], body["ratingMax"]) == (score, low, high)


def test_evaluation_body() -> None:
    attributes = {
        "gen_ai.evaluation.name": "Relevance",
        "gen_ai.evaluation.score.value": 0.75,
        "gen_ai.evaluation.score.label": "relevant",
        "gen_ai.evaluation.explanation": "Answers the question.",
    }
    target = RatingTarget(PRODUCT_ID, external_message_id="otel-msg-1", conversation_id="x")
    body = _rating(rating_from_evaluation(attributes, target, rated_at_ns=START_NS))
    assert body == {
        "productId": PRODUCT_ID,
        "rating": 0.75,
        "ratingMin": 0,
        "ratingMax": 1,
        "externalMessageId": "otel-msg-1",  # the message, when known, over the conversation
        "feedback": "Relevance (relevant): Answers the question.",
        "ratedAt": "2026-04-24T03:06:40.000Z",
    }


@pytest.mark.parametrize(
    ("attributes", "feedback"),
    [
        ({"gen_ai.evaluation.name": "Tone"}, "Tone"),
        ({"gen_ai.evaluation.explanation": "Fine."}, "Fine."),
        ({"gen_ai.evaluation.score.label": "pass"}, "(pass)"),
        ({}, None),
    ],
)
def test_evaluation_feedback_text(attributes: Mapping[str, object], feedback: str | None) -> None:
    body = _rating(
        rating_from_evaluation({**attributes, "gen_ai.evaluation.score.value": 1}, TARGET)
    )
    assert body.get("feedback") == feedback


def test_evaluation_explicit_range() -> None:
    attributes = {
        "gen_ai.evaluation.score.value": 4,
        "greenflash.rating.min": 1,
        "greenflash.rating.max": 5,
    }
    body = _rating(rating_from_evaluation(attributes, TARGET))
    assert (body["rating"], body["ratingMin"], body["ratingMax"]) == (4, 1, 5)
    negative = {**attributes, "gen_ai.evaluation.score.value": -0.5, "greenflash.rating.min": -1}
    assert _rating(rating_from_evaluation(negative, TARGET))["ratingMin"] == -1


def test_evaluation_label_only_is_skipped() -> None:
    attributes = {"gen_ai.evaluation.name": "x", "gen_ai.evaluation.score.label": "pass"}
    assert rating_from_evaluation(attributes, TARGET) == Skipped(
        "evaluation with a label and no score"
    )


def test_evaluation_without_target_is_skipped() -> None:
    result = rating_from_evaluation({"gen_ai.evaluation.score.value": 1}, RatingTarget(PRODUCT_ID))
    assert result == Skipped("no conversation or message to rate")


@pytest.mark.parametrize(
    ("attributes", "attribute", "problem"),
    [
        ({}, "gen_ai.evaluation.score.value", "is missing"),
        (
            {"gen_ai.evaluation.score.value": "0.5"},
            "gen_ai.evaluation.score.value",
            "is a string in the wrong format",
        ),
        ({"gen_ai.evaluation.score.value": True}, "gen_ai.evaluation.score.value", "has type bool"),
        (
            {"gen_ai.evaluation.score.value": float("nan")},
            "gen_ai.evaluation.score.value",
            "is not a finite number",
        ),
        (
            {"gen_ai.evaluation.score.value": 101},
            "gen_ai.evaluation.score.value",
            "is out of range",
        ),
        ({"gen_ai.evaluation.score.value": -1}, "gen_ai.evaluation.score.value", "is out of range"),
        (
            {"gen_ai.evaluation.score.value": 3, "greenflash.rating.min": 1},
            "greenflash.rating.max",
            "is missing",
        ),
        (
            {
                "gen_ai.evaluation.score.value": 3,
                "greenflash.rating.min": 5,
                "greenflash.rating.max": 1,
            },
            "greenflash.rating.min",
            "is not below greenflash.rating.max",
        ),
        (
            {
                "gen_ai.evaluation.score.value": 9,
                "greenflash.rating.min": 1,
                "greenflash.rating.max": 5,
            },
            "gen_ai.evaluation.score.value",
            "is out of range",
        ),
    ],
)
def test_evaluation_invalid(attributes: Mapping[str, object], attribute: str, problem: str) -> None:
    invalid = as_invalid(rating_from_evaluation(attributes, TARGET))
    assert (invalid.attribute, invalid.problem) == (attribute, problem)
    assert invalid.source == "log record"
    assert invalid.span_name == "gen_ai.evaluation.result"


# ---------------------------------------------------------------------------------------------
# Ratings from user feedback


@pytest.mark.parametrize(
    ("kind", "value", "rating", "low", "high"),
    [
        ("thumbs", True, 1, 0, 1),
        ("thumbs", False, 0, 0, 1),
        ("thumbs", "up", 1, 0, 1),
        ("thumbs", " Down ", 0, 0, 1),
        ("thumbs", 1, 1, 0, 1),
        ("thumbs", 0, 0, 0, 1),
        ("stars", 1, 1, 1, 5),
        ("stars", 5, 5, 1, 5),
    ],
)
def test_feedback_ratings(kind: str, value: object, rating: int, low: int, high: int) -> None:
    body = _rating(
        rating_from_feedback(kind, value, TARGET, feedback="Great", rated_at_ns=START_NS)
    )
    assert (body["rating"], body["ratingMin"], body["ratingMax"]) == (rating, low, high)
    assert body["feedback"] == "Great"
    assert body["externalConversationId"] == "support-42"
    assert body["ratedAt"] == "2026-04-24T03:06:40.000Z"


@pytest.mark.parametrize(
    ("kind", "value", "argument", "problem"),
    [
        ("thumbs", "sideways", "value", "is not a thumbs value"),
        ("thumbs", 2, "value", "is not a thumbs value"),
        ("thumbs", 0.5, "value", "has type float"),
        ("thumbs", None, "value", "has type NoneType"),
        ("stars", 0, "value", "is out of range"),
        ("stars", 6, "value", "is out of range"),
        ("stars", 4.5, "value", "has type float"),
        ("stars", True, "value", "has type bool"),
        ("stars", "5", "value", "is a string in the wrong format"),
        ("hearts", 1, "kind", "is not a known kind"),
    ],
)
def test_feedback_invalid(kind: str, value: object, argument: str, problem: str) -> None:
    invalid = as_invalid(rating_from_feedback(kind, value, TARGET))
    assert (invalid.attribute, invalid.problem) == (argument, problem)
    assert invalid.source == "feedback"
    assert invalid.allowed


def test_feedback_without_target_is_skipped_as_an_evaluation_is() -> None:
    result = rating_from_feedback("thumbs", True, RatingTarget(PRODUCT_ID))
    assert result == Skipped("no conversation or message to rate")
