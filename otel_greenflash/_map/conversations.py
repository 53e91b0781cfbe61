"""The map stage for conversations and ratings: linked LLM calls become Messages API requests,
evaluations and users' ratings Ratings API requests; what cannot be sent is counted and said.

The conversions are pure (:mod:`.message_rules`, :mod:`.rating_rules`); this stage gives them
the ids the link stage found, counts each request skipped under
``stats()["messages"|"ratings"]["dropped"]`` by reason, and logs each reason once per interval.
It remembers the last output message of recent LLM spans, so an evaluation of that span rates
that message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import attributes as attr
from .._config import ENV_DEFAULT_EXTERNAL_USER_ID, GreenflashConfig
from .._event import ApiRequest, Endpoint, InvalidAttribute
from .._link.rules import Ids, LinkKeys, forget_oldest_share
from .._logging import RateLimitedLog, logger
from .._records import (
    EVALUATION,
    FEEDBACK,
    LLM_CALL,
    EventLog,
    EventSpan,
    plain_attributes,
    request_endpoint,
)
from .._stats import DeliveryStats
from .genai_calls import Skipped, read_llm_call
from .message_rules import ConversationIds, MessageOptions, MessagesRequest, messages_body
from .rating_rules import RatingRequest, RatingTarget, rating_from_evaluation, rating_from_feedback

SKIP_REASONS = {
    "no conversation id": "no_conversation_id",
    "no user id": "no_user_id",
    "no product id": "no_product_id",
    "no messages recorded": "no_messages",
    "no conversation or message to rate": "no_conversation_id",
    "evaluation with a label and no score": "no_score",
}
"""What the rules say when they skip a record → the ``dropped`` reason it is counted under."""

_HINTS = {
    "no_user_id": "set greenflash.user.external_id on the trace, or "
    + ENV_DEFAULT_EXTERNAL_USER_ID,
    "no_conversation_id": "set one with otel_greenflash.conversation(external_id=...) around "
    "the work (docs/linking.md)",
    "no_product_id": "set GREENFLASH_PRODUCT_ID or greenflash.product.id on the trace",
}


class ConversationMapper:
    """Maps LLM calls and ratings with the ids the link stage found; used on the worker."""

    def __init__(self, config: GreenflashConfig, link_keys: LinkKeys, stats: DeliveryStats):
        self._product_id = config.product_id
        self._default_user = config.default_external_user_id
        self._options = MessageOptions(
            include_content=config.capture_message_content,
            redact=config.redact_message,
            max_message_bytes=config.max_message_bytes,
        )
        self._link_keys = link_keys
        self._stats = stats
        self._max_remembered = config.max_traces
        self.log = RateLimitedLog()
        self.answers: dict[int, tuple[str, str]] = {}
        """Span id of a recent LLM span → its last output message's ``externalMessageId`` and
        the key of the Messages API request carrying it."""

    def requests(
        self, record: EventSpan | EventLog, linked: Ids | None = None, *, report: bool = True
    ) -> list[ApiRequest]:
        """The Messages or Ratings API request ``record`` makes (none for a business event).
        With ``report`` (not for drops) what is skipped is counted and said. Never raises."""
        try:
            return self._requests(record, linked or {}, report)
        except Exception:
            logger.exception("otel_greenflash could not map an LLM call or rating")
            if report:
                self._stats.add_dropped_for(
                    request_endpoint(record) or Endpoint.MESSAGES, "unmappable"
                )
            return []

    def _requests(
        self, record: EventSpan | EventLog, linked: Ids, report: bool
    ) -> list[ApiRequest]:
        if isinstance(record, EventSpan):
            if not record.llm_call:
                return []
            span = record.span
            context = span.context
            return self._messages(
                plain_attributes(span.attributes),
                linked,
                report,
                source_name=f"span {span.name!r}",
                source="span",
                start_ns=span.start_time,
                end_ns=span.end_time,
                span_id=context.span_id if context is not None else 0,
            )
        if record.kind == LLM_CALL:
            return self._messages(
                record.attributes,
                linked,
                report,
                source_name=attr.GENAI_OPERATION_DETAILS_EVENT,
                source="log record",
                start_ns=None,
                end_ns=record.time_ns,
                span_id=record.span_id,
            )
        if record.kind == EVALUATION:
            answer = self.answers.get(record.span_id)
            target = self._target(record.attributes, linked, answer[0] if answer else None)
            result = rating_from_evaluation(record.attributes, target, rated_at_ns=record.time_ns)
            return self._rating(result, report, after=answer[1] if answer else None)
        if record.kind == FEEDBACK:
            attributes = record.attributes
            message = attributes.get(attr.RATING_MESSAGE_EXTERNAL_ID)
            target = self._target(attributes, linked, message if isinstance(message, str) else None)
            text = attributes.get(attr.RATING_FEEDBACK)
            kind = attributes.get(attr.RATING_KIND)
            feedback = rating_from_feedback(
                kind if isinstance(kind, str) else "thumbs",
                attributes.get(attr.RATING_VALUE),
                target,
                feedback=text if isinstance(text, str) else None,
                rated_at_ns=record.time_ns,
            )
            return self._rating(feedback, report)
        return []

    # -- messages ------------------------------------------------------------------------------

    def _messages(
        self,
        attributes: Mapping[str, Any],
        linked: Ids,
        report: bool,
        *,
        source_name: str,
        source: str,
        start_ns: int | None,
        end_ns: int | None,
        span_id: int,
    ) -> list[ApiRequest]:
        call = read_llm_call(attributes, source_name=source_name, source=source)
        if call is None:
            return []  # not an LLM call after all (an embeddings span, say)
        if isinstance(call, InvalidAttribute):
            if report:
                self._invalid(Endpoint.MESSAGES, call)
            return []
        result = messages_body(
            call,
            self._ids(attributes, linked),
            default_external_user_id=self._default_user,
            options=self._options,
            start_time_ns=start_ns,
            end_time_ns=end_ns,
        )
        if isinstance(result, Skipped):
            # A span without content whose call came whole in its log event (util-genai emits
            # it before ending the span) lost nothing.
            sent = result.reason == "no messages recorded" and span_id in self.answers
            if report and not sent:
                self._skipped(Endpoint.MESSAGES, result, source_name)
            return []
        if report:
            self._count_changes(result)
        request = ApiRequest.messages(result.body, source_name)
        if call.output and span_id:
            self._remember_answer(span_id, (result.message_ids[-1], request.key))
        return [request]

    def _ids(self, attributes: Mapping[str, Any], linked: Ids) -> ConversationIds:
        ids = {**linked, **self._link_keys.ids_from(attributes)}
        return ConversationIds(
            product_id=_text(ids.get(attr.PRODUCT_ID)) or self._product_id,
            conversation_id=_text(ids.get(attr.CONVERSATION_ID)),
            external_conversation_id=_text(ids.get(attr.CONVERSATION_EXTERNAL_ID)),
            external_user_id=_text(ids.get(attr.USER_EXTERNAL_ID)),
            external_organization_id=_text(ids.get(attr.ORGANIZATION_EXTERNAL_ID)),
        )

    def _remember_answer(self, span_id: int, answer: tuple[str, str]) -> None:
        answers = self.answers
        answers[span_id] = answer
        if len(answers) > self._max_remembered:
            forget_oldest_share(answers)

    def _count_changes(self, request: MessagesRequest) -> None:
        for outcome, count in (
            ("truncated", request.truncated),
            ("redacted", request.redacted),
            ("redaction_failed", request.redaction_failed),
        ):
            if count:
                self._stats.add_for(Endpoint.MESSAGES, outcome, count)
        if request.redaction_failed:
            self.log.warning(
                "redaction-failed",
                "otel_greenflash sent %d message(s) without content: the redact_message hook "
                "raised; see stats()['messages']['redaction_failed']",
                request.redaction_failed,
                count=request.redaction_failed,
            )

    # -- ratings -------------------------------------------------------------------------------

    def _target(
        self, attributes: Mapping[str, Any], linked: Ids, message_id: str | None
    ) -> RatingTarget:
        ids = self._ids(attributes, linked)
        return RatingTarget(
            product_id=ids.product_id or "",
            conversation_id=ids.conversation_id,
            external_conversation_id=ids.external_conversation_id,
            external_message_id=message_id,
        )

    def _rating(
        self,
        result: RatingRequest | Skipped | InvalidAttribute,
        report: bool,
        *,
        after: str | None = None,
    ) -> list[ApiRequest]:
        if isinstance(result, RatingRequest):
            if not result.body.get("productId"):
                result = Skipped("no product id")
            else:
                return [ApiRequest.rating(result.body, "rating", after=after)]
        if report:
            if isinstance(result, Skipped):
                self._skipped(Endpoint.RATINGS, result, "rating")
            else:
                self._invalid(Endpoint.RATINGS, result)
        return []

    # -- what is not sent ----------------------------------------------------------------------

    def _skipped(self, endpoint: Endpoint, skipped: Skipped, source_name: str) -> None:
        reason = SKIP_REASONS.get(skipped.reason, "skipped")
        self._stats.add_dropped_for(endpoint, reason)
        hint = _HINTS.get(reason)
        self.log.warning(
            f"{endpoint}-{reason}",
            "otel_greenflash did not send a %s request: %s (%s)%s; see stats()[%r]['dropped']",
            endpoint,
            skipped.reason,
            source_name,
            f"; {hint}" if hint else "",
            str(endpoint),
        )

    def _invalid(self, endpoint: Endpoint, problem: InvalidAttribute) -> None:
        self._stats.add_dropped_for(endpoint, "invalid")
        self.log.warning(
            f"{endpoint}-invalid {problem.attribute} {problem.problem}",
            "otel_greenflash did not send a %s request (%s): %r %s; allowed: %s; see "
            "stats()[%r]['dropped']['invalid']",
            endpoint,
            problem.span_name,
            problem.attribute,
            problem.problem,
            problem.allowed,
            str(endpoint),
        )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)
