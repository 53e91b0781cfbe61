"""Records the pipeline cannot take: recorded as lost events (:class:`.._stats.LostEvents`:
counted at once, said in rate-limited warnings, handed to ``on_drop``), mapped to events off
the application thread for a full queue."""

from __future__ import annotations

import collections
import threading

from opentelemetry.sdk.trace import ReadableSpan

from .._callbacks import callback_running
from .._event import BusinessEvent
from .._logging import RateLimitedLog, logger
from .._map.mapper import EventMapper
from .._records import EventSpan, Record, event_count, request_endpoint
from .._stats import DeliveryStats, DropCallback, DropReason, LossWarning, LostEvents

MAX_DROPS_KEPT = 1000
"""Records dropped from a full queue that wait for the worker to map them and call
``on_drop``; past that, dropped records are counted (and warned) but not passed on."""


class Drops:
    """Counts and reports dropped records for one pipeline."""

    def __init__(
        self,
        stats: DeliveryStats,
        mapper: EventMapper,
        on_drop: DropCallback | None,
        max_queue_size: int,
        max_queue_bytes: int = 0,
    ) -> None:
        self._stats = stats
        self._mapper = mapper
        self._on_drop = on_drop
        self._max_queue_size = max_queue_size
        self._max_queue_bytes = max_queue_bytes
        self.log = RateLimitedLog()
        self.lost = LostEvents(stats, self.log, on_drop)
        self._kept: collections.deque[Record] = collections.deque()
        self._lock = threading.Lock()
        self._uncalled = 0
        """Business events dropped from a full queue that ``on_drop`` will not see."""

    def queue_full(self, record: Record, *, by_bytes: bool = False) -> None:
        """On the caller's thread: count, warn, and keep the record for the worker, which maps
        it and calls ``on_drop`` (for at most ``MAX_DROPS_KEPT`` waiting records; past that
        they are only counted, and the worker says how many ``on_drop`` did not see).
        ``by_bytes``: the queue had room by count, not by bytes (``max_queue_bytes``)."""
        if by_bytes:
            setting, bound, key = "max_queue_bytes", self._max_queue_bytes, "queue-full-bytes"
        else:
            setting, bound, key = "max_queue_size", self._max_queue_size, "queue-full"
        if self._request_dropped(record, DropReason.QUEUE_FULL):
            self.log.warning(
                f"{key}-requests",
                f"otel_greenflash queue is full ({setting}=%d): LLM calls or ratings "
                "dropped; see stats()['messages'|'ratings']['dropped']['queue_full']",
                bound,
            )
        count = event_count(record)
        if not count:
            return
        self.lost.record(
            DropReason.QUEUE_FULL,
            count,
            warning=LossWarning(
                key,
                f"otel_greenflash queue is full ({setting}=%d): %d new business event(s) "
                "dropped; see stats()['dropped']['queue_full']",
                (bound, count),
            ),
        )
        if callback_running() is not None:
            self.log.warning(
                "queue-full-from-callback",
                "otel_greenflash: %d business event(s) emitted by an on_error/on_drop callback "
                "met a full queue; they are counted in stats()['dropped']['queue_full'] and not "
                "passed to on_drop again",
                count,
                count=count,
            )
        elif self._on_drop is not None:
            with self._lock:
                if len(self._kept) < MAX_DROPS_KEPT:
                    self._kept.append(record)
                else:
                    self._uncalled += count

    def drop(self, record: Record | ReadableSpan, reason: DropReason) -> int:
        """Record a record that will not be sent as lost (per business event, the events
        mapped for ``on_drop``); return how many events it held."""
        self._request_dropped(record, reason)
        count = event_count(record)
        if count:
            self.lost.record(reason, count, events=self._events_for_on_drop(record))
        return count

    def _request_dropped(self, record: Record | ReadableSpan, reason: DropReason) -> bool:
        """Count the messages or ratings request a dropped record would have made."""
        endpoint = request_endpoint(record)
        if endpoint is None:
            return False
        self._stats.add_dropped_for(endpoint, reason.value)
        return True

    def sdk_dropped_span_events(self, span_name: str, dropped: int) -> None:
        """A span carrying business events ended with ``dropped`` span events discarded by
        the SDK (past ``OTEL_SPAN_EVENT_COUNT_LIMIT``, the oldest first): counted as
        ``span_event_limit`` (at most that many were business events) and said."""
        reason = DropReason.SPAN_EVENT_LIMIT
        self.lost.record(
            reason,
            dropped,
            warning=LossWarning(
                reason.value,
                "otel_greenflash: the OpenTelemetry SDK discarded %d event(s) of span %r past "
                "its span event limit (OTEL_SPAN_EVENT_COUNT_LIMIT, 128 by default); business "
                "events among them are lost: raise the limit, or use otel_greenflash.track(), "
                "which sends around a full span; see stats()['dropped']['%s']",
                (dropped, span_name, reason.value),
            ),
        )

    def pass_on(self) -> None:
        """Map the records dropped from a full queue and call ``on_drop`` (worker, shutdown):
        those kept when the call began, so a callback that emits more cannot keep it going."""
        kept = self._kept
        for _ in range(len(kept)):
            try:
                record = kept.popleft()
            except IndexError:  # another thread took it
                break
            events = self._events_for_on_drop(record)
            if events is not None:  # counted when it was dropped
                self.lost.hand_to_on_drop(DropReason.QUEUE_FULL, events)
        with self._lock:
            uncalled, self._uncalled = self._uncalled, 0
        if uncalled:
            self.log.warning(
                "queue-full-uncalled",
                "otel_greenflash: %d business event(s) dropped from the full queue were not "
                "passed to on_drop (at most %d dropped records wait for it); they are counted "
                "in stats()['dropped']['queue_full']",
                uncalled,
                MAX_DROPS_KEPT,
                count=uncalled,
            )

    def _events_for_on_drop(self, record: Record | ReadableSpan) -> list[BusinessEvent] | None:
        """The events of a dropped record, for ``on_drop``; None without one, or when the
        record cannot be mapped."""
        if self._on_drop is None:
            return None
        try:
            if isinstance(record, ReadableSpan):
                record = EventSpan(record, (), None)
            return self._mapper.events(record, report=False)
        except Exception:
            logger.exception("otel_greenflash could not map a dropped record for on_drop")
            return None
