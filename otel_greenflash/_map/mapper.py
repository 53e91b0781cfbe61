"""The map stage: linked records become Events API bodies; what cannot be sent is said once.

The conversion itself is pure (:mod:`.rules`); this stage counts and reports invalid
events (rate-limited per kind of problem) and events sent without a conversation id because
their wait was cut short.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import attributes as attr
from .._config import ENV_LINK_EXTRA_ALIASES, GreenflashConfig
from .._event import BusinessEvent, InvalidAttribute
from .._link.rules import Ids, LinkKeys, id_like_keys
from .._link.status import RecentLinks
from .._link.waiting import attribute_sets
from .._logging import RateLimitedLog, logger
from .._records import EventLog, EventSpan, Record, event_count, request_endpoint
from .._stats import DeliveryStats, DropReason, LossWarning, LostEvents
from .rules import MappingResult, map_log_record, map_span

NO_CONVERSATION_ID = "no_conversation_id"
"""``stats()["unlinked"]`` key: nothing in the event's trace, baggage or settings named its
conversation (as opposed to a wait for one that was cut short)."""

UNLINKED_REASONS = {
    "waiting_full": "more events were waiting for their trace's local root span than "
    "max_waiting / GREENFLASH_LINK_MAX_WAITING allows; raise it",
    "linger_expired": "the trace's local root span did not end within linger_seconds / "
    "GREENFLASH_LINK_LINGER; raise it if conversation ids are set later than that",
    "flush": "force_flush() sent events still waiting for their trace's root span",
    "shutdown": "shutdown() sent events still waiting for their trace's root span",
    NO_CONVERSATION_ID: "no conversation id in the trace",
}


class EventMapper:
    """Maps records with the ids the link stage found; used on the pipeline's worker."""

    def __init__(self, config: GreenflashConfig, link_keys: LinkKeys, stats: DeliveryStats):
        self._product_id = config.product_id
        self._link_keys = link_keys
        self._stats = stats
        self.invalid_log = RateLimitedLog()
        self._invalid = LostEvents(stats, self.invalid_log)
        self.unlinked_log = RateLimitedLog()
        self.recent = RecentLinks()
        """How the last events were linked (``otel-greenflash check`` shows it)."""

    def events(
        self,
        record: Record,
        linked: Ids | None = None,
        cut_short: str | None = None,
        *,
        report: bool = True,
    ) -> list[BusinessEvent]:
        """The events of ``record``; ``cut_short`` says why it stopped waiting. With
        ``report`` (not for drops), invalid events are counted and logged. The record's
        :class:`~.._records.MapOutcome`, if any, is told the result (once).

        Never raises: a mapping bug must not take the rest of the batch with it.
        """
        if isinstance(record, BusinessEvent):
            return [record]
        if request_endpoint(record) is not None and not event_count(record):
            return []  # an LLM call or a rating only (see .conversations)
        outcome = record.outcome
        if outcome is not None:
            record.outcome = None  # told once: a record held while it waits is mapped again
        try:
            result = self._map(record, linked)
        except Exception:
            logger.exception("otel_greenflash could not map a %s", _source(record))
            if report:
                self._invalid.record(DropReason.INVALID, event_count(record))
            if outcome is not None:
                outcome.unmappable(event_count(record))
            return []
        if outcome is not None:
            outcome.add(result.events, result.invalid)
        if report:
            self.report_invalid(result.invalid)
        if report:
            self._report_unlinked(record, result.events, cut_short)
        return result.events

    def _map(self, record: EventSpan | EventLog, linked: Ids | None) -> MappingResult:
        if isinstance(record, EventSpan):
            return map_span(
                record.span,
                default_product_id=self._product_id,
                linked=linked,
                link_keys=self._link_keys,
            )
        return map_log_record(
            record.attributes,
            event_name=record.event_name,
            time_ns=record.timestamp,
            observed_time_ns=record.observed_timestamp,
            trace_id=record.trace_id,
            span_id=record.span_id,
            linked=linked,
            default_product_id=self._product_id,
            link_keys=self._link_keys,
            body=record.body,
            severity=record.severity,
            received_time_ns=record.received_timestamp,
            source=record.source,
            insert_id=record.insert_id,
        )

    def report_invalid(self, invalid: Iterable[InvalidAttribute]) -> None:
        """Count each rejected event; warn in full at the first of each kind of problem, then
        at most once per interval per kind, with how many (see :func:`_invalid_kind`)."""
        for problem in invalid:
            self._invalid.record(
                DropReason.INVALID,
                1,
                warning=LossWarning(
                    _invalid_kind(problem), "otel_greenflash %s", (problem.describe(),)
                ),
            )

    def _report_unlinked(
        self, record: EventSpan | EventLog, events: list[BusinessEvent], cut_short: str | None
    ) -> None:
        unlinked = sum(1 for event in events if not _has_conversation_field(event))
        reason = NO_CONVERSATION_ID if cut_short is None else cut_short
        self.recent.add(len(events) - unlinked, unlinked, reason)
        if not unlinked:
            return
        if cut_short is not None:
            self._stats.add_unlinked(cut_short, unlinked)
            self.unlinked_log.warning(
                f"unlinked-{cut_short}",
                "otel_greenflash sent %d business event(s) without a conversation id: %s; "
                "see stats()['unlinked']",
                unlinked,
                UNLINKED_REASONS.get(cut_short, cut_short),
                count=unlinked,
            )
            return
        self._stats.add_unlinked(NO_CONVERSATION_ID, unlinked)
        candidates = (
            list(record.id_like_keys)
            if record.id_like_keys is not None  # slimmed to wait: found before
            else id_like_keys(attribute_sets(record), self._link_keys.aliases)
        )
        self.recent.id_like_keys = candidates
        if candidates:
            hint = (
                f"keys on its trace that look like one: {', '.join(candidates)}; map one with "
                f"{ENV_LINK_EXTRA_ALIASES}='{candidates[0]}={attr.CONVERSATION_EXTERNAL_ID}' "
                "(or extra_aliases=...)"
            )
        else:
            hint = (
                "set one with otel_greenflash.conversation(external_id=...) around the work, "
                "or your GenAI stack's session scope (docs/linking.md: Linking in GenAI stacks)"
            )
        self.unlinked_log.warning(
            f"unlinked-{NO_CONVERSATION_ID}",
            "otel_greenflash sent %d business event(s) without a conversation id: %s (%s); "
            "%s; see stats()['unlinked']",
            unlinked,
            UNLINKED_REASONS[NO_CONVERSATION_ID],
            _source(record),
            hint,
            count=unlinked,
        )


def _source(record: EventSpan | EventLog) -> str:
    if isinstance(record, EventSpan):
        return f"span {record.span.name!r}"
    return record.source


def _has_conversation_field(event: BusinessEvent) -> bool:
    return "conversationId" in event.body or "externalConversationId" in event.body


def _invalid_kind(problem: InvalidAttribute) -> str:
    """The rate limit's key for an invalid event: its attribute and what was wrong with it,
    never the span name or the value; all keys under ``greenflash.event.properties.`` are one
    attribute (applications choose those names, so they could be countless)."""
    attribute = problem.attribute
    if attribute.startswith(attr.EVENT_PROPERTIES_PREFIX):
        attribute = attr.EVENT_PROPERTIES_PREFIX + "*"
    return f"invalid {attribute} {problem.problem}"
