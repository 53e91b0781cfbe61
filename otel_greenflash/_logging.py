"""The library's logger and a rate limit for warnings that could repeat per event."""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("otel_greenflash")


class RateLimitedLog:
    """Logs the first occurrence of each key, then at most once per ``interval`` with a count."""

    def __init__(self, interval_seconds: float = 20.0) -> None:
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object, count: int = 1) -> None:
        """Log ``message % args`` unless ``key`` was logged within the interval."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + count
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d more like this since the last report)"
            args = (*args, suppressed)
        logger.warning(message, *args)
