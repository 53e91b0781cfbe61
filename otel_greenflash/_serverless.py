"""Per-invocation flush for serverless handlers (AWS Lambda and the like)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from ._pipeline.registry import active_pipelines

F = TypeVar("F", bound=Callable[..., Any])


def flush(timeout_millis: int = 5000) -> bool:
    """Flush every active pipeline (all processors and exporters) within ``timeout_millis``
    in total."""
    deadline = time.monotonic() + timeout_millis / 1000
    flushed = True
    for pipeline in active_pipelines():
        remaining = max(0, int((deadline - time.monotonic()) * 1000))
        flushed = pipeline.force_flush(remaining) and flushed
    return flushed


@overload
def flush_after(handler: F) -> F: ...


@overload
def flush_after(*, timeout_millis: int = 5000) -> Callable[[F], F]: ...


def flush_after(handler: F | None = None, *, timeout_millis: int = 5000) -> Any:
    """Decorate a handler so business events are delivered before each invocation returns.

    Between invocations a serverless runtime freezes the process, and with it the background
    threads; flushing at the end of each call keeps events from waiting (or being lost) until
    the next one. Works on sync and async handlers; the flush never raises.
    """

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await function(*args, **kwargs)
                finally:
                    flush(timeout_millis)

            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            finally:
                flush(timeout_millis)

        return cast(F, wrapper)

    return decorate(handler) if handler is not None else decorate
