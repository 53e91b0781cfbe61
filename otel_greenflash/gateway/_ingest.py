"""Decode a request and hand it to the pipeline, off the event loop; shared by HTTP and gRPC.

Decoding and :meth:`DurableIntake.accept` (which returns once the batch's business events are
in the spool) run on a small thread pool; at most that many requests are decoded or waited for
at once, and the HTTP server reads a body only once it has a slot, so memory is bounded by
``workers`` times the largest request.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from .._durable_intake import Acceptance, LinkingSpan, NotAccepted
from ._decode import MalformedRequestError, decode_spans, log_records_from_request
from ._metrics import GatewayMetrics

logger = logging.getLogger("otel_greenflash.gateway")

SHUTDOWN_RETRY_SECONDS = 1.0
INTERNAL_ERROR_RETRY_SECONDS = 5.0


class Intake(Protocol):
    """What the gateway needs of :class:`otel_greenflash._durable_intake.DurableIntake`."""

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
    """A request taken in: ``items`` spans or log records, ``invalid`` of its events rejected."""

    items: int
    events: int
    invalid: int
    message: str

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
    ) -> None:
        self._intake = intake
        self._linking_keys = frozenset(linking_keys)
        self.metrics = metrics
        self._timeout = timeout_seconds
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="greenflash-gateway")
        self.slots = asyncio.Semaphore(workers)
        self.closing = False

    async def traces(
        self, parse: Callable[[], ExportTraceServiceRequest], deadline: float | None = None
    ) -> Accepted:
        """Decode with ``parse`` (raises MalformedRequestError) and accept the spans."""

        def work(timeout: float) -> Accepted:
            decoded = decode_spans(parse(), linking_keys=self._linking_keys)
            return _accepted(decoded.count, self._intake.accept(decoded.items, (), timeout))

        return await self._run(work, deadline)

    async def logs(
        self, parse: Callable[[], ExportLogsServiceRequest], deadline: float | None = None
    ) -> Accepted:
        """Decode with ``parse`` and accept the log records."""

        def work(timeout: float) -> Accepted:
            records = log_records_from_request(parse())
            return _accepted(len(records), self._intake.accept((), records, timeout))

        return await self._run(work, deadline)

    async def _run(self, work: Callable[[float], Accepted], deadline: float | None) -> Accepted:
        if self.closing:
            raise UnavailableError("the gateway is shutting down", SHUTDOWN_RETRY_SECONDS)
        timeout = self._timeout if deadline is None else max(0.001, min(self._timeout, deadline))
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work, timeout)
        except NotAccepted as refusal:
            raise UnavailableError(refusal.reason, refusal.retry_after_seconds) from None
        except MalformedRequestError:
            raise  # the caller answers 400 / INVALID_ARGUMENT
        except Exception as error:  # never 500: the client would drop data it could resend
            frames = "".join(traceback.format_tb(error.__traceback__))
            logger.error("internal error taking a request: %s\n%s", type(error).__name__, frames)
            raise UnavailableError("internal error", INTERNAL_ERROR_RETRY_SECONDS) from None

    def close(self) -> None:
        """Refuse new requests (503); those already running finish."""
        self.closing = True

    def join(self) -> None:
        """Wait for running requests to finish (blocking)."""
        self._executor.shutdown(wait=True)


def _accepted(items: int, acceptance: Acceptance) -> Accepted:
    return Accepted(items, acceptance.events, acceptance.invalid, acceptance.message)
