"""How many requests may be in flight, and when each endpoint may be used again. Pure state,
no I/O: the delivery loop asks and reports, the tests drive it directly."""

from __future__ import annotations

from .._event import Endpoint


class Throttle:
    """Additive increase, multiplicative decrease of the in-flight limit, plus endpoint pauses.

    A throttling answer (429/503) halves the limit once per round: answers to requests started
    before the last halving do not halve it again. Each success adds one, up to ``maximum``.
    A ``Retry-After`` on a throttling answer pauses the requests to that answer's endpoint
    until it has passed (the other endpoints go on); the limit is shared.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._limit = float(maximum)
        self.round = 0
        """Incremented at each halving; requests remember the round they started in."""
        self._paused_until: dict[Endpoint, float] = {}

    @property
    def limit(self) -> int:
        return int(self._limit)

    def has_room(self, in_flight: int) -> bool:
        return in_flight < self._limit

    def paused(self, now: float, endpoint: Endpoint = Endpoint.EVENTS) -> bool:
        return now < self.paused_until(endpoint)

    def paused_until(self, endpoint: Endpoint) -> float:
        """When the pause of ``endpoint`` ends (0 when it never paused)."""
        return self._paused_until.get(endpoint, 0.0)

    def succeeded(self) -> None:
        if self._limit < self.maximum:
            self._limit = min(float(self.maximum), self._limit + 1.0)

    def throttled(
        self,
        started_in_round: int,
        pause_until: float | None,
        endpoint: Endpoint = Endpoint.EVENTS,
    ) -> None:
        """A 429/503 from ``endpoint`` to a request started in ``started_in_round``;
        ``pause_until`` when the answer carried a ``Retry-After``."""
        if started_in_round == self.round:
            self._limit = max(1.0, self._limit / 2)
            self.round += 1
        if pause_until is not None:
            self._paused_until[endpoint] = max(self.paused_until(endpoint), pause_until)
