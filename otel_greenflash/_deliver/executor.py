"""A small pool of daemon threads that keeps working while the interpreter exits.

``concurrent.futures.ThreadPoolExecutor`` refuses new work once interpreter shutdown begins,
before ``atexit`` handlers run, yet the SDK's ``atexit`` shutdown is exactly when the last
events are flushed: name resolution (asyncio's ``getaddrinfo``) and blocking transports
must still run then.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .._green import Joinable, delivery_lock, delivery_queue, start_delivery_thread

T = TypeVar("T")

_Work = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(ThreadPoolExecutor):
    """Runs calls on up to ``max_workers`` daemon threads, started as work arrives.

    Subclasses ``ThreadPoolExecutor`` because asyncio's ``set_default_executor`` requires one;
    ``submit`` and ``shutdown`` are its own (the base class's refuse work at exit).
    """

    def __init__(self, max_workers: int, name: str, *, prestart: bool = False) -> None:
        """``prestart`` starts one thread now: Python 3.12.0-3.12.1 refuse to start threads in
        ``atexit`` handlers, when the last events are flushed."""
        super().__init__(max_workers=1)
        self._max_workers = max(1, max_workers)
        self._name = name
        # OS threads and primitives under gevent: the delivery loop's OS thread submits
        # here (see _green).
        self._queue: queue.SimpleQueue[_Work | None] = delivery_queue()
        self._lock = delivery_lock()
        self._started: list[Joinable] = []
        self._idle = 0
        self._closed = False
        if prestart:  # waits on a lock of the executor's kind: no gevent hub on an OS thread
            started = delivery_lock()
            started.acquire()
            self.submit(started.release)
            started.acquire()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("executor closed")
            if self._idle == 0 and len(self._started) < self._max_workers:
                thread = start_delivery_thread(self._work, f"{self._name}-{len(self._started)}")
                self._started.append(thread)
            elif self._idle:
                self._idle -= 1
        self._queue.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._started)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            future, fn, args, kwargs = work
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1
