"""Thread-safe delivery counters, read through a snapshot, and the one entry point for every
business event lost on the way (:meth:`LostEvents.record`)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from enum import Enum
from typing import NamedTuple

# typing_extensions comes with opentelemetry-api; its TypedDict honours NotRequired on 3.10.
from typing_extensions import NotRequired, TypedDict

from ._callbacks import call_safely
from ._event import BusinessEvent, Endpoint
from ._logging import RateLimitedLog

DropCallback = Callable[[Sequence[BusinessEvent], str], None]
"""``on_drop(events, reason)``: events discarded before sending, and why."""


class EndpointCounts(TypedDict):
    """What became of the requests to one endpoint other than events."""

    sent: int
    failed: int
    retried: int
    unconfirmed: int
    dropped: dict[str, int]
    truncated: NotRequired[int]
    """Messages: contents cut to ``max_message_bytes``."""
    redacted: NotRequired[int]
    """Messages: contents the ``redact_message`` hook changed or removed."""
    redaction_failed: NotRequired[int]
    """Messages: sent without content because the hook raised."""


class StatsSnapshot(TypedDict):
    """Counts since the processor or exporter was created."""

    queued: int
    """Event spans accepted into the queue."""
    sent: int
    """Events the API accepted (2xx)."""
    retried: int
    """Retry attempts scheduled (an event retried twice counts 2)."""
    failed: int
    """Events the API refused or that could not be delivered."""
    invalid: int
    """Events not sent because an attribute broke the convention."""
    dropped: dict[str, int]
    """Event spans or events discarded before sending, by reason."""
    unlinked: dict[str, int]
    """Events sent without a conversation id because waiting for one was cut short, by reason."""
    waiting: int
    """Event spans currently waiting for their trace's conversation id."""
    spool: dict[str, int]
    """With a spool: events in it still to deliver, set aside (refused), evicted by its bound."""
    messages: NotRequired[EndpointCounts]
    """``POST /messages`` requests, once there has been one (the keys above count events only)."""
    ratings: NotRequired[EndpointCounts]
    """``POST /ratings`` requests, once there has been one; ``unconfirmed``: ratings whose
    request may or may not have been stored (never retried, see the delivery rule)."""


