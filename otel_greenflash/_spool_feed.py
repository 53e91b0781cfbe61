"""The durable spool as the waiting room in front of the delivery loop.

Every event is written to the spool first, then handed to the loop in order as it has room, so
the worker never waits on a full loop (the span queue keeps draining into the spool during an
outage). The loop reports each settled event; the worker applies those notes (remove what was
sent, set aside what was refused, keep what failed for a later round).
"""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from ._config import GreenflashConfig
from ._delivery import DeliveryEngine
from ._event import BusinessEvent
from ._logging import RateLimitedLog, logger
from ._spool import Spool
from ._spool_destination import Destination
from ._stats import DeliveryStats

NOTES_BEFORE_WAKE = 256
"""Settled events that make the worker run soon, to hand the loop more spooled events."""


class SpoolFeed:
    """Owns this process's spool; used from the worker thread (``flushed_through`` and
    ``counts`` from any thread)."""

    def __init__(
        self, config: GreenflashConfig, stats: DeliveryStats, wake: Callable[[], None]
    ) -> None:
        self._config = config
        self._stats = stats
        self._wake = wake
        self._log = RateLimitedLog()
        self.spool: Spool | None = None
        self._lock = threading.Lock()
        self._notes: collections.deque[tuple[str, str]] = collections.deque()
        self._cursor = 0
        """Highest spool sequence number handed to the loop."""
        self._in_engine: set[str] = set()
        self._not_spooled: set[str] = set()
        """Events SQLite could not store, sent from memory: their notes concern no row."""
        self._retry_spooled = False
        self._last_rescan = time.monotonic()
        self._wanted = True

    def open(self) -> None:
        """Open this process's spool (once, on the worker), adopting what dead processes left."""
        if not self._wanted:
            return
        self._wanted = False
        try:
            spool = Spool(
                self._config.spool_dir or "",
                max_events=self._config.spool_max_events,
                destination=Destination.of(self._config),  # only its own key's orphans
            )
            adopted = spool.adopt_orphans()
        except Exception as error:  # whatever the disk says, the app carries on
            logger.error(
                "otel_greenflash spool disabled, events are kept in memory only: %s", error
            )
            return
        if adopted:
            self._stats.add_queued(adopted)
        self.spool = spool

    def note_settled(self, event: BusinessEvent, outcome: str) -> bool:
        """The loop reports each settled event. True when the spool keeps an event whose
        retry window ended, to try it again later (so it is not counted as failed)."""
        if self.spool is None:
            return False
        self._notes.append((event.insert_id, outcome))
        if len(self._notes) >= NOTES_BEFORE_WAKE:
            self._wake()
        return outcome == "failed" and event.insert_id not in self._not_spooled

    def put(self, events: Sequence[BusinessEvent], engine: DeliveryEngine) -> bool:
        """Spool new events, apply notes, hand spooled events to the loop as it has room.
        False when there is no (longer a) spool: the caller hands events to the loop itself."""
        spool = self.spool
        if spool is None:
            return False
        try:
            with self._lock:
                self._apply_notes(spool)
                duplicates_before = spool.duplicates
                lost, unstorable = self._add(spool, events)
                duplicates = spool.duplicates - duplicates_before
                self._feed(spool, engine)
        except Exception as error:
            self.spool = None
            logger.error(
                "otel_greenflash spool failed (%s): spool disabled, events are kept in memory only",
                error,
            )
            engine.submit([event for event in events if event.insert_id not in self._in_engine])
            return True
        if unstorable:  # this event cannot be stored: it goes from memory, the spool stays
            self._log.warning(
                "spool-unstorable",
                "otel_greenflash spool could not store %d event(s); they are sent from memory",
                len(unstorable),
                count=len(unstorable),
            )
            engine.submit(unstorable)
        if duplicates:  # the API keeps one event per insertId: these would be discarded
            self._stats.add_dropped("duplicate_insert_id", duplicates)
            self._log.warning(
                "spool-duplicate",
                "otel_greenflash: %d event(s) carry the insertId of an event already in the "
                "spool; the API keeps one event per insertId, so they are dropped; see "
                "stats()['dropped']['duplicate_insert_id']",
                duplicates,
                count=duplicates,
            )
        if lost:
            self._stats.add_dropped("spool_full", lost)
            self._log.warning(
                "spool-full",
                "otel_greenflash spool is full (spool_max_events=%d): %d unsent event(s) evicted",
                spool.max_events,
                lost,
            )
        return True

    def hold(self, events: Sequence[BusinessEvent]) -> None:
        """Spool events that wait for their conversation id, as known so far (so a crash
        while they wait does not lose them); :meth:`put` later replaces them."""
        spool = self.spool
        if spool is None or not events:
            return
        try:
            with self._lock:
                if not _storable(spool.hold, events):
                    for event in events:  # one bad row must not cost the others their safety
                        _storable(spool.hold, [event])
        except Exception as error:
            self.spool = None
            logger.error(
                "otel_greenflash spool failed (%s): spool disabled, events are kept in memory only",
                error,
            )

    def _add(
        self, spool: Spool, events: Sequence[BusinessEvent]
    ) -> tuple[int, list[BusinessEvent]]:
        """Spool ``events``; return how many unsent ones the bound evicted, and the events
        SQLite refused as data (sent from memory instead, never a reason to stop spooling)."""
        lost = 0

        def add(batch: Sequence[BusinessEvent]) -> None:
            nonlocal lost
            lost += spool.add(batch, handed_over_up_to=self._cursor)

        if _storable(add, events):
            return lost, []
        unstorable = [event for event in events if not _storable(add, [event])]
        self._not_spooled.update(event.insert_id for event in unstorable)
        return lost, unstorable

    def last_seq(self) -> int:
        """The newest spooled event's number (0 when empty)."""
        spool = self.spool
        return spool.last_seq() if spool is not None else 0

    def flushed_through(self, seq: int) -> bool:
        """True when no event numbered ``seq`` or lower is still pending in the spool."""
        spool = self.spool
        if spool is None:
            return True
        with self._lock:
            self._apply_notes(spool)
            return spool.first_pending_seq() > seq

    def counts(self) -> dict[str, int] | None:
        spool = self.spool
        if spool is None:
            return None
        pending, rejected = spool.counts()
        return {"pending": pending, "rejected": rejected, "evicted": spool.evicted}

    def close(self) -> int:
        """Final update at shutdown; return how many events stay in the spool for next time."""
        spool = self.spool
        if spool is None:
            return 0
        try:
            with self._lock:
                self._apply_notes(spool)
            pending, _ = spool.counts()
        except Exception:
            pending = 0
        spool.close()
        self.spool = None
        return pending

    def release_after_fork(self) -> Spool | None:
        """In a forked child: let go of the parent's file without touching it."""
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.release_after_fork()
        return spool

    def _apply_notes(self, spool: Spool) -> None:
        notes = self._notes
        sent: list[str] = []
        rejected: list[str] = []
        while notes:
            insert_id, outcome = notes.popleft()
            self._in_engine.discard(insert_id)
            if insert_id in self._not_spooled:
                self._not_spooled.discard(insert_id)
            elif outcome == "sent":
                sent.append(insert_id)
            elif outcome == "rejected":
                rejected.append(insert_id)
            elif outcome == "failed":
                self._retry_spooled = True
        spool.remove(sent)
        spool.set_aside(rejected)

    def _feed(self, spool: Spool, engine: DeliveryEngine) -> None:
        room = self._config.max_queue_size - engine.pending
        now = time.monotonic()
        if self._retry_spooled and now - self._last_rescan >= self._config.export_timeout_seconds:
            self._retry_spooled = False  # events whose retry window ended: go round once more
            self._last_rescan = now
            self._cursor = 0
        while room > 0:
            rows = spool.pending_after(self._cursor, min(room, 512))
            if not rows:
                return
            self._cursor = rows[-1][0]
            batch = [event for _, event in rows if event.insert_id not in self._in_engine]
            self._in_engine.update(event.insert_id for event in batch)
            engine.submit(batch)
            room -= len(batch)


_DATA_ERRORS = (sqlite3.DataError, sqlite3.InterfaceError, ValueError, OverflowError)
"""What SQLite raises for one value it cannot store (too big, not encodable), unlike errors of
the file or the disk, which switch the spool off."""


def _storable(
    write: Callable[[Sequence[BusinessEvent]], None], batch: Sequence[BusinessEvent]
) -> bool:
    try:
        write(batch)
    except _DATA_ERRORS:
        return False
    return True
