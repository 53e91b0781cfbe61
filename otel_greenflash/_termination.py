"""Ending the process: deliver (or spool) what is held before SIGTERM or ``os._exit`` ends it.

Three ways a worker process ends without running ``atexit`` (where the SDK shuts processors
down) are covered here:

* **SIGTERM with the default disposition** (a plain script in a container, a process whose
  server restored the default and re-raised): the handler delivers within
  ``termination_timeout_seconds``, restores the default and raises the signal again, so the
  process still ends by SIGTERM.
* **SIGTERM while a server's own handler was installed first** (an app imported under
  uvicorn's ``capture_signals``): the server's handler is called at once; SIGTERM is then
  blocked on the main thread, so the server's restore-and-re-raise is held until ``atexit``,
  where held events are delivered before the signal is let through.
* **``os._exit``** (RQ's work horse, ``multiprocessing`` fork children, Celery's pool children)
  and Celery's ``worker_process_shutdown``: held events are delivered first.

Nothing here replaces a handler installed after ours; the handler is installed from the main
thread only and chains to the one it found.
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn, Protocol

from ._logging import logger

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Terminable(Protocol):
    """What the process end needs from a processor."""

    def holds_events(self) -> bool: ...

    def shutdown(self, timeout_millis: int = 30000) -> None: ...


_lock = threading.Lock()
_sources: list[Callable[[], Sequence[Terminable]]] = []
_budget_seconds = 5.0
_flush_sdk_first = False
_deferred_signals: set[int] = set()
_real_exit: Callable[[int], NoReturn] = os._exit
_CAN_BLOCK = hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigpending")


def watch(
    processors: Callable[[], Sequence[Terminable]],
    *,
    handle_sigterm: bool,
    budget_seconds: float,
    fed_by_sdk_batches: bool = False,
) -> None:
    """Make the process end deliver what ``processors()`` hold (called by each processor)."""
    global _budget_seconds, _flush_sdk_first
    with _lock:
        if processors not in _sources:
            _sources.append(processors)
        _budget_seconds = budget_seconds
        _flush_sdk_first = _flush_sdk_first or fed_by_sdk_batches
    if not handle_sigterm:
        return
    _install_once()
    _hook_os_exit()
    _hook_celery_if_imported()


# -- SIGTERM --------------------------------------------------------------------------------


class ChainedSigtermHandler:
    """Delivers held events, then lets the disposition found at installation act."""

    def __init__(self, previous: SignalHandler) -> None:
        self.previous = previous

    def __repr__(self) -> str:
        return f"<otel_greenflash SIGTERM handler chaining to {self.previous!r}>"

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous
        if callable(previous):
            # A server or the application handles the signal: let it start its graceful
            # shutdown now; if it later restores the default and re-raises, the re-raised
            # signal waits (blocked on this thread) until atexit has delivered.
            _defer(signum)
            previous(signum, frame)
            return
        deliver_before_exit(f"signal {signal.Signals(signum).name}")
        if signal.getsignal(signum) is self:
            signal.signal(signum, signal.SIG_DFL)
        _unblock(signum)
        signal.raise_signal(signum)


_installed = False
"""Installed once in this process (or its parent): a handler set since then is never replaced."""


def _install_once() -> None:
    global _installed
    if not _installed:
        _installed = install_sigterm_handler()


def install_sigterm_handler() -> bool:
    """Install the SIGTERM handler now, chaining to the current one; True when it is in place.

    Processors do this when they start; call it yourself where a server resets SIGTERM after
    the processor started (gunicorn ``--preload`` with uvicorn workers: ``post_worker_init``).
    Only from the main thread; a no-op when SIGTERM is ignored or handled outside Python.
    """
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        try:
            current = signal.getsignal(signal.SIGTERM)
            if isinstance(current, ChainedSigtermHandler):
                return True
            # None: a handler installed outside Python, which cannot be chained to.
            if current is None or current == signal.SIG_IGN:
                return False
            signal.signal(signal.SIGTERM, ChainedSigtermHandler(current))
            return True
        except (ValueError, OSError) as error:  # not the main interpreter, or no signals
            logger.debug("otel_greenflash: no SIGTERM handler installed: %s", error)
            return False


def _defer(signum: int) -> None:
    if not _CAN_BLOCK:
        return
    _deferred_signals.add(signum)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})


def _unblock(signum: int) -> None:
    if _CAN_BLOCK and signum in _deferred_signals:
        _deferred_signals.discard(signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})


@atexit.register
def _release_deferred_signals() -> None:
    """At exit: a re-raised SIGTERM is pending only after delivery (then it ends the process)."""
    if not _deferred_signals:
        return
    if any(signum in _deferred_signals for signum in signal.sigpending()):
        deliver_before_exit("signal SIGTERM (re-raised by the server)")
    for signum in list(_deferred_signals):
        _unblock(signum)


def _forget_deferred_in_child() -> None:
    """A forked child starts with the parent thread's mask: never keep SIGTERM blocked there."""
    for signum in list(_deferred_signals):
        _unblock(signum)


