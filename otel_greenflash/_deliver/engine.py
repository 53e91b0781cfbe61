"""Delivery: one asyncio loop on a background thread sends each item (a business event, a
Messages API or a Ratings API request, each to its endpoint) with a bounded, adaptive number of
requests in flight (the in-flight limit), retrying within the item's retry window.

An event waits for a free in-flight slot without any clock running; its retry window starts
at its first attempt. A ``429``/``503`` carrying ``Retry-After`` pauses the whole endpoint
(that one only: the others go on), as a ``401``/``403`` does (see :mod:`.auth`); throttling
halves the in-flight limit (shared by the endpoints), and successes grow it back (never
above ``max_concurrency``).
Every body is encoded once, so each attempt carries the same bytes and ``insertId``.

Ratings have no idempotency key: a rating sent twice is stored twice. So a rating is retried
only when the API surely did not store it — the request never reached it (no connection could
be made), or it declined it (``408``, ``429``, ``503`` with ``Retry-After``). After an answer
that leaves it unknown (a timeout or a connection lost once the request was sent, ``500``,
``502``, ``504``, a bare ``503``, which a proxy may give after forwarding it) the rating
is *unconfirmed*: counted, said in a rate-limited line, and never sent again. Events
(``insertId``) and messages (``externalMessageId``) are idempotent and retried alike.

Each event is *settled* exactly once, under one lock: sent, failed, rejected or dropped at
shutdown; only the settling thread touches the counters and callbacks. ``submit`` blocks its
caller (the processor's worker, never the application) while too many events are unsettled.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._callbacks import call_safely
from .._event import ApiRequest, BusinessEvent, DeliveryItem, Endpoint
from .._exceptions import DeliveryError, EventRejectedError, RetriesExhaustedError
from .._green import new_event_loop, start_delivery_thread
from .._logging import RateLimitedLog, logger
from .._stats import DeliveryStats, DropCallback, DropReason, LostEvents
from .auth import AuthGate
from .executor import DaemonExecutor
from .http import AsyncTransport, suppress_instrumentation
from .ledger import Ledger
from .retry import THROTTLING_STATUSES, RetryPolicy, is_retryable_status, server_retry_delay
from .throttle import Throttle
from .transport import UNSUPPORTED_ENDPOINT, SendOutcome, encode_body

if TYPE_CHECKING:
    import asyncio

ErrorCallback = Callable[[Exception, Sequence[BusinessEvent]], None]
"""``on_error``: business events only (messages and ratings are counted in ``stats()``)."""
SettledCallback = Callable[[DeliveryItem, str], bool]
"""Called once per item with ``"sent"``, ``"rejected"`` (the API refused it for good),
``"failed"`` (undelivered: the retry window ended, or the key was refused), ``"unconfirmed"``
(a rating that may or may not have been stored: never sent again) or ``"dropped"``
(shutdown). Returning True for ``"failed"`` means the caller keeps the item to try again
later (the durable spool), so it is not counted as failed."""

RATING_DECLINED_STATUSES = frozenset({408, 429})
"""Answers after which a rating surely was not stored, so it may be sent again: the server
did not get the whole request, or declined to take it now. A ``503`` only with
``Retry-After`` (the API's own refusal): a bare one may come from a proxy after it forwarded
the request."""

CLOSE_SECONDS = 0.5
"""How long shutdown waits, after its own timeout, for connections to close."""

_abandoned_after_fork: list[DeliveryEngine] = []
"""Engines inherited from a parent process: kept referenced, never closed, in the child."""


@dataclass(eq=False, slots=True)
class _Attempt:
    item: DeliveryItem
    body: bytes
    seq: int
    window_ends: float = math.inf
    """Set at the first attempt: no clock runs while the event waits for a slot."""
    tries: int = 0
    round: int = -1
    """The throttle's round when the latest attempt started (one halving per round)."""
    settled: bool = False
    sending: bool = False
    """A request of it is under way, or its answer is not settled yet (cleared only before
    a retry is scheduled)."""


class DeliveryEngine:
    """Sends items from one asyncio loop; settles each as sent, failed, rejected, unconfirmed
    (ratings) or dropped."""

    def __init__(
        self,
        transport: AsyncTransport,
        stats: DeliveryStats,
        *,
        max_concurrency: int = 64,
        max_pending: int = 2048,
        retry_window_seconds: float = 300.0,
        timeout_seconds: float = 10.0,
        policy: RetryPolicy | None = None,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        on_settled: SettledCallback | None = None,
        mark_sending: Callable[[DeliveryItem, bool], None] | None = None,
    ) -> None:
        """``mark_sending(rating, True)`` (with a spool) persists, right before each request
        of a rating, that it may reach the API; ``False`` when a retry is scheduled because it
        surely did not. A process adopting the spool never sends a marked rating (on this
        loop's thread: ratings are few, each write is one small transaction)."""
        self._transport = transport
        self._stats = stats
        self._window = retry_window_seconds
        self._timeout = timeout_seconds
        self._policy = policy if policy is not None else RetryPolicy()
        self._on_error = on_error
        self._on_settled = on_settled
        self._mark_sending = mark_sending
        self._open_messages: set[str] = set()
        """Keys of the messages requests taken and not settled yet (see _accept)."""
        self._held_ratings: dict[str, list[_Attempt]] = {}
        """Ratings of a message, held until the messages request carrying it settles."""
        self._log = RateLimitedLog()
        self._lost = LostEvents(stats, self._log, on_drop)
        self._ledger: Ledger[_Attempt] = Ledger(max_pending)
        # Owned by the loop thread.
        self._ready: dict[Endpoint, collections.deque[_Attempt]] = _queues()
        self._due: dict[Endpoint, collections.deque[_Attempt]] = _queues()
        """Retries whose wait is over: they go before new events (their window is running).
        One queue of each per endpoint: a paused endpoint holds up only its own."""
        self._delayed: list[tuple[float, int, _Attempt]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._throttle = Throttle(max_concurrency)
        self._auth = {endpoint: AuthGate(endpoint=endpoint) for endpoint in Endpoint}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._context = contextvars.Context()
        """Every request runs in (a copy of) this context: HTTP-client instrumentations see
        OpenTelemetry's suppress-instrumentation flag and leave our requests alone."""
        self._context.run(suppress_instrumentation)
        # A real OS thread even under gevent's monkey-patching: a loop in a greenlet would be
        # "running" for every greenlet of the main thread (see _green).
        self._loop = new_event_loop()
        self._thread = start_delivery_thread(self._run_loop, "otel-greenflash-delivery")

    @property
    def pending(self) -> int:
        """Events taken and not yet settled."""
        return len(self._ledger)

    @property
    def in_flight_limit(self) -> int:
        """Requests allowed in flight now (shrinks when the API throttles)."""
        return self._throttle.limit

    # -- called from other threads -----------------------------------------------------------

    def submit(self, events: Sequence[DeliveryItem]) -> None:
        """Take items for delivery; blocks while ``max_pending`` are unsettled (backpressure)."""
        encoded: list[tuple[DeliveryItem, bytes]] = []
        for event in events:
            try:
                encoded.append((event, encode_body(event)))
            except (ValueError, TypeError, RecursionError):
                error = EventRejectedError(f"the {_noun(event)} cannot be encoded as JSON")
                self._report_failure([event], error)
        taken = 0
        while taken < len(encoded):
            chunk = self._ledger.admit(encoded[taken:], _new_attempt)
            if not chunk:  # closed: shutdown is under way
                break
            taken += len(chunk)
            with contextlib.suppress(RuntimeError):  # loop already closed: shutdown drops them
                self._loop.call_soon_threadsafe(self._accept, chunk, context=self._context)
        if taken < len(encoded):
            self._drop([event for event, _ in encoded[taken:]], DropReason.SHUTDOWN)

    def flush(self, timeout_seconds: float) -> bool:
        """Wait until every event taken before the call is settled; False on timeout."""
        return self._ledger.wait_settled(timeout_seconds)

    def shutdown(self, timeout_seconds: float) -> int:
        """Deliver what fits in the timeout, then drop the rest; return how many were dropped.

        Requests still in flight are dropped too: an answer arriving later is ignored. A
        rating whose request is under way is unconfirmed instead (it may be stored: it is
        neither kept nor sent again).
        """
        self._ledger.close()
        self._ledger.wait_settled(timeout_seconds)
        left = self._ledger.abandon()  # events being settled right now are left to their settler
        unsure = [a for a in left if a.sending and a.item.endpoint is Endpoint.RATINGS]
        for attempt in unsure:
            self._count_unconfirmed(attempt, "its request was under way at shutdown")
        dropped = [attempt.item for attempt in left if attempt not in unsure]
        if dropped:
            self._drop(dropped, DropReason.SHUTDOWN)
        if not self._thread.is_alive():
            return len(dropped)
        import asyncio  # loaded by __init__ (new_event_loop): no import runs at exit

        close = self._close()
        try:
            closing = asyncio.run_coroutine_threadsafe(close, self._loop)
        except RuntimeError:  # the loop stopped meanwhile
            close.close()
            return len(dropped)
        with contextlib.suppress(Exception):
            closing.result(CLOSE_SECONDS)
        return len(dropped)

    def abandon_after_fork(self) -> None:
        """In a forked child: this engine's thread does not exist here; never touch it again."""
        _abandoned_after_fork.append(self)

    # -- the loop thread ---------------------------------------------------------------------

    def _run_loop(self) -> None:
        import asyncio  # loaded by __init__ (new_event_loop), before this thread started

        asyncio.set_event_loop(self._loop)
        # Name resolution must work in the SDK's atexit shutdown too (see _executor).
        self._loop.set_default_executor(
            DaemonExecutor(4, "otel-greenflash-resolver", prestart=True)
        )
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._loop.close()

    async def _close(self) -> None:
        import asyncio  # loaded by __init__ (new_event_loop)

        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._transport.aclose(), CLOSE_SECONDS * 0.8)
        self._loop.call_soon(self._loop.stop)

    def _accept(self, attempts: list[_Attempt]) -> None:
        """New attempts queue for their endpoint; a rating of a message whose messages request
        is still open waits for it (else the API could be asked to rate a message it has not
        stored yet)."""
        for attempt in attempts:
            item = attempt.item
            if item.endpoint is Endpoint.MESSAGES:
                self._open_messages.add(item.key)
            elif isinstance(item, ApiRequest) and item.after in self._open_messages:
                self._held_ratings.setdefault(item.after, []).append(attempt)
                continue
            self._ready[item.endpoint].append(attempt)
        self._pump()

    def _release_held_ratings(self) -> None:
        for key in list(self._held_ratings):
            if key not in self._open_messages:
                self._ready[Endpoint.RATINGS].extend(self._held_ratings.pop(key))

    def _released(self, attempt: _Attempt) -> None:
        """``attempt`` is settled and counted: the ledger lets it go, ratings held for it go."""
        self._ledger.release(attempt)
        if attempt.item.endpoint is Endpoint.MESSAGES:
            self._open_messages.discard(attempt.item.key)

    def _pump(self) -> None:
        """Start attempts while the in-flight limit has room, of endpoints not paused."""
        now = time.monotonic()
        if self._held_ratings:
            self._release_held_ratings()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            waited = heapq.heappop(delayed)[2]
            self._due[waited.item.endpoint].append(waited)
        throttle = self._throttle
        open_endpoints = []
        for endpoint in _ENDPOINTS:
            if not throttle.paused(now, endpoint):
                open_endpoints.append(endpoint)
            elif self._ready[endpoint] or self._due[endpoint]:
                self._wake_at(throttle.paused_until(endpoint), now)
        while throttle.has_room(self._in_flight):
            attempt = self._next_attempt(open_endpoints)
            if attempt is None:
                break
            if attempt.settled:
                continue
            if now >= attempt.window_ends:  # its window ended while the endpoint was paused
                self._give_up(attempt, None)
                continue
            refusal = self._auth[attempt.item.endpoint].refusal(now)
            if refusal is not None:
                self._fail(attempt, refusal)
                continue
            if attempt.item.endpoint is Endpoint.RATINGS:
                self._mark(attempt.item, True)  # committed before its request can go
            self._in_flight += 1
            task = self._loop.create_task(self._attempt(attempt, now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if delayed:
            self._wake_at(delayed[0][0], now)
        if self._held_ratings and not self._open_messages.issuperset(self._held_ratings):
            self._loop.call_soon(self._pump)  # settled in this round (window ended): they go

    def _mark(self, rating: DeliveryItem, sending: bool) -> None:
        mark = self._mark_sending
        if mark is None:
            return
        try:
            mark(rating, sending)
        except Exception as error:  # a full disk: the rating goes unmarked, said once a while
            self._log.warning(
                "rating-mark",
                "otel_greenflash could not record in the spool that a rating is being sent "
                "(%s); a crash during its request could send it twice",
                type(error).__name__,
            )

    def _next_attempt(self, endpoints: list[Endpoint]) -> _Attempt | None:
        """The oldest retry whose wait is over, else the oldest new attempt, of ``endpoints``."""
        for queues in (self._due, self._ready):
            oldest: collections.deque[_Attempt] | None = None
            for endpoint in endpoints:
                queue = queues[endpoint]
                if queue and (oldest is None or queue[0].seq < oldest[0].seq):
                    oldest = queue
            if oldest is not None:
                return oldest.popleft()
        return None

    def _wake_at(self, when: float, now: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_later(max(0.0, when - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._pump()

    async def _attempt(self, attempt: _Attempt, now: float) -> None:
        if attempt.tries == 0:
            attempt.window_ends = now + self._window
        attempt.tries += 1
        attempt.round = self._throttle.round
        remaining = attempt.window_ends - now
        try:
            timeout = max(0.001, min(self._timeout, remaining))
            # Marked before it is checked, and never cleared until its answer is settled: a
            # shutdown that abandons it meanwhile sees it under way (a rating: unconfirmed).
            attempt.sending = True
            if attempt.settled:  # abandoned by shutdown: never sent
                return
            outcome = await self._transport.send(attempt.body, timeout, attempt.item.endpoint)
            self._settle_outcome(attempt, outcome)
        except Exception:  # a bug here must not stop delivery
            logger.exception("otel_greenflash delivery failed")
            if attempt.item.endpoint is Endpoint.RATINGS:  # it may have gone out: never again
                self._unconfirmed(attempt, "internal error")
            else:
                self._fail(attempt, DeliveryError("internal error"))
        finally:
            self._in_flight -= 1
            self._pump()

    def _settle_outcome(self, attempt: _Attempt, outcome: SendOutcome) -> None:
        status = outcome.status
        auth = self._auth[attempt.item.endpoint]
        auth.answered(status)
        if attempt.settled:  # dropped by shutdown while in flight: its answer is ignored
            return
        if outcome.ok:
            self._throttle.succeeded()
            self._sent(attempt)
            return
        if outcome.error == UNSUPPORTED_ENDPOINT:
            error = EventRejectedError(f"the transport cannot send to /{attempt.item.endpoint}")
            self._fail(attempt, error)
            return
        if status == 401 or status == 403:
            self._fail(attempt, auth.refused(status, time.monotonic()))
            return
        if status is not None and not is_retryable_status(status):
            self._log.warning(
                f"rejected-{status}",
                "Greenflash rejected a %s from span %r with HTTP %s; not retried",
                _noun(attempt.item),
                attempt.item.span_name,
                status,
            )
            error = EventRejectedError(f"HTTP {status}", status=status)
            self._fail(attempt, error)
            return
        if attempt.item.endpoint is Endpoint.RATINGS and not _surely_not_stored(outcome):
            self._unconfirmed(attempt, _describe(outcome))
            return
        self._retry_later(attempt, outcome)

    def _retry_later(self, attempt: _Attempt, outcome: SendOutcome) -> None:
        attempt.sending = False  # surely not stored: a shutdown from now on drops it
        now = time.monotonic()
        hint = server_retry_delay(outcome.hints, time.time()) if outcome.hints else None
        due = now + self._policy.after(attempt.tries, hint)
        if outcome.status in THROTTLING_STATUSES:  # with a hint, the whole endpoint waits
            pause_until = due if hint is not None and hint > 0 else None
            self._throttle.throttled(attempt.round, pause_until, attempt.item.endpoint)
        elif outcome.unsent:  # no connection could be made: the endpoint waits out the backoff
            # (probed again then by the halved limit), not retried at full concurrency: an
            # outage would keep this loop opening sockets, holding the GIL against the app.
            self._throttle.throttled(
                attempt.round, min(due, attempt.window_ends), attempt.item.endpoint
            )
        if due >= attempt.window_ends:
            self._give_up(attempt, outcome)
            return
        if attempt.item.endpoint is Endpoint.RATINGS:
            self._mark(attempt.item, False)  # surely not stored: an adopter may send it
        heapq.heappush(self._delayed, (due, attempt.seq, attempt))
        self._count(attempt.item.endpoint, "retried")

    def _give_up(self, attempt: _Attempt, outcome: SendOutcome | None) -> None:
        cause = _describe(outcome) if outcome is not None else "its retry window ended first"
        item = attempt.item
        if isinstance(item, BusinessEvent):
            self._log.warning(
                "gave-up",
                "business event from span %r (insertId %s) not delivered after %d attempt(s) "
                "within its retry window: %s",
                item.span_name,
                item.loggable_insert_id,
                attempt.tries,
                cause,
            )
        else:
            self._log.warning(
                f"gave-up-{item.endpoint}",
                "%s from %r not delivered after %d attempt(s) within its retry window: %s",
                _noun(item),
                item.span_name,
                attempt.tries,
                cause,
            )
        error = RetriesExhaustedError(
            f"not delivered within the retry window: {cause}",
            status=outcome.status if outcome is not None else None,
        )
        self._fail(attempt, error)

    # -- settling ------------------------------------------------------------------------------
    # Claim (exactly one thread wins: the loop or shutdown), count and call back, then release:
    # flush() sees an event settled only once its counters and callbacks are done.

    def _sent(self, attempt: _Attempt) -> None:
        if not self._ledger.claim(attempt):
            return
        try:
            self._count(attempt.item.endpoint, "sent")
            if self._on_settled is not None:
                self._on_settled(attempt.item, "sent")
        finally:
            self._released(attempt)

    def _unconfirmed(self, attempt: _Attempt, cause: str) -> None:
        """A rating the API may or may not have stored: never sent again (see the module)."""
        if not self._ledger.claim(attempt):
            return
        try:
            self._count_unconfirmed(attempt, cause)
        finally:
            self._released(attempt)

    def _count_unconfirmed(self, attempt: _Attempt, cause: str) -> None:
        self._stats.add_for(Endpoint.RATINGS, "unconfirmed")
        self._log.warning(
            "rating-unconfirmed",
            "a rating from %r may or may not have been stored (%s); not sent again, as the "
            "Ratings API cannot tell a retry from a second rating; see "
            "stats()['ratings']['unconfirmed']",
            attempt.item.span_name,
            cause,
        )
        if self._on_settled is not None:
            self._on_settled(attempt.item, "unconfirmed")

    def _fail(self, attempt: _Attempt, error: DeliveryError) -> None:
        if not self._ledger.claim(attempt):
            return
        try:
            self._report_failure([attempt.item], error)
        finally:
            self._released(attempt)

    def _report_failure(self, items: Sequence[DeliveryItem], error: DeliveryError) -> None:
        if self._on_settled is not None:
            outcome = "rejected" if isinstance(error, EventRejectedError) else "failed"
            kept = [item for item in items if self._on_settled(item, outcome)]
            if kept:
                for item in kept:
                    self._count(item.endpoint, "retried")
                items = [item for item in items if item not in kept]
                if not items:
                    return
        events = [item for item in items if isinstance(item, BusinessEvent)]
        for item in items:
            if not isinstance(item, BusinessEvent):
                self._stats.add_for(item.endpoint, "failed")
        if not events:
            return
        self._lost.record(DropReason.FAILED, len(events))
        if self._on_error is not None:
            call_safely("on_error", self._on_error, error, events)

    def _drop(self, items: Sequence[DeliveryItem], reason: DropReason) -> None:
        if self._on_settled is not None:
            for item in items:
                self._on_settled(item, "dropped")
        events = [item for item in items if isinstance(item, BusinessEvent)]
        for item in items:
            if not isinstance(item, BusinessEvent):
                self._stats.add_dropped_for(item.endpoint, reason.value)
        if events or not items:
            self._lost.record(reason, len(events), events=events)

    def _count(self, endpoint: Endpoint, outcome: str) -> None:
        """``sent`` or ``retried``: events under the keys they always had, others by
        endpoint."""
        if endpoint is not Endpoint.EVENTS:
            self._stats.add_for(endpoint, outcome)
        elif outcome == "sent":
            self._stats.add_sent()
        else:
            self._stats.add_retried()


_ENDPOINTS = tuple(Endpoint)
"""Iterated on every pump: a tuple, not the enum class (whose iteration builds a generator)."""


def _queues() -> dict[Endpoint, collections.deque[_Attempt]]:
    return {endpoint: collections.deque() for endpoint in Endpoint}


def _new_attempt(encoded: tuple[DeliveryItem, bytes], seq: int) -> _Attempt:
    return _Attempt(encoded[0], encoded[1], seq)


def _surely_not_stored(outcome: SendOutcome) -> bool:
    """True when the request surely did not store anything: it never reached the API, or the
    API declined it."""
    if outcome.unsent or outcome.status in RATING_DECLINED_STATUSES:
        return True
    return outcome.status == 503 and "retry-after" in (outcome.hints or {})


def _noun(item: DeliveryItem) -> str:
    if item.endpoint is Endpoint.MESSAGES:
        return "Messages API request"
    if item.endpoint is Endpoint.RATINGS:
        return "rating"
    return "business event"


def _describe(outcome: SendOutcome) -> str:
    return f"HTTP {outcome.status}" if outcome.status is not None else str(outcome.error)
