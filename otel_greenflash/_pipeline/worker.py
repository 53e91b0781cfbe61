"""A bounded queue drained by one daemon thread, with flush and shutdown that honour timeouts."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .._green import library_thread
from .._logging import logger

Item = TypeVar("Item")

BatchHandler = Callable[[list[Item], bool], None]
"""Called on the worker thread with a batch (possibly empty) and ``drain``: True when a flush or
shutdown asks for everything held back to go out now."""

GATHER_SECONDS = 0.005
"""How long the worker, woken by a first item, lets more arrive before it takes them by default
(``send_delay_seconds``): a burst still forms batches, and an isolated item waits no longer than
this (not the schedule delay)."""

_BUSY = 0
"""The worker is not waiting: what is queued now is taken in its next cycle."""
_IDLE = 1
"""The worker waits with nothing queued: the next item wakes it."""
_GATHERING = 2
"""The worker lets items gather (``GATHER_SECONDS``): only a full batch wakes it early."""


class BackgroundWorker(Generic[Item]):
    """Hands queued items, in batches, to a handler on a daemon thread.

    ``submit`` never blocks on I/O: it appends under a short lock, and when the queue is
    full (``max_queue_size`` items, or ``max_queue_bytes`` as the callers' sizes add up) the
    *new* item is refused (returns False) so the caller can count the drop. An item reaching
    an idle worker wakes it (one notify per worker cycle at most); the worker lets items gather
    for ``gather_seconds`` (at most the schedule delay), then takes up to ``max_batch_size``.
    The handler also runs at least every ``schedule_delay_seconds`` so it can release held items.
    """

    def __init__(
        self,
        handle_batch: BatchHandler[Item],
        *,
        name: str,
        max_queue_size: int = 16384,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_batch_size: int = 512,
        schedule_delay_seconds: float = 1.0,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self._handle_batch = handle_batch
        self._name = name
        self._max_queue_size = max_queue_size
        self._max_queue_bytes = max_queue_bytes
        self._max_batch_size = max_batch_size
        self._schedule_delay = schedule_delay_seconds
        self._gather = gather_seconds  # the schedule delay ends a gathering too
        self._queue: collections.deque[Item] = collections.deque()
        self._sizes: collections.deque[int] = collections.deque()
        """The size given with each queued item, in the same order."""
        self._bytes = 0
        """What the queued items' sizes add up to."""
        self._peak_items = 0
        self._peak_bytes = 0
        lock = threading.Lock()
        self._work = threading.Condition(lock)
        """The worker waits on it: items, a flush, a wake-up or shutdown."""
        self._done = threading.Condition(lock)
        """Flushes wait on it for the worker to finish their generation."""
        self._waiting = _BUSY
        self._flush_requested = 0
        self._flush_done = 0
        self._drain_requested = 0
        self._woken = False
        self._shutdown = False
        self._busy = False
        self._thread = library_thread(self._run, name)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def room(self) -> int:
        """How many more items the queue takes now (by count)."""
        return max(0, self._max_queue_size - len(self._queue))

    @property
    def queued_bytes(self) -> int:
        """What the queued items' sizes add up to now."""
        return self._bytes

    @property
    def peak(self) -> tuple[int, int]:
        """The most items, and the most bytes, the queue has held at once so far. Exact: only
        the worker takes items out, so each peak is reached right before the worker takes a
        batch (recorded then) or now."""
        with self._work:
            return max(self._peak_items, len(self._queue)), max(self._peak_bytes, self._bytes)

    def submit(self, item: Item, size: int = 0, bytes_bounded: bool = True) -> bool:
        """Queue an item of about ``size`` bytes; False when the queue is full or the worker
        is shut down. An item is refused for bytes when it would take the queue past
        ``max_queue_bytes`` (one larger than that still enters an empty queue);
        ``bytes_bounded=False`` (an intake that holds the item anyway and bounds its own
        intake) skips that check but counts its size."""
        with self._work:
            queue = self._queue
            if self._shutdown or len(queue) >= self._max_queue_size:
                return False
            queued_bytes = self._bytes + size
            if queued_bytes > self._max_queue_bytes and bytes_bounded and queue:
                return False
            queue.append(item)
            self._sizes.append(size)
            self._bytes = queued_bytes
            waiting = self._waiting
            if waiting and (waiting == _IDLE or len(queue) >= self._max_batch_size):
                self._waiting = _BUSY  # one notify until the worker waits again
                self._work.notify()
        return True

    def full_by_bytes(self) -> bool:
        """The queue has room by count: a refusal now was for bytes (for the drop's message)."""
        return len(self._queue) < self._max_queue_size

    def wake(self) -> None:
        """Run the handler soon even if no batch is full (e.g. held items can go now)."""
        with self._work:
            self._woken = True
            self._work.notify()

    def flush(self, timeout_seconds: float, *, drain: bool = True) -> bool:
        """Wait until everything submitted so far is handled; False on timeout.

        ``drain`` also asks the handler to let go of items it holds back.
        """
        deadline = time.monotonic() + timeout_seconds
        with self._work:
            self._flush_requested += 1
            generation = self._flush_requested
            if drain:
                self._drain_requested = generation
            self._work.notify()
            while self._flush_done < generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(remaining)
        return True

    def shutdown(self, timeout_seconds: float) -> None:
        """Stop accepting items; drain and stop the thread, waiting at most the timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._work:
            self._shutdown = True
            self._work.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def idle(self) -> bool:
        """True when nothing is queued and no batch is being handled."""
        return not self._queue and not self._busy

    @property
    def stopped(self) -> bool:
        """True once the worker thread has exited."""
        return not self._thread.is_alive()

    def abandon(self) -> list[Item]:
        """After shutdown: take what is still queued out of the queue and return it."""
        with self._work:
            left = list(self._queue)
            self._queue.clear()
            self._sizes.clear()
            self._bytes = 0
            return left

    def _wait_for_work(self) -> None:
        """Under the lock: return when a batch is due — a full batch, a flush, a wake-up or
        shutdown; queued items that gathered for ``gather_seconds``; or the schedule delay
        passed (the handler's periodic run, even with nothing queued)."""
        tick = time.monotonic() + self._schedule_delay
        gathered_by = 0.0
        while not (
            self._shutdown
            or self._woken
            or self._flush_requested > self._flush_done
            or len(self._queue) >= self._max_batch_size
        ):
            now = time.monotonic()
            if self._queue:
                if not gathered_by:
                    gathered_by = now + self._gather
                until, state = min(gathered_by, tick), _GATHERING
            else:
                until, state = tick, _IDLE
            if until <= now:
                return
            self._waiting = state
            self._work.wait(until - now)
            self._waiting = _BUSY

    def _run(self) -> None:
        while True:
            with self._work:
                self._wait_for_work()
                # Busy before a record leaves the queue: ``idle`` reads both without the lock,
                # and must never see the queue emptied into a batch not yet handled.
                self._busy = True  # even with no batch: held items may be on their way out
                self._woken = False
                queue, sizes = self._queue, self._sizes
                if len(queue) > self._peak_items:
                    self._peak_items = len(queue)
                if self._bytes > self._peak_bytes:
                    self._peak_bytes = self._bytes
                size = min(len(queue), self._max_batch_size)
                batch = [queue.popleft() for _ in range(size)]
                self._bytes -= sum(sizes.popleft() for _ in range(size))
                generation = self._flush_requested
                flushing = self._shutdown or generation > self._flush_done
                finished_flush = flushing and not queue
                draining = finished_flush and (
                    self._shutdown or self._drain_requested > self._flush_done
                )
            try:
                self._handle_batch(batch, draining)
            except Exception:  # a bug here must not kill the worker
                logger.exception("otel_greenflash worker %s failed to handle a batch", self._name)
            with self._work:
                self._busy = False
                if finished_flush:
                    self._flush_done = generation
                    self._done.notify_all()
                    if self._shutdown:
                        return
