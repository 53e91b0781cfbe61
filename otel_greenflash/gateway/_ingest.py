"""Ingest: each HTTP or gRPC request handled off the event loop (a slot, one deadline, decoding),
then given to the gateway's intake (:mod:`._intake`, which feeds the pipeline).

Decoding and :meth:`DurableIntake.accept` (which returns once the batch's business events are
in the spool) run on a small thread pool. A request needs one of ``workers`` slots before its
body is read (HTTP) or its message is received (gRPC); a body is freed once decoded, and one
request is decoded at a time. So the bodies held are those of at most ``workers`` requests
(each copied once or twice for a moment while it is received and decoded), whatever the
number of requests waiting. Each request has one deadline, ``--request-timeout`` after it
arrived (or the gRPC client's own deadline, if sooner), for everything: waiting for a slot,
receiving its body, and its events reaching the spool; past it the answer is 503 /
UNAVAILABLE with a retry delay, so a slow or stalled upload holds a slot that long at most.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from .._records import LinkingSpan
from ._decode import (
    MalformedRequestError,
    RequestTooLargeError,
    decode_spans,
    log_records_from_request,
)
from ._intake import Acceptance, NotAccepted
from ._metrics import GatewayMetrics

logger = logging.getLogger("otel_greenflash.gateway")

SHUTDOWN_RETRY_SECONDS = 1.0
INTERNAL_ERROR_RETRY_SECONDS = 5.0
BUSY_RETRY_SECONDS = 1.0
"""The retry delay suggested when no slot freed up, or a body did not arrive, in time."""


class Intake(Protocol):
    """What the gateway needs of :class:`otel_greenflash.gateway._intake.DurableIntake`."""

    def accept(
        self,
        spans: Sequence[ReadableSpan | LinkingSpan],
        log_records: Sequence[ReadableLogRecord],
        timeout_seconds: float,
    ) -> Acceptance: ...


class UnavailableError(Exception):
    """Not taken: answer 503 / UNAVAILABLE, asking the client to retry after a delay."""

    def __init__(self, reason: str, retry_after_seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request taken in: ``items`` spans or log records, ``invalid`` of its events rejected,
    carried by ``rejected`` of its items."""

    items: int
    events: int
    invalid: int
    message: str
    rejected: int = 0

    @property
    def partial_message(self) -> str:
        """The OTLP ``partial_success.error_message``."""
        return f"{self.invalid} business event(s) invalid, not sent: {self.message or 'see log'}"