class DeliveryStats:
    """Counters updated by the application thread (drops) and the worker (the rest)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued = 0
        self._sent = 0
        self._failed = 0
        self._retried = 0
        self._invalid = 0
        self._dropped: Counter[str] = Counter()
        self._unlinked: Counter[str] = Counter()
        self._others: dict[Endpoint, Counter[str]] = {}
        """Counters of the messages and ratings endpoints; ``dropped:<reason>`` for drops."""

    def add_for(self, endpoint: Endpoint, outcome: str, count: int = 1) -> None:
        """Count ``count`` requests to a messages or ratings endpoint as ``outcome`` (``sent``,
        ``failed``, ``retried``, ``unconfirmed``); events use the methods below."""
        with self._lock:
            self._others.setdefault(endpoint, Counter())[outcome] += count

    def add_queued(self, count: int = 1) -> None:
        with self._lock:
            self._queued += count

    def add_sent(self, count: int = 1) -> None:
        with self._lock:
            self._sent += count

    def add_retried(self, count: int = 1) -> None:
        with self._lock:
            self._retried += count

    def add_failed(self, count: int = 1) -> None:
        with self._lock:
            self._failed += count

    def add_invalid(self, count: int = 1) -> None:
        with self._lock:
            self._invalid += count

    def add_dropped_for(self, endpoint: Endpoint, reason: str, count: int = 1) -> None:
        """Requests to ``endpoint`` discarded before sending, for ``reason``."""
        if endpoint is Endpoint.EVENTS:
            self.add_dropped(reason, count)
        else:
            self.add_for(endpoint, f"dropped:{reason}", count)

    def add_dropped(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    def add_unlinked(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._unlinked[reason] += count

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            snapshot = StatsSnapshot(
                queued=self._queued,
                sent=self._sent,
                retried=self._retried,
                failed=self._failed,
                invalid=self._invalid,
                dropped=dict(self._dropped),
                unlinked=dict(self._unlinked),
                waiting=0,
                spool={},
            )
            for endpoint, counts in self._others.items():
                dropped = {
                    name.removeprefix("dropped:"): count
                    for name, count in counts.items()
                    if name.startswith("dropped:")
                }
                shown = EndpointCounts(
                    sent=counts["sent"],
                    failed=counts["failed"],
                    retried=counts["retried"],
                    unconfirmed=counts["unconfirmed"],
                    dropped=dropped,
                )
                if endpoint is Endpoint.MESSAGES:
                    shown["truncated"] = counts["truncated"]
                    shown["redacted"] = counts["redacted"]
                    shown["redaction_failed"] = counts["redaction_failed"]
                    snapshot["messages"] = shown
                elif endpoint is Endpoint.RATINGS:
                    snapshot["ratings"] = shown
            return snapshot


class DropReason(str, Enum):
    """Why business events were not delivered. The value is the key under
    ``stats()["dropped"]`` and the reason ``on_drop`` gets; :attr:`INVALID` and :attr:`FAILED`
    are counted under their own ``stats()`` keys instead, and never reach ``on_drop``."""

    QUEUE_FULL = "queue_full"
    """The pipeline's queue was full (``max_queue_size`` or ``max_queue_bytes``)."""
    SHUTDOWN = "shutdown"
    """Still held when the pipeline shut down (or after it had)."""
    NO_API_KEY = "no_api_key"
    """No API key was configured."""
    SPAN_EVENT_LIMIT = "span_event_limit"
    """Span events the SDK discarded past its limit, from spans carrying business events."""
    DUPLICATE_INSERT_ID = "duplicate_insert_id"
    """The spool already holds an event with that insertId."""
    SPOOL_FULL = "spool_full"
    """Evicted from the spool by ``spool_max_events``."""
    INVALID = "invalid"
    """An attribute broke the convention (``stats()["invalid"]``)."""
    FAILED = "failed"
    """The API refused the event, or it was not delivered in time (``stats()["failed"]``)."""

    def __str__(self) -> str:
        return self.value


class LossWarning(NamedTuple):
    """A rate-limited warning that goes with a loss: ``message % args`` under ``key``;
    ``occurrences`` is how many it stands for (default: the events lost)."""

    key: str
    message: str
    args: tuple[object, ...] = ()
    occurrences: int | None = None


class LostEvents:
    """Where every lost business event is recorded: counted in ``stats()``, said in a
    rate-limited warning, and handed to ``on_drop``."""

    def __init__(
        self,
        stats: DeliveryStats,
        log: RateLimitedLog,
        on_drop: DropCallback | None = None,
    ) -> None:
        self.stats = stats
        self.log = log
        self.on_drop = on_drop

    def record(
        self,
        reason: DropReason,
        quantity: int,
        *,
        events: Sequence[BusinessEvent] | None = None,
        warning: LossWarning | None = None,
    ) -> None:
        """Count ``quantity`` events lost for ``reason``, say ``warning``, and hand ``events``
        (when given) to ``on_drop``."""
        if reason is DropReason.INVALID:
            self.stats.add_invalid(quantity)
        elif reason is DropReason.FAILED:
            self.stats.add_failed(quantity)
        else:
            self.stats.add_dropped(reason.value, quantity)
        if warning is not None:
            count = quantity if warning.occurrences is None else warning.occurrences
            self.log.warning(warning.key, warning.message, *warning.args, count=count)
        if events is not None:
            self.hand_to_on_drop(reason, events)

    def hand_to_on_drop(self, reason: DropReason, events: Sequence[BusinessEvent]) -> None:
        """Give ``on_drop`` events already counted (by :meth:`record`, or when a full
        queue's drops are mapped later on the worker)."""
        if self.on_drop is not None and reason not in (DropReason.INVALID, DropReason.FAILED):
            call_safely("on_drop", self.on_drop, events, reason.value)
