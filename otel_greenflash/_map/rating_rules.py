"""The rating rules: ``gen_ai.evaluation.result`` events (:func:`rating_from_evaluation`) and
a user's feedback (:func:`rating_from_feedback`) to Ratings API bodies, aimed at a message
or a conversation (:class:`RatingTarget`). Pure: no threads, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .. import attributes as attr
from .._event import InvalidAttribute, clean_text
from .genai_calls import Attributes, BadAttribute, Skipped, problem_with
from .rules import format_timestamp

EVALUATION_EVENT_NAME: Final = attr.GENAI_EVALUATION_EVENT
EVALUATION_NAME: Final = "gen_ai.evaluation.name"
EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"
RATING_MIN: Final = "greenflash.rating.min"
"""On an evaluation event: the score's lowest value, when the inferred range is wrong."""
RATING_MAX: Final = "greenflash.rating.max"


@dataclass(frozen=True, slots=True, repr=False)
class RatingRequest:
    """One ``POST /ratings`` body. ``repr`` shows the score only (feedback is user text)."""

    body: Mapping[str, object]

    def __repr__(self) -> str:
        return (
            f"RatingRequest(rating={self.body.get('rating')!r}, "
            f"min={self.body.get('ratingMin')!r}, max={self.body.get('ratingMax')!r})"
        )


@dataclass(frozen=True, slots=True)
class RatingTarget:
    """What a rating is about: a message (preferred when known) or a conversation."""

    product_id: str
    conversation_id: str | None = None
    external_conversation_id: str | None = None
    message_id: str | None = None
    external_message_id: str | None = None

    def fields(self) -> dict[str, object] | None:
        for name, value in (
            ("externalMessageId", self.external_message_id),
            ("messageId", self.message_id),
            ("externalConversationId", self.external_conversation_id),
            ("conversationId", self.conversation_id),
        ):
            if value is not None:
                return {name: value}
        return None


_SCORE_RANGES = ((0.0, 1.0), (0.0, 10.0), (0.0, 100.0))
_ALLOWED_SCORE = (
    f"a finite number from 0 to 100 (rated on 0-1, 0-10 or 0-100), or any finite number "
    f"with {RATING_MIN} and {RATING_MAX} on the event"
)
_ALLOWED_BOUND = f"finite numbers, {RATING_MIN} below {RATING_MAX}, both given"


def rating_from_evaluation(
    attributes: Attributes,
    target: RatingTarget,
    *,
    rated_at_ns: int | None = None,
    source_name: str = EVALUATION_EVENT_NAME,
) -> RatingRequest | Skipped | InvalidAttribute:
    """The ``POST /ratings`` body of one ``gen_ai.evaluation.result`` event.

    The conventions give a score but no range: a score from 0 to 1 is rated on 0-1, above 1 up
    to 10 on 0-10, above 10 up to 100 on 0-100 (so 1 is 1 of 0-1 and 3 is 3 of 0-10);
    ``greenflash.rating.min`` and ``greenflash.rating.max`` on the event set the range instead.
    A label without a score is skipped (no number to send). Ratings have no properties:
    ``feedback`` is "name (label): explanation", with whichever of the three are present.
    """
    if target.fields() is None:
        return Skipped("no conversation or message to rate")
    score = attributes.get(EVALUATION_SCORE_VALUE)
    if score is None and attributes.get(EVALUATION_SCORE_LABEL) is not None:
        return Skipped("evaluation with a label and no score")
    try:
        value = _finite(EVALUATION_SCORE_VALUE, score, _ALLOWED_SCORE)
        if RATING_MIN in attributes or RATING_MAX in attributes:
            low = _finite(RATING_MIN, attributes.get(RATING_MIN), _ALLOWED_BOUND)
            high = _finite(RATING_MAX, attributes.get(RATING_MAX), _ALLOWED_BOUND)
            if not low < high:
                raise BadAttribute(RATING_MIN, f"is not below {RATING_MAX}", _ALLOWED_BOUND)
        else:
            low, high = next(
                ((lo, hi) for lo, hi in _SCORE_RANGES if lo <= value <= hi), (0.0, 100.0)
            )
        if not low <= value <= high:
            raise BadAttribute(EVALUATION_SCORE_VALUE, "is out of range", _ALLOWED_SCORE)
    except BadAttribute as invalid:
        return InvalidAttribute(
            source_name, invalid.attribute, invalid.problem, invalid.allowed, "log record"
        )
    texts = [attributes.get(key) for key in (EVALUATION_NAME, EVALUATION_SCORE_LABEL)]
    name, label = (text if isinstance(text, str) and text.strip() else None for text in texts)
    explanation = attributes.get(EVALUATION_EXPLANATION)
    head = " ".join(piece for piece in (name, f"({label})" if label else None) if piece)
    feedback = ": ".join(
        piece
        for piece in (head, explanation if isinstance(explanation, str) else None)
        if piece and piece.strip()
    )
    return _rating(target, value, low, high, feedback or None, rated_at_ns)