class Ingest:
    """Runs decode + accept for each request on the pool and counts the outcome."""

    def __init__(
        self,
        intake: Intake,
        metrics: GatewayMetrics,
        *,
        workers: int,
        timeout_seconds: float,
        linking_keys: Collection[str],
        llm_call_keys: Collection[str] = (),
    ) -> None:
        self._intake = intake
        self._linking_keys = frozenset(linking_keys)
        self._llm_call_keys = frozenset(llm_call_keys)
        """The GenAI marker keys with conversation capture on (spans with one are decoded in
        full); empty otherwise."""
        self.metrics = metrics
        self.timeout_seconds = timeout_seconds
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="greenflash-gateway")
        self._running: set[concurrent.futures.Future[Accepted]] = set()
        self._slots = asyncio.Semaphore(workers)
        self._decoding = threading.Lock()
        """One request decoded at a time: decoding holds the GIL anyway, and a request's
        decoded form (several times its size, for a moment) then exists once, not per slot."""
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False

    def liveness(self) -> tuple[bool, str]:
        """False (with the reason) when the intake cannot recover without a restart."""
        check = getattr(self._intake, "liveness", None)
        return check() if check is not None else (True, "ok")

    def deadline(self, remaining: float | None = None) -> float:
        """When (``time.monotonic()``) a request arriving now must be answered by: the
        request timeout, or ``remaining`` seconds (the client's own deadline) if sooner."""
        timeout = self.timeout_seconds
        if remaining is not None:
            timeout = min(timeout, remaining)
        return time.monotonic() + timeout

    @contextlib.asynccontextmanager
    async def request(self, deadline: float) -> AsyncIterator[None]:
        """One request being taken: counted until it ends (SIGTERM waits for it), holding a
        slot. :class:`UnavailableError` when shutting down, or when no slot frees up before
        ``deadline``."""
        if self.closing:
            raise UnavailableError("the gateway is shutting down", SHUTDOWN_RETRY_SECONDS)
        self._active += 1
        self._idle.clear()
        try:
            if not await _acquire(self._slots, deadline):
                raise UnavailableError(
                    f"the gateway is busy: no worker was free within {self.timeout_seconds:g} s",
                    BUSY_RETRY_SECONDS,
                )
            try:
                yield
            finally:
                self._slots.release()
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def traces(
        self, parse: Callable[[], ExportTraceServiceRequest], deadline: float
    ) -> Accepted:
        """Decode with ``parse`` (raises MalformedRequestError) and accept the spans."""

        def work() -> Accepted:
            with self._decoding:
                decoded = decode_spans(
                    parse(), linking_keys=self._linking_keys, llm_call_keys=self._llm_call_keys
                )
            accepted = self._intake.accept(decoded.items, (), _seconds_until(deadline))
            return _accepted(decoded.count, accepted)

        return await self._run(work)

    async def logs(
        self, parse: Callable[[], ExportLogsServiceRequest], deadline: float
    ) -> Accepted:
        """Decode with ``parse`` and accept the log records."""

        def work() -> Accepted:
            with self._decoding:
                records = log_records_from_request(parse())
            accepted = self._intake.accept((), records, _seconds_until(deadline))
            return _accepted(len(records), accepted)

        return await self._run(work)

    async def _run(self, work: Callable[[], Accepted]) -> Accepted:
        running = self._executor.submit(work)
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        try:
            return await asyncio.wrap_future(running)
        except NotAccepted as refusal:
            raise UnavailableError(refusal.reason, refusal.retry_after_seconds) from None
        except (MalformedRequestError, RequestTooLargeError):
            raise  # the caller answers 400 / INVALID_ARGUMENT or 413 / RESOURCE_EXHAUSTED
        except Exception as error:  # never 500: the client would drop data it could resend
            frames = "".join(traceback.format_tb(error.__traceback__))
            logger.error("internal error taking a request: %s\n%s", type(error).__name__, frames)
            raise UnavailableError("internal error", INTERNAL_ERROR_RETRY_SECONDS) from None

    def close(self) -> None:
        """Refuse new requests (503); those already being taken finish."""
        self.closing = True

    async def finished(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the requests being taken; False if some are not
        done by then."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            return False
        return True

    async def work_done(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the pool's work (each piece ends by its request's
        deadline, even when the request was given up), then let the pool go; False if some
        was still running."""
        running = set(self._running)
        if running:
            await asyncio.to_thread(concurrent.futures.wait, running, max(0.0, timeout))
        self._executor.shutdown(wait=False)
        return not any(not work.done() for work in running)


def _seconds_until(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


class Payload:
    """A request body, handed over once: after :meth:`take` only the taker holds it, so it
    is freed as soon as it is decoded (not when the request ends)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def take(self) -> bytes:
        data, self._data = self._data, b""
        return data


async def _acquire(semaphore: asyncio.Semaphore, deadline: float) -> bool:
    """Take ``semaphore`` unless ``deadline`` (``time.monotonic()``) passes first. Never
    leaves it taken when it returns False or is cancelled."""
    if not semaphore.locked():
        await semaphore.acquire()  # free: returns at once
        return True
    waiter = asyncio.ensure_future(semaphore.acquire())
    try:
        await asyncio.wait((waiter,), timeout=_seconds_until(deadline))
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled():
            semaphore.release()
        else:
            waiter.cancel()
        raise
    if waiter.done():
        return True  # acquire() never fails otherwise
    waiter.cancel()  # a cancelled acquire() takes no slot
    return False


def _accepted(items: int, acceptance: Acceptance) -> Accepted:
    return Accepted(
        items, acceptance.events, acceptance.invalid, acceptance.message, acceptance.rejected_items
    )
