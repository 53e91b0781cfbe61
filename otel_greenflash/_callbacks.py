"""The application's ``on_error`` and ``on_drop`` callbacks run on the pipeline's own threads;
what they call back into the pipeline must not wait for those threads or feed them forever."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._logging import logger

_running = threading.local()


@contextmanager
def calling_back(name: str) -> Iterator[None]:
    """Mark the current thread as running the application's callback ``name``."""
    previous: str | None = getattr(_running, "name", None)
    _running.name = name
    try:
        yield
    finally:
        _running.name = previous


def callback_running() -> str | None:
    """The name of the application callback this thread is running, if any."""
    name: str | None = getattr(_running, "name", None)
    return name


def call_safely(name: str, callback: Callable[..., object], *arguments: object) -> None:
    """Run an application callback; an exception in it is logged, never raised."""
    try:
        with calling_back(name):
            callback(*arguments)
    except Exception:
        logger.exception("otel_greenflash %s callback raised", name)
