"""How many requests may be in flight, and when the endpoint may be used again. Pure state,
no I/O: the delivery loop asks and reports, the tests drive it directly."""

from __future__ import annotations


class Throttle:
    """Additive increase, multiplicative decrease of the in-flight limit, plus endpoint pauses.

    A throttling answer (429/503) halves the limit once per round: answers to requests started
    before the last halving do not halve it again. Each success adds one, up to ``maximum``.
    A ``Retry-After`` on a throttling answer pauses every request until it has passed.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._limit = float(maximum)
        self.round = 0
        """Incremented at each halving; requests remember the round they started in."""
        self.paused_until = 0.0

    @property
    def limit(self) -> int:
        return int(self._limit)

    def has_room(self, in_flight: int) -> bool:
        return in_flight < self._limit

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def succeeded(self) -> None:
        if self._limit < self.maximum:
            self._limit = min(float(self.maximum), self._limit + 1.0)

    def throttled(self, started_in_round: int, pause_until: float | None) -> None:
        """A 429/503 to a request started in ``started_in_round``; ``pause_until`` when the
        answer carried a ``Retry-After``."""
        if started_in_round == self.round:
            self._limit = max(1.0, self._limit / 2)
            self.round += 1
        if pause_until is not None:
            self.paused_until = max(self.paused_until, pause_until)
