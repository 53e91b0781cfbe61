"""A full filesystem under the spool: a passing state, not a failure.

:class:`FullDisk` is that state for one spool: whether the filesystem is full and when the
write is tried again (after 1 s, doubling up to 10 s), what is said when it fills up and when
space comes back, and which writes it made miss (so the gateway can tell a sender its batch
may not be durable). :class:`~.spool_feed.SpoolFeed` asks it and reports to it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence

from .._event import DeliveryItem
from .._logging import RateLimitedLog, logger

FULL_RETRY_FIRST_SECONDS = 1.0
FULL_RETRY_MAX_SECONDS = 10.0
"""While the filesystem is full, the write is tried again after 1 s, doubling up to 10 s."""
FULL_AGAIN_SECONDS = 60.0
"""Full again this soon after space came back: the retry delay goes on from where it was."""
MISSES_KEPT = 1024
"""Writes missed on a full disk whose insertIds are kept (see :meth:`FullDisk.missed_any`)."""


class DiskFull:
    """The spool's filesystem was full at the last write: when to try again."""

    __slots__ = ("delay", "error", "retry_at", "since")

    def __init__(self, error: BaseException, now: float, delay: float | None = None) -> None:
        self.since = now
        self.error = str(error)
        self.delay = FULL_RETRY_FIRST_SECONDS if delay is None else delay
        self.retry_at = now + self.delay

    def failed_again(self, error: BaseException, now: float) -> None:
        self.error = str(error)
        self.delay = min(self.delay * 2, FULL_RETRY_MAX_SECONDS)
        self.retry_at = now + self.delay

    def due(self, now: float) -> bool:
        return now >= self.retry_at


class FullDisk:
    """Whether the spool's filesystem is full, and what that cost; worker thread (except
    :meth:`missed_any`)."""

    def __init__(self, spool_dir: str | None, log: RateLimitedLog) -> None:
        self._spool_dir = spool_dir
        self._log = log
        self.full: DiskFull | None = None
        """Set while the spool's filesystem is full."""
        self.memory_fallback = True
        """While the disk is full, new events go to the loop from memory (False: they are not
        taken, the gateway refuses their batch)."""
        self.writes_missed = 0
        """Times events could not be written because the disk was full (only grows)."""
        self._misses: collections.deque[tuple[int, frozenset[str]]] = collections.deque(
            maxlen=MISSES_KEPT
        )
        """The latest misses: (its number in ``writes_missed``, the insertIds not written)."""
        self._recovered: tuple[float, float] | None = None
        """When space last came back, and the retry delay reached before it."""
        self.unspooled = 0
        """Events sent from memory because the disk was full."""

    def holds_writes_back(self, now: float) -> bool:
        """True while the disk is full and the next write is not due yet."""
        full = self.full
        return full is not None and not full.due(now)

    def retry_in(self) -> float:
        """Seconds until the next write is tried while the disk is full (0 otherwise)."""
        full = self.full
        return max(0.0, full.retry_at - time.monotonic()) if full is not None else 0.0

    def filled(self, error: BaseException) -> None:
        """A write failed because the filesystem is full."""
        now = time.monotonic()
        if self.full is not None:
            self.full.failed_again(error, now)
            return
        recovered = self._recovered
        if recovered is not None and now - recovered[0] < FULL_AGAIN_SECONDS:
            # Space came back only briefly: the delay goes on growing, said once a minute.
            delay = min(recovered[1] * 2, FULL_RETRY_MAX_SECONDS)
            self.full = DiskFull(error, now, delay)
            self._log.warning(
                "spool-full-again",
                "otel_greenflash spool: the filesystem of %s is full again (%s)",
                self._spool_dir,
                error,
            )
            return
        self.full = DiskFull(error, now)
        what = "sent from memory" if self.memory_fallback else "refused"
        logger.error(
            "otel_greenflash spool: the filesystem of %s is full (%s): new events are %s "
            "until space is freed; the write is tried again every %g-%g s",
            self._spool_dir,
            error,
            what,
            FULL_RETRY_FIRST_SECONDS,
            FULL_RETRY_MAX_SECONDS,
        )

    def space_back(self) -> None:
        """A write succeeded while the disk was full."""
        full, self.full = self.full, None
        if full is not None:
            now = time.monotonic()
            again = self._recovered is not None and now - self._recovered[0] < FULL_AGAIN_SECONDS
            self._recovered = (now, full.delay)
            if again:
                return  # said when it filled up again
            logger.warning(
                "otel_greenflash spool: space is back after %.1f s, events are spooled again "
                "(%d sent from memory meanwhile)",
                now - full.since,
                self.unspooled,
            )

    def missed(self, events: Sequence[DeliveryItem]) -> None:
        """``events`` could not be written because the disk is full."""
        self.writes_missed += 1
        self._misses.append((self.writes_missed, frozenset(e.key for e in events)))

    def missed_any(self, since: int, insert_ids: frozenset[str]) -> bool:
        """True when a write missed since ``writes_missed`` was ``since`` concerned one of
        ``insert_ids`` (or when misses that old are no longer kept). Any thread."""
        if self.writes_missed == since:
            return False
        misses = list(self._misses)  # one copy: the worker appends meanwhile
        if not misses or misses[0][0] > since + 1:
            return True  # some misses since then are forgotten: assume the worst
        return any(number > since and not ids.isdisjoint(insert_ids) for number, ids in misses)
