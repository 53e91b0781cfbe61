"""The durable spool as the waiting room in front of the delivery loop.

Every event is written to the spool first, then handed to the loop in order as it has room, so
the worker never waits on a full loop (the span queue keeps draining into the spool during an
outage). The loop reports each settled event; the worker applies those notes (remove what was
sent, set aside what was refused, keep what failed for a later round).

A full filesystem is a passing state, not a failure (:mod:`.spool_full_disk` keeps it): the
spool stays open, the write is tried again until it succeeds, and meanwhile new events go to the
loop from memory (``disk.memory_fallback``; the gateway refuses them instead, so senders
retry) while spooled ones keep being delivered; their rows are removed as soon as SQLite can
write again.
Any other error of the file or the disk switches the spool off for the life of the process
(``broken`` says why).
"""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from .._config import GreenflashConfig
from .._deliver.engine import DeliveryEngine
from .._event import ApiRequest, BusinessEvent, DeliveryItem, Endpoint
from .._logging import RateLimitedLog, logger
from .._stats import DeliveryStats, DropReason, LossWarning, LostEvents
from .spool import Spool, disk_full
from .spool_destination import Destination
from .spool_full_disk import FullDisk

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
        self._lost = LostEvents(stats, self._log)  # spool drops are not handed to on_drop
        self.spool: Spool | None = None
        self._lock = threading.Lock()
        self._notes: collections.deque[tuple[str, str, Endpoint]] = collections.deque()
        self._cursor = 0
        """Highest spool sequence number handed to the loop."""
        self._in_engine: set[str] = set()
        self._not_spooled: set[str] = set()
        """Events SQLite could not store, sent from memory: their notes concern no row."""
        self._retry_spooled = False
        self._last_rescan = time.monotonic()
        self._wanted = True
        self.disk = FullDisk(config.spool_dir, self._log)
        """Whether the spool's filesystem is full, and the writes that missed meanwhile."""
        self.broken: str | None = None
        """Why the spool was switched off for good (None while it works or was never wanted)."""
        self._removing: set[str] = set()
        self._setting_aside: set[str] = set()
        self._unmarking: set[str] = set()
        """Settled events whose rows are still to be removed or set aside, and ratings surely
        not stored whose ``sending`` mark is still to be cleared (kept across a full disk,
        applied once SQLite can write again)."""
        self._backlog: list[DeliveryItem] = []
        self._after: dict[str, str] = {}
        """Rating key → the messages request it follows (:attr:`ApiRequest.after`), for the
        ratings this process spooled and has not handed to the loop yet."""
        """Events spooled as waiting whose final body a full disk kept out: written first on
        the next successful write, or sent from memory when a flush or shutdown wants them
        out (see :meth:`release_backlog`)."""
        self._released: set[str] = set()
        """Backlog events sent from memory and not settled yet: their waiting row is removed
        (or set aside) once they are, and SQLite can write."""
        self._release_wanted = False

    def open(self) -> None:
        """Open this process's spool (once, on the worker), adopting what dead processes left.
        When the filesystem is full it is tried again later (see :meth:`put`)."""
        if not self._wanted:
            return
        self._wanted = False
        spool: Spool | None = None
        try:
            spool = Spool(
                self._config.spool_dir or "",
                max_events=self._config.spool_max_events,
                destination=Destination.of(self._config),  # only its own key's orphans
            )
            adopted = spool.adopt_orphans()
        except Exception as error:  # whatever the disk says, the app carries on
            if spool is not None:
                spool.close()  # kept for the next adoption if it took in any events
            if disk_full(error):
                self.disk.filled(error)
                self._wanted = True
                return
            self.broken = str(error)
            logger.error(
                "otel_greenflash spool disabled, events are kept in memory only: %s", error
            )
            return
        if adopted:
            self._stats.add_queued(adopted)
        self._count_adopted_unconfirmed(spool)
        self.spool = spool
        if self.disk.full is not None:
            self.disk.space_back()

    def _reopen_if_due(self) -> None:
        """The spool could not be created on a full disk: try again when due."""
        full = self.disk.full
        if self._wanted and full is not None and full.due(time.monotonic()):
            self.open()

    def note_settled(self, event: DeliveryItem, outcome: str) -> bool:
        """The loop reports each settled event. True when the spool keeps an event whose
        retry window ended, to try it again later (so it is not counted as failed)."""
        if self.spool is None:
            return False
        self._notes.append((event.key, outcome, event.endpoint))
        if len(self._notes) >= NOTES_BEFORE_WAKE:
            self._wake()
        insert_id = event.key
        kept = insert_id not in self._not_spooled and insert_id not in self._released
        return outcome == "failed" and kept

    def mark_sending(self, rating: DeliveryItem, sending: bool) -> None:
        """The delivery loop's thread: record (committed) that a spooled rating's request may
        reach the API now, or, ``sending=False``, that it surely did not (see the engine)."""
        with self._lock:
            spool = self.spool
            if spool is not None and rating.key not in self._not_spooled:
                spool.mark_sending([rating.key], sending)

    def put(self, events: Sequence[DeliveryItem], engine: DeliveryEngine) -> bool:
        """Spool new events, apply notes, hand spooled events to the loop as it has room.
        False when there is no (longer a) spool: the caller hands events to the loop itself."""
        spool = self.spool
        if spool is None:
            self._reopen_if_due()
            spool = self.spool
            if spool is None:
                if self.disk.full is None:
                    return False
                self._keep_out(None, events, engine)  # not created yet: the disk is full
                return True
        if self._release_wanted:
            self.release_backlog(engine)
        full = self.disk.full
        if full is not None and not full.due(time.monotonic()):
            self._keep_out(spool, events, engine)
            self._quietly(spool, engine)  # spooled events keep going out, rows removed if it can
            return True
        try:
            with self._lock:
                if full is not None:
                    spool.probe_write()
                self._apply_notes(spool)
                if self._backlog:
                    events, self._backlog = [*self._backlog, *events], []
                duplicates_before = spool.duplicates
                self._remember_order(events)
                lost, unstorable = self._add(spool, events)
                duplicates = spool.duplicates - duplicates_before
                self._count_requests_lost(spool)
                self._count_adopted_unconfirmed(spool)
        except Exception as error:
            if disk_full(error):
                self.disk.filled(error)
                self._keep_out(spool, [e for e in events if e.key not in self._in_engine], engine)
                self._quietly(spool, engine)
                return True
            self._switch_off(error)
            engine.submit([event for event in events if event.key not in self._in_engine])
            return True
        if full is not None:
            self.disk.space_back()
        self._quietly(spool, engine)  # hand spooled events on (reads; written events are in)
        if unstorable:  # this event cannot be stored: it goes from memory, the spool stays
            self._log.warning(
                "spool-unstorable",
                "otel_greenflash spool could not store %d event(s); they are sent from memory",
                len(unstorable),
                count=len(unstorable),
            )
            engine.submit(unstorable)
        if duplicates:  # the API keeps one event per insertId: these would be discarded
            self._lost.record(
                DropReason.DUPLICATE_INSERT_ID,
                duplicates,
                warning=LossWarning(
                    "spool-duplicate",
                    "otel_greenflash: %d event(s) carry the insertId of an event already in the "
                    "spool; the API keeps one event per insertId, so they are dropped; see "
                    "stats()['dropped']['duplicate_insert_id']",
                    (duplicates,),
                ),
            )
        if lost:
            self._lost.record(
                DropReason.SPOOL_FULL,
                lost,
                warning=LossWarning(
                    "spool-full",
                    "otel_greenflash spool is full (spool_max_events=%d): %d unsent event(s) "
                    "evicted",
                    (spool.max_events, lost),
                    occurrences=1,
                ),
            )
        return True

    def _count_requests_lost(self, spool: Spool) -> None:
        """Messages requests the spool holds already (the same request: not sent twice), and
        messages and ratings requests its bound evicted, counted under their endpoint."""
        for counter, reason in (
            (spool.duplicate_requests, "duplicate_request"),
            (spool.evicted_requests, DropReason.SPOOL_FULL.value),
        ):
            for endpoint, count in counter.items():
                self._stats.add_dropped_for(endpoint, reason, count)
                if reason != "duplicate_request":
                    self._log.warning(
                        f"spool-full-{endpoint}",
                        "otel_greenflash spool is full (spool_max_events=%d): %d unsent %s "
                        "request(s) evicted",
                        spool.max_events,
                        count,
                        endpoint.value,
                    )
            counter.clear()

    def _count_adopted_unconfirmed(self, spool: Spool) -> None:
        """Ratings an earlier process had marked as sending when it ended (adopted files):
        they may have been stored, so they are counted unconfirmed and never sent."""
        found = spool.take_adopted_unconfirmed()
        if found:
            self._stats.add_for(Endpoint.RATINGS, "unconfirmed", found)
            self._log.warning(
                "spool-rating-unconfirmed",
                "otel_greenflash spool: %d rating(s) left by an earlier process were being "
                "sent when it ended; they may or may not have been stored, so they are not sent "
                "again; see stats()['ratings']['unconfirmed']",
                found,
                count=found,
            )

    def hold(self, events: Sequence[BusinessEvent]) -> None:
        """Spool events that wait for their conversation id, as known so far (so a crash
        while they wait does not lose them); :meth:`put` later replaces them."""
        spool = self.spool
        if spool is None or not events:
            if events and self.disk.full is not None:
                self.disk.missed(events)  # not durable while they wait
            return
        if self.disk.holds_writes_back(time.monotonic()):
            self.disk.missed(events)  # they wait in memory; put() writes them later
            return
        try:
            with self._lock:
                if not _storable(spool.hold, events):
                    for event in events:  # one bad row must not cost the others their safety
                        _storable(spool.hold, [event])
        except Exception as error:
            if disk_full(error):
                self.disk.filled(error)
                self.disk.missed(events)
                return
            self._switch_off(error)

    # -- what a full disk kept out of the spool ------------------------------------------------

    def release_backlog(self, engine: DeliveryEngine) -> None:
        """Send the backlog (final bodies of waiting events the full disk kept out) from
        memory: a flush or shutdown wants them out now. Their waiting rows are removed once
        they are sent and SQLite can write. Worker thread, or once the worker stopped."""
        with self._lock:
            self._release_wanted = False
            backlog, self._backlog = self._backlog, []
            if not backlog:
                return
            ids = [event.key for event in backlog]
            self._released.update(ids)
            self._in_engine.update(ids)
        engine.submit(backlog)

    def _keep_out(
        self, spool: Spool | None, events: Sequence[DeliveryItem], engine: DeliveryEngine
    ) -> None:
        """The disk is full: events spooled as waiting wait for the next write; the others go
        to the loop from memory (counted, warned about), or are not taken (gateway)."""
        if not events:
            return
        self.disk.missed(events)
        if spool is not None:
            waiting = [event for event in events if spool.holds_waiting(event.key)]
            if waiting:
                self._backlog.extend(waiting)
                events = [event for event in events if not spool.holds_waiting(event.key)]
        if not self.disk.memory_fallback or not events:
            return
        self.disk.unspooled += len(events)
        self._not_spooled.update(event.key for event in events)
        self._log.warning(
            "spool-disk-full",
            "otel_greenflash spool's filesystem is full: %d event(s) sent from memory (not "
            "kept across a crash); see stats()['spool']['unspooled']",
            len(events),
            count=len(events),
        )
        engine.submit(events)

    def _quietly(self, spool: Spool, engine: DeliveryEngine) -> None:
        """While the disk is full: apply notes if SQLite can, and hand spooled events on."""
        try:
            with self._lock:
                try:
                    self._apply_notes(spool)
                except Exception as error:
                    if not disk_full(error):
                        raise
                self._feed(spool, engine)
        except Exception as error:
            if not disk_full(error):
                self._switch_off(error)

    def _switch_off(self, error: BaseException) -> None:
        self.spool = None
        self.broken = str(error)
        logger.error(
            "otel_greenflash spool failed (%s): spool disabled, events are kept in memory only",
            error,
        )

    def _add(self, spool: Spool, events: Sequence[DeliveryItem]) -> tuple[int, list[DeliveryItem]]:
        """Spool ``events``; return how many unsent ones the bound evicted, and the events
        SQLite refused as data (sent from memory instead, never a reason to stop spooling)."""
        lost = 0

        def add(batch: Sequence[DeliveryItem]) -> None:
            nonlocal lost
            lost += spool.add(batch, handed_over_up_to=self._cursor)

        if _storable(add, events):
            return lost, []
        unstorable = [event for event in events if not _storable(add, [event])]
        self._not_spooled.update(event.key for event in unstorable)
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
            if self._backlog:  # final bodies the full disk kept out: sent from memory now
                self._release_wanted = True
                self._wake()
                return False
            try:
                self._apply_notes(spool)
            except Exception as error:
                if not disk_full(error):
                    raise
                # Sent and refused events count as settled; their rows go once space is back.
                settled = self._removing | self._setting_aside
                return not self._released and all(
                    i in settled for i in spool.pending_ids_through(seq)
                )
            return not self._released and spool.first_pending_seq() > seq

    def counts(self) -> dict[str, int] | None:
        """The spool's counts of events (``stats()["spool"]``: messages and ratings requests
        are counted under their own keys); ``disk_full`` (1 while full) and ``unspooled``
        (events sent from memory because of it) too, once the disk has been full."""
        spool = self.spool
        if spool is None:
            return None
        pending, rejected = spool.counts_of(Endpoint.EVENTS)
        counts = {"pending": pending, "rejected": rejected, "evicted": spool.evicted}
        disk = self.disk
        if disk.full is not None or disk.unspooled or disk.writes_missed:
            counts.update(disk_full=int(disk.full is not None), unspooled=disk.unspooled)
        return counts

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
        """Remove the rows of sent events, set aside refused ones. What SQLite cannot write
        now (a full disk) stays noted for the next time."""
        notes = self._notes
        removing, setting_aside = self._removing, self._setting_aside
        while notes:
            insert_id, outcome, endpoint = notes.popleft()
            self._in_engine.discard(insert_id)
            if endpoint is Endpoint.RATINGS and outcome in _NOT_STORED:
                self._unmarking.add(insert_id)  # may be sent again, here or by an adopter
            if insert_id in self._released:  # its row is the waiting one
                self._released.discard(insert_id)
                if outcome in _DONE:
                    removing.add(insert_id)
                elif outcome == "rejected":
                    setting_aside.add(insert_id)
                # failed: the waiting row stays, for an adopter once this process is gone
            elif insert_id in self._not_spooled:
                self._not_spooled.discard(insert_id)
            elif outcome in _DONE:
                removing.add(insert_id)
            elif outcome == "rejected":
                setting_aside.add(insert_id)
            elif outcome == "failed":
                self._retry_spooled = True
        if removing:
            spool.remove(removing)
            removing.clear()
        if setting_aside:
            spool.set_aside(setting_aside)
            setting_aside.clear()
        if self._unmarking:
            spool.mark_sending(self._unmarking, sending=False)
            self._unmarking.clear()

    def _feed(self, spool: Spool, engine: DeliveryEngine) -> None:
        room = self._config.max_pending - engine.pending
        now = time.monotonic()
        if self._retry_spooled and now - self._last_rescan >= self._config.export_timeout_seconds:
            self._retry_spooled = False  # events whose retry window ended: go round once more
            self._last_rescan = now
            self._cursor = 0
        while room > 0:
            rows = spool.pending_after(self._cursor, min(room, 512))
            if not rows:
                return
            batch = [
                (seq, event)
                for seq, event in rows
                if event.key not in self._in_engine
                and event.key not in self._removing  # settled, row not removed yet
                and event.key not in self._setting_aside
                and event.key not in self._unmarking  # its mark goes first
            ]
            self._cursor = rows[-1][0]
            room -= self._hand_over(engine, [self._with_order(event) for _, event in batch])

    def _with_order(self, item: DeliveryItem) -> DeliveryItem:
        """A rating read back from the spool, with the messages request it follows (kept in
        memory by the process that wrote it; the row does not hold it)."""
        after = self._after.pop(item.key, None) if self._after else None
        if after is None or not isinstance(item, ApiRequest):
            return item
        return replace(item, after=after)

    def _remember_order(self, items: Sequence[DeliveryItem]) -> None:
        for item in items:
            if isinstance(item, ApiRequest) and item.after is not None:
                if len(self._after) >= self._config.max_queue_size:
                    self._after.clear()  # rows evicted unsent: only their order is forgotten
                self._after[item.key] = item.after

    def _hand_over(self, engine: DeliveryEngine, batch: list[DeliveryItem]) -> int:
        self._in_engine.update(event.key for event in batch)
        engine.submit(batch)
        return len(batch)


_NOT_STORED = frozenset(("failed", "dropped"))
"""Outcomes of a rating that surely was not stored: no answer left it unsure (that settles it
unconfirmed), so its ``sending`` mark is cleared."""

_DONE = frozenset(("sent", "unconfirmed"))
"""Outcomes whose rows go: delivered, or a rating that may have been stored (never resent)."""

_DATA_ERRORS = (sqlite3.DataError, sqlite3.InterfaceError, ValueError, OverflowError)
"""What SQLite raises for one value it cannot store (too big, not encodable), unlike errors of
the file or the disk, which switch the spool off."""


_Item = TypeVar("_Item", BusinessEvent, DeliveryItem)


def _storable(write: Callable[[Sequence[_Item]], None], batch: Sequence[_Item]) -> bool:
    try:
        write(batch)
    except _DATA_ERRORS:
        return False
    return True
