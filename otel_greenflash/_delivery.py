"""Concurrent delivery with retries: a fixed set of sender threads over one keep-alive client.

Every event is encoded once, so each attempt carries the same body and ``insertId``. Retryable
answers (network errors, timeouts, 408, 429, 5xx) are scheduled again after a backoff (or the
server's ``Retry-After``) as long as the event's deadline allows; the sender thread is free to
send other events meanwhile.

Each event is *settled* exactly once, under the lock: sent, failed, or dropped at shutdown.
Only the thread that settles it touches the counters and callbacks, so no event is counted
twice however shutdown and the senders interleave. ``submit`` blocks its caller (the
processor's worker, never the application) while too many events are unsettled.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._event import BusinessEvent
from ._exceptions import (
    AuthenticationError,
    DeliveryError,
    EventRejectedError,
    PermissionDeniedError,
    RetriesExhaustedError,
)
from ._logging import RateLimitedLog, logger
from ._retry import RetryPolicy, is_retryable_status
from ._stats import DeliveryStats
from ._transport import SendOutcome, Transport, encode_body

ErrorCallback = Callable[[Exception, Sequence[BusinessEvent]], None]
DropCallback = Callable[[Sequence[BusinessEvent], str], None]
SettledCallback = Callable[[BusinessEvent, str], bool]
"""Called once per event with ``"sent"``, ``"rejected"`` (the API refused it for good),
``"failed"`` (undelivered: retries ran out, or the key was refused) or ``"dropped"``
(shutdown). Returning True for ``"failed"`` means the caller keeps the event to try again
later (the durable spool), so it is not counted as failed."""

AUTH_PAUSE_SECONDS = 300.0
"""After a 401/403, events fail without a request for this long, then one request probes."""


@dataclass(eq=False, slots=True)
class _Attempt:
    event: BusinessEvent
    body: bytes
    deadline: float
    tries: int = 0
    settled: bool = False


class DeliveryEngine:
    """Sends events with ``concurrency`` threads; settles each as sent, failed or dropped."""

    def __init__(
        self,
        transport: Transport,
        stats: DeliveryStats,
        *,
        concurrency: int = 16,
        max_pending: int = 2048,
        deadline_seconds: float = 30.0,
        policy: RetryPolicy | None = None,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        on_settled: SettledCallback | None = None,
    ) -> None:
        self._on_settled = on_settled
        self._transport = transport
        self._stats = stats
        self._max_pending = max_pending
        self._deadline_seconds = deadline_seconds
        self._policy = policy if policy is not None else RetryPolicy()
        self._on_error = on_error
        self._on_drop = on_drop
        self._log = RateLimitedLog()
        lock = threading.Lock()
        self._work = threading.Condition(lock)
        """Senders wait here for something to send."""
        self._changed = threading.Condition(lock)
        """Flush and backpressure wait here for events to settle."""
        self._ready: collections.deque[_Attempt] = collections.deque()
        self._delayed: list[tuple[float, int, _Attempt]] = []
        self._in_flight: set[_Attempt] = set()
        self._sequence = itertools.count()
        self._pending = 0
        self._closing = False
        self._abandoned = False
        self._auth_error: DeliveryError | None = None
        self._auth_paused_until = 0.0
        self._auth_probing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"otel-greenflash-sender-{n}", daemon=True)
            for n in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    # -- called by the processor's worker ----------------------------------------------------

    def submit(self, events: Sequence[BusinessEvent]) -> None:
        """Queue events for delivery; blocks while too many are unsettled (backpressure)."""
        deadline = time.monotonic() + self._deadline_seconds
        refused: list[BusinessEvent] = []
        for event in events:
            try:
                body = encode_body(event)
            except (ValueError, TypeError, RecursionError):
                self._fail(None, [event], EventRejectedError("the event cannot be encoded as JSON"))
                continue
            with self._changed:
                while self._pending >= self._max_pending and not self._closing:
                    self._changed.wait()
                if self._closing:
                    refused.append(event)
                    continue
                self._pending += 1
                self._ready.append(_Attempt(event, body, deadline))
                self._work.notify()
        if refused:
            self._drop(refused, "shutdown")

    def flush(self, timeout_seconds: float) -> bool:
        """Wait until every submitted event is settled; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def shutdown(self, timeout_seconds: float) -> int:
        """Deliver what fits in the timeout, then drop the rest; return how many were dropped.

        Requests still in flight are dropped too: an answer arriving later is ignored.
        """
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self.flush(timeout_seconds)
        with self._changed:
            self._abandoned = True
            unsettled = [*self._ready, *(entry[2] for entry in self._delayed), *self._in_flight]
            for attempt in unsettled:
                attempt.settled = True
            self._ready.clear()
            self._delayed.clear()
            self._in_flight.clear()
            self._pending = 0
            self._work.notify_all()
            self._changed.notify_all()
        if unsettled:
            self._drop([attempt.event for attempt in unsettled], "shutdown")
        self._transport.close()  # cuts requests still hanging on the network
        return len(unsettled)

    # -- sender threads ----------------------------------------------------------------------

    def _next_attempt(self) -> _Attempt | None:
        with self._work:
            while True:
                if self._abandoned:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._ready.append(heapq.heappop(self._delayed)[2])
                if self._ready:
                    attempt = self._ready.popleft()
                    self._in_flight.add(attempt)
                    return attempt
                self._work.wait(self._delayed[0][0] - now if self._delayed else None)

    def _run(self) -> None:
        while True:
            attempt = self._next_attempt()
            if attempt is None:
                return
            try:
                self._deliver(attempt)
            except Exception:  # a bug here must not kill the sender
                logger.exception("otel_greenflash sender failed")
                self._fail(attempt, [attempt.event], DeliveryError("internal error"))

    def _deliver(self, attempt: _Attempt) -> None:
        now = time.monotonic()
        if self._auth_error is not None and not self._may_probe_auth(now):
            self._fail(attempt, [attempt.event], self._auth_error)
            return
        remaining = attempt.deadline - now
        if remaining <= 0:
            self._give_up(attempt, None)
            return
        attempt.tries += 1
        outcome = self._transport.send(attempt.body, timeout_seconds=remaining)
        status = outcome.status
        if self._auth_probing and status is not None and status not in (401, 403):
            self._auth_recovered()
        if outcome.ok:
            if self._settle(attempt):
                self._stats.add_sent()
                if self._on_settled is not None:
                    self._on_settled(attempt.event, "sent")
            return
        if status in (401, 403):
            self._pause_for_auth(status, attempt)
            return
        if status is not None and not is_retryable_status(status):
            self._log.warning(
                f"rejected-{status}",
                "Greenflash rejected a business event from span %r with HTTP %s; not retried",
                attempt.event.span_name,
                status,
            )
            self._fail(
                attempt, [attempt.event], EventRejectedError(f"HTTP {status}", status=status)
            )
            return
        self._retry_later(attempt, outcome)

    def _retry_later(self, attempt: _Attempt, outcome: SendOutcome) -> None:
        delay = self._policy.delay(attempt.tries, outcome.hints, time.time())
        due = time.monotonic() + delay
        if due >= attempt.deadline:
            self._give_up(attempt, outcome)
            return
        with self._work:
            if attempt.settled:
                return
            self._in_flight.discard(attempt)
            heapq.heappush(self._delayed, (due, next(self._sequence), attempt))
            self._work.notify()
        self._stats.add_retried()

    def _give_up(self, attempt: _Attempt, outcome: SendOutcome | None) -> None:
        cause = _describe(outcome) if outcome is not None else "no time left"
        self._log.warning(
            "gave-up",
            "business event from span %r (insertId %s) not delivered after %d attempt(s): %s",
            attempt.event.span_name,
            attempt.event.loggable_insert_id,
            attempt.tries,
            cause,
        )
        status = outcome.status if outcome is not None else None
        error = RetriesExhaustedError(f"not delivered before the deadline: {cause}", status=status)
        self._fail(attempt, [attempt.event], error)

    # -- 401/403: one error line, then no requests for a while, then one probe ----------------

    def _may_probe_auth(self, now: float) -> bool:
        with self._work:
            if now < self._auth_paused_until or self._auth_probing:
                return False
            self._auth_probing = True
            return True

    def _auth_recovered(self) -> None:
        with self._work:
            self._auth_probing = False
            self._auth_error = None
        logger.warning("Greenflash accepts the API key again; sending resumes")

    def _pause_for_auth(self, status: int, attempt: _Attempt) -> None:
        error: DeliveryError
        if status == 401:
            error = AuthenticationError("the API key was rejected (HTTP 401)", status=401)
            cause = "the API key was rejected; check GREENFLASH_API_KEY"
        else:
            error = PermissionDeniedError("the API key may not send events (HTTP 403)", status=403)
            cause = "the API key's plan does not allow the Events API"
        with self._work:
            first = self._auth_error is None
            self._auth_error = error
            self._auth_paused_until = time.monotonic() + AUTH_PAUSE_SECONDS
            self._auth_probing = False
        if first:
            logger.error(
                "Greenflash answered HTTP %s: %s. Business events fail without being sent "
                "for the next %d s, then one request checks again.",
                status,
                cause,
                AUTH_PAUSE_SECONDS,
            )
        self._fail(attempt, [attempt.event], error)

    # -- settling ------------------------------------------------------------------------------

    def _settle(self, attempt: _Attempt | None) -> bool:
        """Mark an event done; False when shutdown already settled it (then do nothing)."""
        with self._changed:
            if attempt is not None:
                if attempt.settled:
                    return False
                attempt.settled = True
                self._in_flight.discard(attempt)
                self._pending -= 1
                # Wake flush waiters (they wait for 0) and a blocked submit (it waits for a
                # free slot) only when that can let them go: not once per event.
                if self._pending == 0 or self._pending == self._max_pending - 1:
                    self._changed.notify_all()
        return True

    def _fail(
        self, attempt: _Attempt | None, events: Sequence[BusinessEvent], error: DeliveryError
    ) -> None:
        if not self._settle(attempt):
            return
        if self._on_settled is not None:
            outcome = "rejected" if isinstance(error, EventRejectedError) else "failed"
            kept = [event for event in events if self._on_settled(event, outcome)]
            if kept:
                self._stats.add_retried(len(kept))
                events = [event for event in events if event not in kept]
                if not events:
                    return
        self._stats.add_failed(len(events))
        if self._on_error is not None:
            try:
                self._on_error(error, events)
            except Exception:
                logger.exception("otel_greenflash on_error callback raised")

    def _drop(self, events: Sequence[BusinessEvent], reason: str) -> None:
        self._stats.add_dropped(reason, len(events))
        if self._on_settled is not None:
            for event in events:
                self._on_settled(event, "dropped")
        if self._on_drop is not None:
            try:
                self._on_drop(events, reason)
            except Exception:
                logger.exception("otel_greenflash on_drop callback raised")


def _describe(outcome: SendOutcome) -> str:
    return f"HTTP {outcome.status}" if outcome.status is not None else str(outcome.error)
