"""The library's logger and a rate limit for warnings that could repeat per event."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("otel_greenflash")

INTERVAL_SECONDS = 20.0
"""At most one line per kind of warning per interval (read when a RateLimitedLog is made)."""

_MORE = " (%d more like this in the last %.1f s)"


class RateLimitedLog:
    """Logs the first occurrence of each key, then at most one line per interval.

    What an interval held back is reported in one line, the latest message with
    "(N more like this in the last X s)" (N counts from the previous line of that key, the
    one shown included): by the next warning of the key, by :meth:`flush_due` once the
    interval ended (the processor's worker calls it every cycle), or by :meth:`flush` (at
    shutdown). Thread-safe.
    """

    def __init__(
        self, interval_seconds: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = INTERVAL_SECONDS if interval_seconds is None else interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, tuple[int, str, tuple[object, ...]]] = {}
        """Per key: how many were held back, and the latest one's message and arguments."""
        self._next_due = math.inf

    def warning(self, key: str, message: str, *args: object, count: int = 1) -> None:
        """Log ``message % args`` unless ``key`` was logged within the interval; ``count``
        says how many occurrences this one stands for."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                held = self._held.get(key)
                self._held[key] = (count + (held[0] if held else 0), message, args)
                self._next_due = min(self._next_due, last + self._interval)
                return
            self._last[key] = now
            held = self._held.pop(key, None)
        if held is not None and last is not None:  # this one closes the report of those held
            message += _MORE
            args = (*args, held[0] + count, now - last)
        logger.warning(message, *args)

    def flush_due(self) -> None:
        """Report the counts held back for keys whose interval has ended (cheap when none)."""
        now = self._clock()
        if now < self._next_due:
            return
        self._report(now, everything=False)

    def flush(self) -> None:
        """Report every count held back, interval over or not (at shutdown)."""
        self._report(self._clock(), everything=True)

    def _report(self, now: float, *, everything: bool) -> None:
        lines: list[tuple[str, tuple[object, ...]]] = []
        with self._lock:
            next_due = math.inf
            for key, last in list(self._last.items()):
                ends = last + self._interval
                held = self._held.get(key)
                if now < ends and not (everything and held):
                    if held:
                        next_due = min(next_due, ends)
                    continue
                if held is None:  # quiet for a whole interval: forget the key
                    del self._last[key]
                    continue
                del self._held[key]
                count, message, args = held
                lines.append((message + _MORE, (*args, count, now - last)))
                self._last[key] = now  # the next ones wait for the next interval
            self._next_due = next_due
        for message, args in lines:
            logger.warning(message, *args)
