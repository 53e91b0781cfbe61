"""The lane stage: mapped events wait for the delivery loop in memory, or in the durable spool.

With a spool every event is written first and handed to the loop as it has room (waiting
events too, marked as waiting); without one they go to the loop's bounded queue directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .._config import GreenflashConfig
from .._deliver.engine import DeliveryEngine, ErrorCallback
from .._deliver.http import transport_for
from .._deliver.transport import Transport
from .._event import BusinessEvent, DeliveryItem
from .._logging import RateLimitedLog
from .._stats import DeliveryStats, DropCallback
from .spool import Spool
from .spool_feed import SpoolFeed

DrainWorker = Callable[[float], bool]
"""Runs the worker over everything queued (and hands spooled events on); False on timeout."""

_retired_spools: list[Spool] = []
"""Spools inherited from a parent process: kept referenced so they are never closed here."""


class Lanes:
    """Hands mapped events to the delivery loop, through the spool when one is configured."""

    def __init__(
        self,
        config: GreenflashConfig,
        stats: DeliveryStats,
        *,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        transport: Transport | None = None,
        wake_worker: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.on_error = on_error
        self.on_drop = on_drop
        self._custom_transport = transport
        self._wake_worker = wake_worker or _nothing
        self._start()

    def _start(self) -> None:
        config = self.config
        # A spool only where events can really be delivered: adopting another process's
        # events without a key (or in dry-run) would only set them aside for nothing.
        self._spool_wanted = (
            bool(config.spool_dir)
            and not config.dry_run
            and (bool(config.api_key) or self._custom_transport is not None)
        )
        self.feed = SpoolFeed(self.config, self.stats, self._wake_worker)
        self.engine = DeliveryEngine(
            transport_for(self.config, self._custom_transport),
            self.stats,
            max_concurrency=self.config.max_concurrency,
            max_pending=self.config.max_pending,
            retry_window_seconds=self.config.export_timeout_seconds,
            timeout_seconds=self.config.timeout_seconds,
            on_error=self.on_error,
            on_drop=self.on_drop,
            on_settled=self.feed.note_settled if self._spool_wanted else None,
            mark_sending=self.feed.mark_sending if self._spool_wanted else None,
        )

    def restart_after_fork(self, stats: DeliveryStats) -> None:
        """Give a forked child its own loop, connections and counters.

        The parent's loop, connections and spool are abandoned, not closed: they still belong
        to the parent.
        """
        parent_spool = self.feed.release_after_fork()
        if parent_spool is not None:
            _retired_spools.append(parent_spool)
        self.engine.abandon_after_fork()
        self.stats = stats
        self._start()

    def held_warnings(self) -> tuple[RateLimitedLog, ...]:
        """The rate-limited logs of the delivery loop and the spool."""
        return (self.engine._log, self.feed._log)

    # -- worker thread -----------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        """True while events go through a spool (or will, once it opens)."""
        return self._spool_wanted or self.feed.spool is not None

    def hold(self, events: Sequence[BusinessEvent]) -> None:
        """Events that wait for their conversation id: into the spool as known so far, so a
        crash while they wait loses nothing (no-op without a spool)."""
        self._open_spool_once()
        self.feed.hold(events)

    def deliver(self, events: Sequence[DeliveryItem]) -> None:
        """Hand mapped items (events, messages and ratings requests) on: into the spool
        (which feeds the loop) or to the loop."""
        self._open_spool_once()
        if not self.feed.put(events, self.engine) and events:
            self.engine.submit(events)

    def _open_spool_once(self) -> None:
        if self._spool_wanted:
            self._spool_wanted = False
            self.feed.open()

    # -- lifecycle (any thread) ----------------------------------------------------------------

    def flush(self, timeout_seconds: float, drain_worker: DrainWorker) -> bool:
        """After ``drain_worker`` took everything queued before the call: wait until each of
        those events is settled, spooled ones included; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        watermark = self.feed.last_seq()
        if not self.engine.flush(timeout_seconds):  # what the loop holds now
            return False
        while not self.feed.flushed_through(watermark):  # spooled events, as they go out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.engine.pending == 0 and not drain_worker(remaining):  # hand over more
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def shutdown(self, timeout_seconds: float) -> int:
        """Deliver what fits in the timeout; return how many events were dropped."""
        self.feed.release_backlog(self.engine)  # what a full disk kept out of the spool
        return self.engine.shutdown(timeout_seconds)

    def close_spool(self) -> int:
        """Final spool update; return how many events stay in it for the next start."""
        return self.feed.close()

    def spool_counts(self) -> dict[str, int] | None:
        return self.feed.counts()


def _nothing() -> None:
    return None
