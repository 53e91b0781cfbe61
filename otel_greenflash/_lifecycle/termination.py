"""SIGTERM: deliver (or spool) what is held before the process ends, then end as it would have.

* **The default disposition was in place** (a plain script in a container; a server that saved
  our handler and calls it again when it re-raises): held events are delivered within
  ``termination_timeout_seconds``, the default is restored and the signal raised again, so
  the process still ends by SIGTERM.
* **A server's or the application's handler was there first** (an app imported inside
  uvicorn's ``capture_signals``): that handler runs at once; SIGTERM is then blocked on the
  main thread, so the server's restore-and-re-raise stays pending until held events are
  delivered — at interpreter exit, or when the last processor has shut down on the main
  thread — and then ends the process. A daemon thread with SIGTERM unblocked stays, so later
  SIGTERMs sent to the process are still handled.
* **SIGTERM during a shutdown already under way** (the SDK's atexit hook): that shutdown
  finishes first, then the signal is raised again and ends the process.

Under gevent or eventlet the handler may run in their hub, where nothing may block: it hands
delivery to a new greenlet there (``_green``).

The handler is installed once per process, from the main thread, chaining to the handler it
finds; a handler installed later is never replaced. ``os._exit`` and Celery's pool children are
covered by ``_exit_delivery``.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from .._green import (
    Joinable,
    hand_off,
    in_spawned_greenlet,
    on_main_thread,
    os_lock,
    prepare_hand_off,
    start_os_thread,
)
from .._logging import logger
from . import exit_delivery as _exit_delivery
from .exit_delivery import Terminable, deliver_before_exit

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_CAN_BLOCK = hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigpending")


def _never() -> bool:
    return False


class _Termination:
    """This process's SIGTERM handling."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installed = False
        """Installed once in this process (or its parent): a handler set since then is never
        replaced."""
        self.terminating = False
        self.hooks_wanted = False
        self.deferred: set[int] = set()
        """Signals blocked on the main thread until held events are out."""
        self.held_back: set[int] = set()
        """Signals that interrupted a shutdown: raised again once it is over."""
        self.sink: Joinable | None = None
        self.shutdown_under_way: Callable[[], bool] = _never
        """True while a pipeline is shutting down (given by :func:`watch`)."""


_state = _Termination()


def _shutting_down() -> bool:
    return _state.shutdown_under_way()


def watch(
    processors: Callable[[], Sequence[Terminable]],
    *,
    handle_sigterm: bool,
    budget_seconds: float,
    fed_by_sdk_batches: bool = False,
    shutting_down: Callable[[], bool] = _never,
) -> None:
    """Make the end of the process deliver what ``processors()`` hold (called by each one);
    ``shutting_down()`` says when a shutdown is already delivering."""
    _state.shutdown_under_way = shutting_down
    _exit_delivery.register(
        processors, budget_seconds=budget_seconds, fed_by_sdk_batches=fed_by_sdk_batches
    )
    if not handle_sigterm:
        return
    _state.hooks_wanted = True
    _install_once()
    with _state.lock:
        _exit_delivery.hook_os_exit()
    _exit_delivery.hook_celery_if_imported()


class ChainedSigtermHandler:
    """Delivers held events, then lets the disposition found at installation act."""

    def __init__(self, previous: SignalHandler, shutting_down: Callable[[], bool]) -> None:
        self.previous = previous
        self._shutting_down = shutting_down

    def __repr__(self) -> str:
        return f"<otel_greenflash SIGTERM handler chaining to {self.previous!r}>"

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if _state.terminating:
            return  # a second SIGTERM while delivering: the first one ends the process
        previous = self.previous
        if callable(previous):
            # A server or the application handles the signal: its graceful shutdown starts
            # now; a restore-and-re-raise it does later waits until held events are out.
            _defer(signum)
            previous(signum, frame)
            return
        if self._shutting_down():
            _state.held_back.add(signum)  # interrupted a shutdown (atexit): raised again after it
            return
        _state.terminating = True
        # gevent and eventlet run handlers in their hub, where nothing may block, or in
        # whichever green thread runs: the delivery loop's own, say, which would then wait for
        # itself. There a green thread of its own delivers; in the main greenlet (busy, or
        # in a blocking call) the handler delivers and ends the process itself.
        if in_spawned_greenlet() and hand_off(lambda: _deliver_and_end(signum)):
            return
        _deliver_and_end(signum)


