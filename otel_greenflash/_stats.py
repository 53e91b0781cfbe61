"""Thread-safe delivery counters, read through a snapshot."""

from __future__ import annotations

import threading
from collections import Counter
from typing import TypedDict


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

    def add_dropped(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    def add_unlinked(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._unlinked[reason] += count

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
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
