"""Retry policy: which answers are retried and how long to wait. Pure functions, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 429})
"""Besides every 5xx."""

THROTTLING_STATUSES = frozenset({429, 503})
"""Answers that mean "send less": with ``Retry-After`` they pause the whole endpoint."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, server hints honoured up to ``max_server_delay``."""

    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.25
    """Each backoff is reduced by a random fraction up to this (spreads retries out)."""
    max_server_delay: float = 120.0
    """``Retry-After``/``retry-after-ms`` longer than this are capped to it."""

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (1 = first retry), without server hints."""
        base = min(self.max_backoff, self.initial_backoff * (1 << max(0, attempt - 1)))
        return base * (1.0 - self.jitter * rand())

    def delay(
        self,
        attempt: int,
        headers: Mapping[str, str] | None,
        now: float,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Delay before retry ``attempt``: the server's hint when it gives one, else backoff.

        ``now`` is the wall-clock time (seconds since the epoch) for HTTP-date hints.
        """
        return self.after(attempt, server_retry_delay(headers, now) if headers else None, rand)

    def after(
        self, attempt: int, hint: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        """Delay before retry ``attempt`` given the server's hint in seconds (if any)."""
        if hint is not None and hint > 0:  # 0 or a past date would mean a hot retry loop
            return min(hint, self.max_server_delay)
        return self.backoff(attempt, rand)


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def server_retry_delay(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, then ``Retry-After`` as
    seconds or an HTTP date), or None when absent or unparsable. Header names: lower case."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and value == value:  # not NaN
            return value
    retry_after = headers.get("retry-after")
    if retry_after is None:
        return None
    text = retry_after.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        if moment.tzinfo is None:  # "-0000": UTC by RFC 5322
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0.0, moment.timestamp() - now)
    if seconds != seconds or seconds < 0:
        return None
    return seconds
