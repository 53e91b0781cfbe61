"""Delivering what the process holds when it is about to end, within a bounded time.

Used by the SIGTERM handler (``_termination``), by ``os._exit`` (RQ's work horse,
``multiprocessing`` and billiard children, which skip atexit) and by Celery's
``worker_process_shutdown``. Nothing here takes a lock a signal handler could be holding.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

from .._green import library_thread
from .._intake_kind import IntakeKind
from .._logging import logger


class Terminable(Protocol):
    """What the end of the process needs from a processor."""

    def holds_events(self) -> bool: ...

    def shutdown(self, timeout_millis: int = 30000) -> None: ...


class _Watched:
    """What the end of this process delivers, and within what budget."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Sequence[Terminable]]] = []
        self.budget_seconds = 5.0
        self.fed_by_sdk_batches = False


_watched = _Watched()
_real_exit: Callable[[int], NoReturn] = os._exit


def register(
    processors: Callable[[], Sequence[Terminable]],
    *,
    budget_seconds: float,
    fed_by_sdk_batches: bool = False,
) -> None:
    """Deliver what ``processors()`` hold when the process ends (appends are atomic)."""
    if processors not in _watched.sources:
        _watched.sources.append(processors)
    _watched.budget_seconds = budget_seconds
    _watched.fed_by_sdk_batches = _watched.fed_by_sdk_batches or fed_by_sdk_batches


def live_processors() -> list[Terminable]:
    """Every processor not shut down yet (a lock-free snapshot: safe in a signal handler)."""
    found: list[Terminable] = []
    for source in tuple(_watched.sources):
        found.extend(source())
    return found


def deliver_before_exit(cause: str, *, only_if_holding: bool = False) -> bool:
    """Shut every processor down within the budget; True when that finished in time.

    The work runs on a thread of its own, so a caller that interrupted code holding a lock
    the shutdown needs (a signal handler) still returns after the budget. Where no thread can
    be started (interpreter shutdown on Python 3.12, a pids limit), it runs inline.
    """
    budget = _watched.budget_seconds
    batches = _sdk_batches_feeding_exporters() if _watched.fed_by_sdk_batches else []
    if only_if_holding:
        batches = [batch for batch in batches if _queued(batch)]
    processors = live_processors()
    if only_if_holding and not batches:
        processors = [processor for processor in processors if processor.holds_events()]
    if not processors and not batches:
        return True
    started = time.monotonic()

    def shut_down_all() -> None:
        if batches:  # at most half the budget: the rest is for delivering
            _run_bounded(lambda: _flush_batches(batches), budget / 2)
        for processor in processors:
            remaining = budget - (time.monotonic() - started)
            processor.shutdown(max(0, int(remaining * 1000)))

    if _run_bounded(shut_down_all, budget + 0.5):
        logger.debug("otel_greenflash: %s: held events handled before exit", cause)
        return True
    logger.warning(
        "otel_greenflash: %s: delivering held business events took longer than %.1f s "
        "(GREENFLASH_TERMINATION_TIMEOUT); the process ends now",
        cause,
        budget,
    )
    return False


def _run_bounded(work: Callable[[], None], seconds: float) -> bool:
    """Run ``work`` on a daemon thread and wait at most ``seconds``; True when it finished."""
    thread = library_thread(work, "otel-greenflash-exit")
    try:
        thread.start()
    except RuntimeError:  # no new threads now: do it here, bounded by the shutdown timeouts
        work()
        return True
    thread.join(seconds)
    return not thread.is_alive()


# -- the SDK's batch processors in front of our exporters ------------------------------------


def _sdk_batches_feeding_exporters() -> list[Any]:
    """The SDK batch processors whose exporter is one of ours, found on the global tracer
    and logger providers (their queues hold records meant for us when the process ends)."""
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    spans = getattr(trace.get_tracer_provider(), "_active_span_processor", None)
    logs = getattr(get_logger_provider(), "_multi_log_record_processor", None)
    candidates = [
        *getattr(spans, "_span_processors", ()),
        *getattr(logs, "_log_record_processors", ()),
    ]
    found = []
    for processor in candidates:
        exporter = getattr(getattr(processor, "_batch_processor", None), "_exporter", None)
        kind = getattr(type(exporter), "_kind", None)
        if isinstance(kind, IntakeKind) and kind.fed_by_sdk_batches:
            found.append(processor)
    return found


def _queued(processor: Any) -> bool:
    return bool(len(getattr(processor._batch_processor, "_queue", ())))


def _flush_batches(batches: list[Any]) -> None:
    for batch in batches:
        try:
            batch.force_flush()
        except Exception:
            logger.debug("otel_greenflash: a batch processor's force_flush failed", exc_info=True)


# -- os._exit and Celery ------------------------------------------------------------------


def _exit_after_delivering(status: int) -> NoReturn:
    try:
        deliver_before_exit("os._exit", only_if_holding=True)
    finally:
        _real_exit(status)


def hook_os_exit() -> None:
    """``os._exit`` delivers held events first, in this process and the children it forks.

    Worker pools end processes this way (RQ's work horse, which often imports the library only
    after it was forked; ``multiprocessing`` and billiard children): atexit never runs there.
    """
    if os._exit is _real_exit:
        os._exit = _exit_after_delivering


def hook_celery_if_imported() -> None:
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
