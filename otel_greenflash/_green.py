"""gevent and eventlet monkey-patching: real OS threads, and what a signal handler may do.

Under ``gevent.monkey.patch_all()`` or ``eventlet.monkey_patch()``, ``threading.Thread`` starts
a greenlet on the main thread. An asyncio loop there is seen as running by every greenlet of
that thread (``asyncio.run`` in the application then fails), and a Python signal handler may
run inside the hub, where nothing may block or switch. So under gevent the delivery loop and
its executor run on real OS threads started with the unpatched ``_thread`` functions; a
thread that must be an OS thread (SIGTERM's sink) is one under eventlet too; and a signal
handler that finds itself in the hub hands its work to a new greenlet.

gevent and eventlet are never imported here: only their modules already in ``sys.modules``
(the application patched) are asked.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._logging import logger

if TYPE_CHECKING:
    import asyncio


class Joinable(Protocol):
    """What callers need of a thread: ``threading.Thread`` or :class:`OsThread`."""

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...


def patcher() -> str | None:
    """``"gevent"`` or ``"eventlet"`` when that library has patched ``threading``; else None."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and _asks(gevent_monkey, "is_module_patched", "threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and _asks(eventlet_patcher, "is_monkey_patched", "thread"):
        return "eventlet"
    return None


def _asks(module: Any, function: str, name: str) -> bool:
    try:
        return bool(getattr(module, function)(name))
    except Exception:  # a version without that function: treat as unpatched
        return False


def _original(module: str, name: str) -> Any:
    found = patcher()
    if found == "gevent":
        return sys.modules["gevent.monkey"].get_original(module, name)
    if found == "eventlet":
        return getattr(sys.modules["eventlet.patcher"].original(module), name)
    return getattr(sys.modules.get(module) or __import__(module), name)


class OsThread:
    """A daemon OS thread started with the unpatched ``_thread`` API, joinable with a timeout.

    Interpreter shutdown never waits for it (like a daemon ``threading.Thread``).
    """

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.name = name
        self._done = _original("_thread", "allocate_lock")()
        self._done.acquire()

        def run() -> None:
            try:
                target()
            finally:
                self._done.release()

        try:
            _original("_thread", "start_new_thread")(run, ())
        except BaseException:
            self._done.release()
            raise

    def is_alive(self) -> bool:
        return bool(self._done.locked())

    def join(self, timeout: float | None = None) -> None:
        """Wait (blocking this OS thread, hub included) at most ``timeout`` seconds."""
        if self._done.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._done.release()


def start_os_thread(target: Callable[[], object], name: str) -> Joinable:
    """A started daemon OS thread, even under monkey-patching; starting it never waits.

    Raises ``RuntimeError`` where no thread can be started (as ``Thread.start`` does).
    """
    if patcher() is None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread
    return OsThread(target, name)


def os_lock() -> Any:
    """An unpatched ``_thread`` lock: it blocks an OS thread, never switches greenlets."""
    return _original("_thread", "allocate_lock")()


def on_main_thread() -> bool:
    """True on the main OS thread, in any of its greenlets (patched, ``current_thread()`` is a
    dummy in gevent's hub and never ``main_thread()`` under eventlet)."""
    if patcher() is None or not sys.platform.startswith("linux"):
        return threading.current_thread() is threading.main_thread()
    # Linux: the main thread's id is the process id (threads' ids are unpatched here).
    return bool(_original("_thread", "get_native_id")() == os.getpid())


# -- signals meant for the process ---------------------------------------------------------

_PROCESS_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT") if hasattr(signal, name)
)
"""Signals that end or interrupt the process, which Python handles on the main thread only."""


