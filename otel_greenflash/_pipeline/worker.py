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


class BackgroundWorker(Generic[Item]):
    """Hands queued items, in batches, to a handler on a daemon thread.

    ``submit`` never blocks on I/O: it appends under a short lock, and when the queue is
    full the *new* item is refused (returns False) so the caller can count the drop. The
    handler also runs at least every ``schedule_delay_seconds`` so it can release held items.
    """

    def __init__(
        self,
        handle_batch: BatchHandler[Item],
        *,
        name: str,
        max_queue_size: int = 2048,
        max_batch_size: int = 512,
        schedule_delay_seconds: float = 1.0,
    ) -> None:
        self._handle_batch = handle_batch
        self._name = name
        self._max_queue_size = max_queue_size
        self._max_batch_size = max_batch_size
        self._schedule_delay = schedule_delay_seconds
        self._queue: collections.deque[Item] = collections.deque()
        self._condition = threading.Condition(threading.Lock())
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
        """How many more items the queue takes now."""
        return max(0, self._max_queue_size - len(self._queue))

    def submit(self, item: Item) -> bool:
        """Queue an item; False when the queue is full or the worker is shut down."""
        with self._condition:
            if self._shutdown or len(self._queue) >= self._max_queue_size:
                return False
            self._queue.append(item)
            if len(self._queue) >= self._max_batch_size:
                self._condition.notify_all()
        return True

    def wake(self) -> None:
        """Run the handler soon even if no batch is full (e.g. held items can go now)."""
        with self._condition:
            self._woken = True
            self._condition.notify_all()

    def flush(self, timeout_seconds: float, *, drain: bool = True) -> bool:
        """Wait until everything submitted so far is handled; False on timeout.

        ``drain`` also asks the handler to let go of items it holds back.
        """
        deadline = time.monotonic() + timeout_seconds
        with self._condition:
            self._flush_requested += 1
            generation = self._flush_requested
            if drain:
                self._drain_requested = generation
            self._condition.notify_all()
            while self._flush_done < generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._condition.wait(remaining)
        return True

    def shutdown(self, timeout_seconds: float) -> None:
        """Stop accepting items; drain and stop the thread, waiting at most the timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._condition:
            self._shutdown = True
            self._condition.notify_all()
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
        with self._condition:
            left = list(self._queue)
            self._queue.clear()
            return left

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (
                    self._shutdown
                    or self._woken
                    or self._flush_requested > self._flush_done
                    or len(self._queue) >= self._max_batch_size
                ):
                    if not self._condition.wait(self._schedule_delay):
                        break  # schedule delay passed: handle what is queued
                self._woken = False
                size = min(len(self._queue), self._max_batch_size)
                batch = [self._queue.popleft() for _ in range(size)]
                generation = self._flush_requested
                flushing = self._shutdown or generation > self._flush_done
                finished_flush = flushing and not self._queue
                draining = finished_flush and (
                    self._shutdown or self._drain_requested > self._flush_done
                )
                self._busy = True  # even with no batch: held items may be on their way out
            try:
                self._handle_batch(batch, draining)
            except Exception:  # a bug here must not kill the worker
                logger.exception("otel_greenflash worker %s failed to handle a batch", self._name)
            with self._condition:
                self._busy = False
                if finished_flush:
                    self._flush_done = generation
                    self._condition.notify_all()
                    if self._shutdown:
                        return