def _finite(name: str, value: object, allowed: str) -> float:
    if value is None:
        raise BadAttribute(name, "is missing", allowed)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadAttribute(name, problem_with(value), allowed)
    if not math.isfinite(value):
        raise BadAttribute(name, "is not a finite number", allowed)
    return float(value)


FEEDBACK_KINDS: Final = ("thumbs", "stars")
_THUMBS = {"up": 1, "down": 0}


def rating_from_feedback(
    kind: str,
    value: object,
    target: RatingTarget,
    *,
    feedback: str | None = None,
    rated_at_ns: int | None = None,
) -> RatingRequest | Skipped | InvalidAttribute:
    """A user's feedback as a rating: ``thumbs`` (True/False, "up"/"down" in any case, 1/0) is
    1 or 0 of 0-1; ``stars`` (a whole number 1-5) is rated on 1-5. A bad kind or value gives
    an :class:`InvalidAttribute` (source ``feedback``) naming the argument; no conversation or
    message to rate is :class:`Skipped` (as for an evaluation)."""

    def invalid(argument: str, problem: str, allowed: str) -> InvalidAttribute:
        return InvalidAttribute(f"feedback {kind!r}", argument, problem, allowed, "feedback")

    if target.fields() is None:
        return Skipped("no conversation or message to rate")
    if kind == "thumbs":
        if isinstance(value, str):
            rating = _THUMBS.get(value.strip().lower())
        elif isinstance(value, int) and value in (0, 1):  # True and False too
            rating = int(value)
        else:
            rating = None
        if rating is None:
            problem = (
                "is not a thumbs value" if isinstance(value, (int, str)) else problem_with(value)
            )
            return invalid("value", problem, "True/False, 'up'/'down' or 1/0")
        return _rating(target, rating, 0, 1, feedback, rated_at_ns)
    if kind == "stars":
        if isinstance(value, bool) or not isinstance(value, int):
            return invalid("value", problem_with(value), "a whole number from 1 to 5")
        if not 1 <= value <= 5:
            return invalid("value", "is out of range", "a whole number from 1 to 5")
        return _rating(target, value, 1, 5, feedback, rated_at_ns)
    return invalid("kind", "is not a known kind", "one of " + ", ".join(FEEDBACK_KINDS))


def _rating(
    target: RatingTarget,
    rating: float,
    low: float,
    high: float,
    feedback: str | None,
    rated_at_ns: int | None,
) -> RatingRequest:
    body: dict[str, object] = {
        "productId": target.product_id,
        "rating": _number(rating),
        "ratingMin": _number(low),
        "ratingMax": _number(high),
    }
    body.update(target.fields() or {})
    if feedback:
        body["feedback"] = clean_text(feedback)
    if rated_at_ns is not None:
        body["ratedAt"] = format_timestamp(rated_at_ns)
    return RatingRequest(body)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