def _taking_no_process_signals(target: Callable[[], object]) -> Callable[[], None]:
    """``target``, run on an OS thread of its own that first blocks SIGTERM and SIGINT.

    A handled signal the kernel gives to one of the library's threads does not wake a main
    thread waiting in ``time.sleep`` or another blocking call: its Python handler would only
    run when that wait ends (a script sleeping 60 s would ignore SIGTERM for 60 s). Blocked
    here, the signal goes to a thread that acts on it at once. Only for OS threads: a green
    thread shares the main thread's mask. The thread that takes a deferred SIGTERM
    (``_lifecycle.termination``) keeps them open, on purpose.
    """

    def run() -> None:
        if _PROCESS_SIGNALS and hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
        target()

    return run


def library_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """A daemon ``threading.Thread`` (not started) for the library's own work; as an OS thread
    (nothing monkey-patched) it never takes SIGTERM or SIGINT."""
    if patcher() is None:
        target = _taking_no_process_signals(target)
    return threading.Thread(target=target, name=name, daemon=True)


# -- the delivery loop and its executor ------------------------------------------------------


def _delivery_on_os_threads() -> bool:
    """gevent: yes; its locks wake a greenlet waiting in another OS thread, so the greenlets
    that wait for delivery (flush, shutdown, backpressure) are woken by the loop's thread.
    eventlet's locks do not (the wake-up goes to the releasing thread's hub), so there the loop
    stays a green thread, as eventlet expects."""
    return patcher() == "gevent"


class _Hubs:
    """What this process keeps of gevent's and eventlet's hubs."""

    def __init__(self) -> None:
        self.main_loop: Any = None
        """gevent: the main thread's hub loop, kept when the delivery threads start from it."""
        self.waker: _EventletWaker | None = None
        """eventlet: the pipe that wakes a green thread for :func:`hand_off`."""


_hubs = _Hubs()


def start_delivery_thread(target: Callable[[], object], name: str) -> Joinable:
    """A started daemon thread for the delivery loop or its executor, or for work that waits
    for them and so must not run on them (see above)."""
    if _delivery_on_os_threads():
        if on_main_thread():
            _hubs.main_loop = sys.modules["gevent"].get_hub().loop
        return OsThread(_taking_no_process_signals(target), name)
    thread = library_thread(target, name)
    thread.start()
    return thread


class _MainHubGreenlet:
    """Work sent to the main thread's hub from another OS thread, as a new greenlet there."""

    def __init__(self, target: Callable[[], object]) -> None:
        self._target = target
        self._done = False

    def run(self) -> None:
        try:
            self._target()
        finally:
            self._done = True

    def is_alive(self) -> bool:
        return not self._done

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)


def start_worker_joiner(target: Callable[[], object], name: str) -> Joinable:
    """Work that joins the pipeline's worker, asked for on a delivery thread (a callback's
    ``shutdown()``). Under gevent the worker is a greenlet of the main thread, which only a
    greenlet of that thread may join: the work is sent to its hub. Elsewhere, a delivery
    thread."""
    loop = _hubs.main_loop
    if _delivery_on_os_threads() and loop is not None and not on_main_thread():
        work = _MainHubGreenlet(target)
        loop.run_callback_threadsafe(sys.modules["gevent"].spawn, work.run)
        return work
    return start_delivery_thread(target, name)


def delivery_lock() -> Any:
    """A lock for the delivery threads' own bookkeeping."""
    return os_lock() if _delivery_on_os_threads() else threading.Lock()


