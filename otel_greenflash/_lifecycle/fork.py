"""Fork: the one ``os.register_at_fork`` of the library, and every piece of process state it
locks before a fork and resets in the child, in order.

:data:`STEPS` runs top to bottom after the fork (in the parent and in the child) and bottom to
top before it, so the lock taken first is released last. Each module keeps its own state and
says what to do with it (``before_fork``, ``after_fork_in_parent``, ``after_fork_in_child``);
this module only decides the order.

Imports stay one way: this module imports the pieces beneath it. The pipelines sit above it
(``_pipeline.registry``), so they hand their step in when they are imported — as they hand
their list to :func:`.termination.watch` — instead of being imported from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .. import _green
from .._deliver import http as _http
from .._lane import spool_adoption as _spool_adoption
from .._lane import spool_files as _spool_files
from .._logging import logger
from . import termination as _termination

Hook = Callable[[], None]


@dataclass
class ForkStep:
    """What one piece of process state needs around a fork (None: nothing)."""

    name: str
    before: Hook | None = None
    after_in_parent: Hook | None = None
    after_in_child: Hook | None = None


PIPELINES = ForkStep("live pipelines: spool transactions held; restarted in the child")
"""Filled by ``_pipeline.registry`` (above this module) through :func:`hand_in_pipelines`."""

STEPS: tuple[ForkStep, ...] = (
    ForkStep(
        "eventlet hand-off pipe: a pipe of the child's own",
        after_in_child=_green.after_fork_in_child,
    ),
    ForkStep("shared TLS context: a new lock", after_in_child=_http.after_fork_in_child),
    ForkStep(
        "SIGTERM handling: unblocked, Celery hooked again",
        after_in_child=_termination.after_fork_in_child,
    ),
    ForkStep(
        "spool lock files: none opened across the fork; the parent's closed in the child",
        before=_spool_files.before_fork,
        after_in_parent=_spool_files.after_fork_in_parent,
        after_in_child=_spool_files.after_fork_in_child,
    ),
    ForkStep(
        "spool adoption scans: the parent's forgotten in the child",
        after_in_child=_spool_adoption.after_fork_in_child,
    ),
    PIPELINES,
)
"""Every piece of process state a fork touches, in the order the after-fork steps run."""


def hand_in_pipelines(*, before: Hook, after_in_parent: Hook, after_in_child: Hook) -> None:
    """The pipelines' step (called once, by ``_pipeline.registry`` at import)."""
    PIPELINES.before = before
    PIPELINES.after_in_parent = after_in_parent
    PIPELINES.after_in_child = after_in_child


def _run(hooks: list[tuple[str, Hook | None]]) -> None:
    """Run each hook; one that fails is logged and the others still run (as separate
    ``register_at_fork`` callbacks would)."""
    for name, hook in hooks:
        if hook is None:
            continue
        try:
            hook()
        except Exception as error:
            logger.warning("otel_greenflash: fork step failed (%s): %r", name, error)


def before_fork() -> None:
    _run([(step.name, step.before) for step in reversed(STEPS)])


def after_fork_in_parent() -> None:
    _run([(step.name, step.after_in_parent) for step in STEPS])


def after_fork_in_child() -> None:
    _run([(step.name, step.after_in_child) for step in STEPS])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=before_fork,
        after_in_parent=after_fork_in_parent,
        after_in_child=after_fork_in_child,
    )
