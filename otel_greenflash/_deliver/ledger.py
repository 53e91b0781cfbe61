"""Events taken by the delivery loop and not yet settled, shared across threads.

The worker admits events (waiting while ``capacity`` are unsettled), flushes wait for everything
admitted before them, shutdown abandons what is left, and the loop settles each event. Exactly
one thread wins the claim on an event; ``flush`` sees it settled only once its claimer has
counted it and called back (``release``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar


class Entry(Protocol):
    seq: int
    settled: bool


E = TypeVar("E", bound=Entry)
T = TypeVar("T")


class Ledger(Generic[E]):
    """Unsettled entries by sequence number, oldest first; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._changed = threading.Condition(threading.Lock())
        self._unsettled: dict[int, E] = {}
        self._next_seq = 0
        self._closed = False
        self._waiters = 0

    def __len__(self) -> int:
        return len(self._unsettled)

    def admit(self, items: Sequence[T], make: Callable[[T, int], E]) -> list[E]:
        """Register entries made from the first items that fit (``make(item, seq)``, numbered
        in order), waiting while the ledger is full; an empty list once it is closed."""
        with self._changed:
            while len(self._unsettled) >= self._capacity and not self._closed:
                self._wait(None)
            if self._closed:
                return []
            room = self._capacity - len(self._unsettled)
            admitted = []
            for item in items[:room]:
                entry = make(item, self._next_seq)
                self._next_seq += 1
                self._unsettled[entry.seq] = entry
                admitted.append(entry)
            return admitted

    def wait_settled(self, timeout_seconds: float) -> bool:
        """Wait until every entry admitted before the call is settled; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            watermark = self._next_seq
            while self._unsettled and next(iter(self._unsettled)) < watermark:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wait(remaining)
        return True

    def close(self) -> None:
        """Admit nothing more; wake whoever waits for room."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def abandon(self) -> list[E]:
        """Settle and return every entry nobody is settling right now (shutdown drops them)."""
        with self._changed:
            left = [entry for entry in self._unsettled.values() if not entry.settled]
            for entry in left:
                entry.settled = True
                del self._unsettled[entry.seq]
            self._changed.notify_all()
        return left

    def claim(self, entry: E) -> bool:
        """Take the right to settle an entry; False when another thread already did."""
        with self._changed:
            if entry.settled:
                return False
            entry.settled = True
            return True

    def release(self, entry: E) -> None:
        """The claimer has counted the entry and called back: it is settled for ``flush``."""
        with self._changed:
            self._unsettled.pop(entry.seq, None)
            if self._waiters:
                self._changed.notify_all()

    def _wait(self, timeout: float | None) -> None:
        self._waiters += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiters -= 1