def delivery_queue() -> Any:
    """A ``queue.SimpleQueue`` whose ``get`` blocks a delivery thread."""
    if _delivery_on_os_threads():
        return _original("queue", "SimpleQueue")()
    return queue.SimpleQueue()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The delivery loop; on the platform's own selector when on an OS thread under gevent
    (gevent's selector would start a gevent hub on that thread). Imports asyncio (≈ 50 ms),
    on the thread building the delivery engine, not at package import."""
    import asyncio

    if not _delivery_on_os_threads():
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(_original("selectors", "DefaultSelector")())


def in_hub() -> bool:
    """True when the code runs inside gevent's or eventlet's hub (a signal handler may)."""
    found = patcher()
    try:
        if found == "gevent":
            gevent = sys.modules["gevent"]
            return bool(gevent.getcurrent() is gevent.get_hub())
        if found == "eventlet":
            hubs = sys.modules["eventlet.hubs"]
            greenlet = sys.modules["greenlet"]
            return bool(greenlet.getcurrent() is hubs.get_hub().greenlet)
    except Exception:  # pragma: no cover - a patcher without the expected API
        return False
    return False


def in_spawned_greenlet() -> bool:
    """True under gevent or eventlet when the code runs in the hub or in a green thread, not in
    the main greenlet (which a signal handler may also interrupt: there it can block)."""
    if patcher() is None:
        return False
    try:
        return sys.modules["greenlet"].getcurrent().parent is not None
    except Exception:  # pragma: no cover - a patcher without the expected API
        return False


class _EventletWaker:
    """A green thread waiting on a pipe: a handler in eventlet's hub writes one byte to run work.

    eventlet's hub does not look at new green threads until its ``poll`` returns, and a signal
    handler runs inside that ``poll`` (which Python then resumes): only a ready fd ends it.
    """

    def __init__(self) -> None:
        self._work: list[Callable[[], None]] = []
        self._read_end, self._write_end = os.pipe()
        for end in (self._read_end, self._write_end):
            os.set_blocking(end, False)
        # eventlet's read and write would wait in the hub; these never wait (non-blocking).
        self._read = _original("os", "read")
        self._write = _original("os", "write")
        sys.modules["eventlet"].spawn(self._wait)

    def _wait(self) -> None:
        hubs = sys.modules["eventlet.hubs"]
        while True:
            try:
                hubs.trampoline(self._read_end, read=True)
            except OSError:  # eventlet's IOClosed: a forked child let this waker go
                return
            # Empty when the wake-up was another process's: after a fork, parent and child
            # share eventlet's epoll instance, and each may see the other's pipe as ready.
            with contextlib.suppress(BlockingIOError):
                self._read(self._read_end, 64)
            while self._work:
                self._work.pop(0)()

    def call(self, work: Callable[[], None]) -> None:
        self._work.append(work)
        with contextlib.suppress(OSError):  # full: a byte is already waiting
            self._write(self._write_end, b"\0")

    def let_go_in_child(self) -> None:
        """In a forked child: close this process's copies of the pipe (the parent's stay open
        and working) and end the green thread waiting on it."""
        for end in (self._read_end, self._write_end):
            with contextlib.suppress(OSError):
                os.close(end)
        # Closed first, so the hub's clean-up cannot unregister the parent's pipe from the
        # epoll instance both processes share; the waiting green thread gets IOClosed.
        with contextlib.suppress(Exception):
            sys.modules["eventlet.hubs"].notify_opened(self._read_end)


def prepare_hand_off() -> None:
    """Call where a signal handler is installed (the main thread): under eventlet, start the
    green thread :func:`hand_off` needs."""
    if patcher() == "eventlet" and _hubs.waker is None:
        _hubs.waker = _EventletWaker()


def hand_off(work: Callable[[], None]) -> bool:
    """From the hub: run ``work`` soon in a green thread; False when that cannot be done."""
    found = patcher()
    if found == "gevent":
        sys.modules["gevent"].spawn(work)
        return True
    waker = _hubs.waker
    if found == "eventlet" and waker is not None:
        waker.call(work)
        return True
    return False


def after_fork_in_child() -> None:
    """In a forked child (see :mod:`._lifecycle.fork`): the child inherits the SIGTERM handler,
    not a pipe of its own: give it one (a pipe shared with the parent would hand a byte to
    whichever process reads first)."""
    inherited, _hubs.waker = _hubs.waker, None
    if inherited is None:
        return
    inherited.let_go_in_child()
    try:
        prepare_hand_off()
    except Exception as error:  # no fds left, say: the handler then delivers where it runs
        logger.debug("otel_greenflash: no SIGTERM hand-off in the forked child: %s", error)
