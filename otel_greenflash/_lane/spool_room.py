"""Room in the spool for batches acknowledged only once written (the gateway's intake).

An intake that answers for a batch reserves room for its business events before handing it
to the pipeline, and confirms once the worker has taken it in that every event was written.
Reservations are counted together under one lock, so batches arriving together never overfill
the spool (which would evict events already acknowledged). While the disk is full such a spool
takes nothing from memory: the batch is refused, and its sender keeps it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection
from dataclasses import dataclass

from .spool import Spool
from .spool_feed import SpoolFeed
from .spool_full_disk import DiskFull

RETRY_AFTER_SECONDS = 5.0
"""The retry delay suggested when the spool cannot take a batch now."""


class NoRoom(Exception):  # noqa: N818 - a refusal, not a failure
    """The spool cannot take the batch now; retry after ``retry_after_seconds``."""

    def __init__(self, reason: str, retry_after_seconds: float = RETRY_AFTER_SECONDS) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room held for one batch until it is confirmed or given back."""

    events: int
    covers: tuple[int, ...]
    """The refused batches (by number) whose events this batch's wait for the worker covers:
    all were handed over before it."""
    misses_before: int
    """The feed's ``writes_missed`` when the room was reserved."""


class SpoolRoom:
    """Reserves room in a feed's spool for batches not written yet; thread-safe."""

    def __init__(self, feed: SpoolFeed) -> None:
        self.feed = feed
        feed.disk.memory_fallback = False  # a full disk refuses batches: senders keep them
        self._lock = threading.Lock()
        """Guards the spool's count and the reservations below."""
        self._counted: tuple[Spool, int, int] | None = None
        """The latest count of a spool: (spool, events not yet delivered, its newest row's
        number when counting began)."""
        self._reserved = 0
        """Events of batches that may not be in the spool yet (their room)."""
        self._unsettled: dict[int, int] = {}
        """Reservations of batches refused after they were handed to the pipeline: their
        events may still be written, so their room is kept until a later batch's wait for the
        worker covered them. By batch number."""
        self._numbers = itertools.count()

    def usable(self) -> tuple[bool, str]:
        """Whether the spool can take a batch at all (cheap: checked for every request)."""
        feed = self.feed
        if feed.disk.full is not None:
            return False, _full_reason(feed.disk.full)
        if feed.spool is None:
            return False, "the spool is not usable (see the gateway's log)"
        return True, "ready"

    def retry_after(self) -> float:
        """The retry delay to suggest: until the next write is tried while the disk is full."""
        feed = self.feed
        if feed.disk.full is None:
            return RETRY_AFTER_SECONDS
        return max(1.0, feed.disk.retry_in())

    def reserve(self, events: int) -> Reservation:
        """Hold room for ``events``, or raise :class:`NoRoom`: the spool's events not yet
        delivered, plus those reserved by batches not written yet, plus these, must fit its
        bound.

        Counting scans the whole spool (the longer an outage, the longer each request), so it
        is done only when an upper bound does not settle it. The bound: events not yet
        delivered now are at most those counted last time plus the rows written since, and
        rows written since have numbers above the newest row's number read before that count
        (numbers only grow, and a row's status never goes back to pending). Delivered rows only
        make the bound loose until the next count; rows of a batch being written are in both
        the count (or the rows since) and the reservations until it is done: loose, never
        short."""
        misses_before = self.feed.disk.writes_missed
        spool = self.feed.spool
        with self._lock:
            covers = tuple(self._unsettled)
            if spool is None or not events:
                return Reservation(0, covers, misses_before)
            counted = self._counted
            if counted is not None and counted[0] is spool:
                _, pending, newest = counted
                written_since = max(0, spool.last_seq() - newest)
                if pending + written_since + self._reserved + events <= spool.max_events:
                    self._reserved += events
                    return Reservation(events, covers, misses_before)
            newest = spool.last_seq()
            pending, _ = spool.counts()
            self._counted = (spool, pending, newest)
            if pending + self._reserved + events > spool.max_events:
                waiting = pending + self._reserved
                raise NoRoom(f"the spool is full ({waiting} of {spool.max_events} events waiting)")
            self._reserved += events
        return Reservation(events, covers, misses_before)

    def confirm(self, reservation: Reservation, insert_ids: Collection[str]) -> None:
        """The worker has taken the batch in: raise :class:`NoRoom` unless every one of its
        events (``insert_ids``, the valid ones) was written; else give back its room, and that
        of the refused batches its wait covered."""
        feed = self.feed
        if feed.spool is None:
            raise NoRoom("the spool stopped working (see the gateway's log)")
        if feed.disk.missed_any(reservation.misses_before, frozenset(insert_ids)):
            raise NoRoom(_full_reason(feed.disk.full), self.retry_after())
        with self._lock:
            for number in reservation.covers:
                self._reserved -= self._unsettled.pop(number, 0)
            self._reserved -= reservation.events

    def give_back(self, reservation: Reservation, *, handed_over: bool) -> None:
        """The batch was refused. Once (part of) it was ``handed_over``, its events may still
        reach the spool: it keeps its room until a later batch's wait covers it."""
        with self._lock:
            if handed_over and reservation.events:
                self._unsettled[next(self._numbers)] = reservation.events
            else:
                self._reserved -= reservation.events

    def liveness(self) -> tuple[bool, str]:
        """Alive unless only a restart can help: the spool failed for a reason other than a
        full disk (I/O error, damaged or read-only file), or its file was removed (what is
        written to it would be lost with the process). A full disk is not one: a restart
        would not free space."""
        feed = self.feed
        # /healthz answers without a token: no error text or path (the log has them).
        if feed.broken is not None:
            return False, "the spool failed (the gateway's log says why)"
        spool = feed.spool
        if spool is not None and not spool.file_present():
            return False, "the spool file was removed"
        return True, "ok"

    def has_room(self) -> tuple[bool, str]:
        """Room for at least one more event (counted only when the bound leaves it in doubt)."""
        spool = self.feed.spool
        if spool is None:
            return False, "the spool is not usable (see the gateway's log)"
        if self._waiting_upper_bound(spool) < spool.max_events:
            return True, "ready"
        pending, _ = spool.counts()
        waiting = pending + self._reserved
        if waiting >= spool.max_events:
            return False, f"the spool is full ({waiting} of {spool.max_events} events waiting)"
        return True, "ready"

    def _waiting_upper_bound(self, spool: Spool) -> int:
        """At least the events waiting in the spool or reserved (see :meth:`reserve`)."""
        counted = self._counted
        if counted is None or counted[0] is not spool:
            return spool.max_events  # not counted yet: unknown
        _, pending, newest = counted
        return pending + max(0, spool.last_seq() - newest) + self._reserved

    @property
    def capacity(self) -> int:
        """The spool's bound (0 while it is not open)."""
        spool = self.feed.spool
        return spool.max_events if spool is not None else 0


def _full_reason(full: DiskFull | None) -> str:
    if full is None:
        return "the spool's filesystem was full while the batch was written"
    return f"the spool's filesystem is full ({full.error}); the write is retried"
