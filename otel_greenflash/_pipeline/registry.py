"""The pipelines of this process: shared by intakes with equal settings, found by the
helpers and the end of the process, and restarted in forked children."""

from __future__ import annotations

import os
import threading

from .._config import GreenflashConfig
from .._deliver.engine import ErrorCallback
from .._deliver.transport import Transport
from .._intake_kind import IntakeKind
from .._lifecycle import fork as _fork
from .._lifecycle import termination as _termination
from .._stats import DropCallback
from .pipeline import EventPipeline

_getpid = os.getpid


class _Pipelines:
    """The pipelines of this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: list[EventPipeline] = []
        """Pipelines in creation order; shut-down ones are pruned when the next one is
        created."""
        self.held_for_fork: list[threading.Lock] = []
        """Spool locks held by :func:`before_fork` until the fork is over."""


_pipelines = _Pipelines()


def pipeline_for(
    config: GreenflashConfig,
    kind: IntakeKind,
    *,
    on_error: ErrorCallback | None = None,
    on_drop: DropCallback | None = None,
    transport: Transport | None = None,
) -> EventPipeline:
    """The pipeline an intake of ``kind`` feeds: a live one with equal settings and the same
    callbacks and transport that has no intake of this kind yet (a span processor and a log
    record processor share one), else a new one. The intake is attached to it."""
    with _pipelines.lock:
        _pipelines.live[:] = [
            pipeline for pipeline in _pipelines.live if not pipeline.shutdown_finished
        ]
        for pipeline in _pipelines.live:
            if (
                pipeline.config == config
                and pipeline.on_error is on_error
                and pipeline.on_drop is on_drop
                and pipeline.transport is transport
                and not pipeline.has_intake(kind)
                and not pipeline.is_shutdown
                and pipeline.pid == _getpid()
            ):
                break
        else:
            pipeline = EventPipeline(
                config,
                on_error=on_error,
                on_drop=on_drop,
                transport=transport,
                on_stopped=_after_stop,
            )
            _pipelines.live.append(pipeline)
    pipeline.attach(kind)
    _termination.watch(
        active_pipelines,
        handle_sigterm=config.handle_sigterm,
        budget_seconds=config.termination_timeout_seconds,
        fed_by_sdk_batches=kind.fed_by_sdk_batches,
        shutting_down=shutdown_under_way,
    )
    return pipeline


def _after_stop() -> None:
    _termination.after_shutdown(any_left=bool(active_pipelines()))


def active_pipelines() -> list[EventPipeline]:
    """Pipelines of this process not shut down (a lock-free snapshot: signal-handler safe)."""
    return [pipeline for pipeline in tuple(_pipelines.live) if not pipeline.is_shutdown]


def span_seen_start(span_id: int) -> bool | None:
    """Whether a span processor of a live pipeline saw the span start; None when no live
    pipeline has a span processor (only exporters, which read finished spans). ``track()``'s
    hot path: no list is built."""
    watched = None
    for pipeline in tuple(_pipelines.live):
        if pipeline.is_shutdown or not pipeline.linker.tracks_open_roots:
            continue
        if span_id in pipeline.linker.live.spans:
            return True
        watched = False
    return watched


def shutdown_under_way() -> bool:
    """True while a pipeline is shutting down (e.g. the SDK's atexit hook is delivering)."""
    return any(
        pipeline.is_shutdown and not pipeline.shutdown_finished
        for pipeline in tuple(_pipelines.live)
    )


def before_fork() -> None:
    """No fork in the middle of a spool transaction: the child must find the file consistent."""
    for pipeline in active_pipelines():
        spool = pipeline.feed.spool
        if spool is not None:
            spool._lock.acquire()
            _pipelines.held_for_fork.append(spool._lock)


def after_fork_in_parent() -> None:
    while _pipelines.held_for_fork:
        _pipelines.held_for_fork.pop().release()


def after_fork_in_child() -> None:
    """In a forked child: every live pipeline starts again with threads of its own."""
    _pipelines.held_for_fork.clear()  # the child never uses the parent's spools (or their locks)
    for pipeline in active_pipelines():
        pipeline.restart_after_fork()


_fork.hand_in_pipelines(
    before=before_fork,
    after_in_parent=after_fork_in_parent,
    after_in_child=after_fork_in_child,
)