def _deliver_and_end(signum: int) -> None:
    deliver_before_exit(f"signal {signal.Signals(signum).name}")
    # The default, even when a handler installed later called us as its previous one:
    # chaining to us asks for what we chain to, the process ending by the signal.
    signal.signal(signum, signal.SIG_DFL)
    _unblock(signum)
    signal.raise_signal(signum)


def _install_once() -> None:
    if not _state.installed:
        _state.installed = install_sigterm_handler()


def install_sigterm_handler() -> bool:
    """Install the SIGTERM handler now, chaining to the current one; True when it is in place.

    Processors do this when they start; call it yourself where a server resets SIGTERM after
    the processor started (gunicorn ``--preload`` with uvicorn workers: ``post_worker_init``).
    Only from the main thread; a no-op when SIGTERM is ignored or handled outside Python.
    """
    if not hasattr(signal, "SIGTERM") or not on_main_thread():
        return False
    with _state.lock:
        try:
            current = signal.getsignal(signal.SIGTERM)
            if isinstance(current, ChainedSigtermHandler):
                return True
            # None: a handler installed outside Python, which cannot be chained to.
            if current is None or current == signal.SIG_IGN:
                return False
            signal.signal(signal.SIGTERM, ChainedSigtermHandler(current, _shutting_down))
            prepare_hand_off()
            return True
        except (ValueError, OSError) as error:  # not the main interpreter, or no signals
            logger.debug("otel_greenflash: no SIGTERM handler installed: %s", error)
            return False


# -- holding a re-raised SIGTERM back ---------------------------------------------------------


def _defer(signum: int) -> None:
    """Block ``signum`` on this (the main) thread; keep one thread that still receives it."""
    if not _CAN_BLOCK:
        return
    if _state.sink is None or not _state.sink.is_alive():
        # Started before the block, so its mask stays open; an OS thread even under
        # gevent/eventlet (a greenlet shares the main thread's mask), whose start does not
        # wait: this may run in gevent's hub.
        forever = os_lock()
        forever.acquire()
        try:
            _state.sink = start_os_thread(forever.acquire, "otel-greenflash-signals")
        except RuntimeError:
            return  # without it a process-wide SIGTERM could stay pending: do not block
    _state.deferred.add(signum)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})


def _unblock(signum: int) -> None:
    if _CAN_BLOCK and signum in _state.deferred:
        _state.deferred.discard(signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})


def release_deferred(*, deliver: bool) -> None:
    """Let a held-back SIGTERM through (on the main thread), after delivering if asked; a
    pending one then ends the process."""
    if not _state.deferred or not on_main_thread():
        return
    try:
        if deliver and any(signum in _state.deferred for signum in signal.sigpending()):
            deliver_before_exit("signal SIGTERM (raised again by the server)")
    finally:
        for signum in list(_state.deferred):
            _unblock(signum)


def after_shutdown(any_left: bool) -> None:
    """A processor finished shutting down; when it was the last, nothing is held any more:
    let held-back signals act."""
    if any_left:
        return
    release_deferred(deliver=False)
    while _state.held_back:
        signum = _state.held_back.pop()
        if on_main_thread():
            signal.raise_signal(signum)
        else:
            os.kill(os.getpid(), signum)


@atexit.register
def _release_at_exit() -> None:
    release_deferred(deliver=True)
    after_shutdown(any_left=False)


def after_fork_in_child() -> None:
    """In a forked child (see :mod:`.fork`): it starts with the forking thread's mask, never
    keep SIGTERM blocked."""
    _state.sink = None
    _state.terminating = False
    _state.held_back.clear()
    for signum in list(_state.deferred):
        _unblock(signum)
    if _state.hooks_wanted:
        _exit_delivery.hook_celery_if_imported()