# -- os._exit and Celery ------------------------------------------------------------------


def _exit_after_delivering(status: int) -> NoReturn:
    try:
        deliver_before_exit("os._exit", only_if_holding=True)
    finally:
        _real_exit(status)


_fork_hook_registered = False


def _hook_os_exit() -> None:
    """``os._exit`` delivers held events first, in this process and in the children it forks.

    Worker pools end processes this way (RQ's work horse, which often imports the library only
    after it was forked; ``multiprocessing`` and billiard children): atexit never runs there.
    """
    global _fork_hook_registered
    with _lock:
        if os._exit is _real_exit:
            os._exit = _exit_after_delivering
        if _fork_hook_registered or not hasattr(os, "register_at_fork"):
            return
        _fork_hook_registered = True
    os.register_at_fork(after_in_child=_in_forked_child)


def _in_forked_child() -> None:
    _forget_deferred_in_child()
    _hook_celery_if_imported()


def _hook_celery_if_imported() -> None:
    """Celery's pool children leave without atexit: deliver on ``worker_process_shutdown``."""
    if "celery" not in sys.modules:
        return
    try:
        worker_process_shutdown = importlib.import_module("celery.signals").worker_process_shutdown
    except Exception:  # an unrelated module named celery, or a broken install
        return
    worker_process_shutdown.connect(
        _on_celery_process_shutdown, weak=False, dispatch_uid="otel_greenflash"
    )


def _on_celery_process_shutdown(*args: object, **kwargs: object) -> None:
    deliver_before_exit("Celery worker_process_shutdown")


# -- delivery ---------------------------------------------------------------------------------


def held_processors() -> list[Terminable]:
    with _lock:
        sources = list(_sources)
    found: list[Terminable] = []
    for source in sources:
        found.extend(source())
    return found


def deliver_before_exit(cause: str, *, only_if_holding: bool = False) -> bool:
    """Shut down every processor within the budget, on a thread of its own (the caller may be
    a signal handler that interrupted code holding a lock the shutdown needs). True when done
    within the budget."""
    processors = held_processors()
    if only_if_holding and not _flush_sdk_first:
        processors = [processor for processor in processors if processor.holds_events()]
    if not processors:
        return True
    budget = _budget_seconds
    started = time.monotonic()

    def shut_down_all() -> None:
        if _flush_sdk_first:  # at most half the budget: the rest is for delivering
            _flush_sdk_tracer_provider(budget / 2)
        for processor in processors:
            remaining = budget - (time.monotonic() - started)
            processor.shutdown(max(0, int(remaining * 1000)))

    worker = threading.Thread(target=shut_down_all, name="otel-greenflash-exit", daemon=True)
    worker.start()
    worker.join(budget + 0.5)
    if worker.is_alive():
        logger.warning(
            "otel_greenflash: %s: delivering held business events took longer than %.1f s "
            "(GREENFLASH_TERMINATION_TIMEOUT); the process ends now",
            cause,
            budget,
        )
        return False
    logger.debug("otel_greenflash: %s: held events handled before exit", cause)
    return True


def _flush_sdk_tracer_provider(budget_seconds: float) -> None:
    """The exporter's events may still sit in the SDK's batch processor: flush it into us."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if callable(force_flush):
        try:
            force_flush(int(budget_seconds * 1000))
        except Exception:
            logger.debug("otel_greenflash: the tracer provider's force_flush failed", exc_info=True)
