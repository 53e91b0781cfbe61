"""The delivery fault suite, through the log record intakes, against the independent receiver.

Mirrors ``test_delivery_semantics.py`` for events that arrive as OpenTelemetry log records:
real sockets, real ``LoggerProvider``s with ``GreenflashLogRecordProcessor`` or
``BatchLogRecordProcessor(GreenflashLogRecordExporter)``, and the stdlib-only
:mod:`tests.support.independent_receiver` and fault proxy (which share no code with the client).
Time bounds are generous upper bounds that catch hangs; the only lower bounds are the ones a
pause promises, computed from the receiver's own clock readings.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import (
    AuthenticationError,
    BusinessEvent,
    EventRejectedError,
    GreenflashConfig,
    GreenflashLogRecordExporter,
    GreenflashLogRecordProcessor,
    RetriesExhaustedError,
)
from tests.support.common import PRODUCT_ID
from tests.support.delivery_lab import (
    CLIENTS,
    DropCallback,
    ErrorCallback,
    ErrorLog,
    ServerLab,
    accepted_values,
    retries_of,
    value_of,
    wait_until,
)
from tests.support.independent_receiver import Fault, Receiver

Intake = GreenflashLogRecordProcessor | GreenflashLogRecordExporter


class LogLab(ServerLab):
    """Receivers, proxies, and log intakes aimed at them; torn down in the right order."""

    def __init__(self) -> None:
        super().__init__()
        self.providers: list[LoggerProvider] = []
        self.intakes: list[Intake] = []
        self._tracer = TracerProvider(shutdown_on_exit=False).get_tracer("shop")

    def config(
        self,
        receiver: Receiver,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        **settings: Any,
    ) -> GreenflashConfig:
        """Library defaults (the environment ignored) unless given in ``settings``."""
        options: dict[str, Any] = {"http_client": "aiohttp", **settings}
        return GreenflashConfig.resolve(
            {},
            api_key=api_key or receiver.api_key,
            base_url=base_url or receiver.base_url,
            product_id=PRODUCT_ID,
            **options,
        )

    def processor(
        self,
        receiver: Receiver,
        *,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        **settings: Any,
    ) -> tuple[GreenflashLogRecordProcessor, LoggerProvider]:
        """A log record processor on a LoggerProvider of its own."""
        processor = GreenflashLogRecordProcessor(
            config=self.config(receiver, **settings), on_error=on_error, on_drop=on_drop
        )
        provider = LoggerProvider(shutdown_on_exit=False)
        provider.add_log_record_processor(processor)
        self.intakes.append(processor)
        self.providers.append(provider)
        return processor, provider

    def exporter(
        self, receiver: Receiver, *, on_error: ErrorCallback | None = None, **settings: Any
    ) -> tuple[GreenflashLogRecordExporter, LoggerProvider]:
        """A log record exporter under a BatchLogRecordProcessor (batches leave on flush)."""
        exporter = GreenflashLogRecordExporter(
            config=self.config(receiver, **settings), on_error=on_error
        )
        provider = LoggerProvider(shutdown_on_exit=False)
        provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, schedule_delay_millis=60_000)
        )
        self.intakes.append(exporter)
        self.providers.append(provider)
        return exporter, provider

    def emit(self, provider: LoggerProvider, count: int, label: str = "e") -> list[str]:
        """Emit ``count`` business-event records (values ``label0``...), each in a span of a
        trace of its own; return the values."""
        logger = provider.get_logger("shop")
        values = [f"{label}{index}" for index in range(count)]
        for value in values:
            with self._tracer.start_as_current_span("checkout"):
                logger.emit(
                    event_name="greenflash.event",
                    attributes={
                        "greenflash.event.type": "task_success",
                        "greenflash.event.value": value,
                    },
                )
        return values

    def close(self) -> None:
        for provider in self.providers:
            provider.shutdown()
        for intake in self.intakes:
            intake.shutdown(timeout_millis=2000)
        self.close_servers()


@pytest.fixture
def lab() -> Iterator[LogLab]:
    made = LogLab()
    yield made
    made.close()


def assert_each_once(receiver: Receiver, values: Sequence[str]) -> None:
    assert accepted_values(receiver) == sorted(values)
    assert all(insert_id.startswith("otel-log-") for insert_id in receiver.accepted_insert_ids)


# -- retries -----------------------------------------------------------------------------------


def test_backoff_grows_and_every_attempt_carries_the_same_insert_id(lab: LogLab) -> None:
    """408, 500 and a reset for one log record: retried with growing waits, same insertId."""
    receiver = lab.receiver()
    for fault in (Fault.status(408), Fault.status(500), Fault.reset()):
        receiver.inject(fault)
    processor, provider = lab.processor(receiver)
    values = lab.emit(provider, 1)
    assert processor.force_flush(30_000)

    requests = receiver.requests
    assert [r.outcome for r in requests] == [408, 500, "reset", 200]
    assert len({r.insert_id for r in requests}) == 1
    assert str(requests[0].insert_id).startswith("otel-log-")
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    assert gaps == sorted(gaps), gaps  # 0.5, 1, 2 s less up to 25 % jitter: never overlapping
    assert_each_once(receiver, values)
    stats = processor.stats()
    assert (stats["retried"], stats["sent"], stats["failed"]) == (3, 1, 0)


def test_server_errors_and_resets_are_retried_until_each_record_is_delivered_once(
    lab: LogLab,
) -> None:
    receiver = lab.receiver()
    for fault in [Fault.status(503)] * 2 + [Fault.status(500)] * 2 + [Fault.status(502)]:
        receiver.inject(fault)
    receiver.inject(Fault.reset())
    processor, provider = lab.processor(receiver)
    values = lab.emit(provider, 10)
    assert processor.force_flush(30_000)

    assert_each_once(receiver, values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["retried"]) == (10, 0, 6)
    assert len(retries_of(receiver.requests)) == 6


def test_a_lost_response_is_retried_and_the_record_is_kept_once(lab: LogLab) -> None:
    """The receiver accepts the event, then resets before answering: the client retries
    under the same insertId; the receiver keeps one."""
    receiver = lab.receiver()
    receiver.inject(Fault.lost())
    processor, provider = lab.processor(receiver)
    values = lab.emit(provider, 3)
    assert processor.force_flush(30_000)

    assert_each_once(receiver, values)
    assert receiver.duplicates == 1
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["retried"]) == (3, 0, 1)


# -- throttling ----------------------------------------------------------------------------------


def test_retry_after_pauses_every_lane(lab: LogLab) -> None:
    """429 with ``Retry-After: 2`` (longer than the 1 s request timeout): no new request
    starts before the hint ends, on any lane; then everything is delivered."""
    receiver = lab.receiver()
    receiver.inject(Fault.status(429, {"Retry-After": "2"}), times=3)
    # Batches of 10 that leave when full (as in the span twin): the first 10 are one round.
    processor, provider = lab.processor(
        receiver,
        timeout_seconds=1.0,
        schedule_delay_seconds=30.0,
        send_delay_seconds=30.0,
        max_export_batch_size=10,
    )
    first = lab.emit(provider, 10, "first")
    assert wait_until(lambda: processor.stats()["retried"] >= 1, 10)
    mark = time.monotonic()  # the client has seen a throttling answer: the pause is set
    second = lab.emit(provider, 20, "second")
    assert wait_until(lambda: processor.stats()["queued"] >= 30, 10)
    taken = time.monotonic()
    assert processor.force_flush(30_000)

    requests = receiver.requests
    throttled = [r for r in requests if r.status == 429]
    assert len(throttled) == 3
    # As in test_delivery_semantics: the pause seen at ``mark`` ends 2 s after the first
    # throttled request at the earliest; a later throttled request can be one of the burst that
    # pause's end lets go, whose other requests were already on the wire before its answer.
    pause_end = min(r.received_at for r in throttled) + 2.0
    assert taken < pause_end, "precondition: the new records reached the loop during the pause"
    ids = value_of(receiver)
    new = [r for r in requests if ids.get(r.insert_id or "", "").startswith("second")]
    held = [r for r in new + retries_of(requests) if r.received_at > mark]
    assert len(new) == 20
    assert len(held) == 23
    early = [round(pause_end - r.received_at, 3) for r in held if r.received_at < pause_end]
    assert early == [], f"requests started this long (s) before the pause ended: {early}"

    assert_each_once(receiver, first + second)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["retried"], stats["failed"], stats["sent"]) == (3, 0, 30)


# -- one deadline per request --------------------------------------------------------------------


@pytest.mark.parametrize("http_client", CLIENTS)
@pytest.mark.parametrize("kind", ["drip", "hang"])
def test_dripping_or_hanging_answer_is_cut_at_the_request_timeout(
    lab: LogLab, http_client: str, kind: str
) -> None:
    """One lane, a 1 s request timeout; the first answer drips a 200 (1 byte per 0.5 s of a
    100 kB body) or never comes: the attempt is cut, the lane is free again, and every record
    is delivered once."""
    fault = Fault.drip(size=100_000, interval=0.5) if kind == "drip" else Fault.hang()
    receiver = lab.receiver()
    receiver.inject(fault)
    processor, provider = lab.processor(
        receiver, http_client=http_client, max_concurrency=1, timeout_seconds=1.0
    )
    values = lab.emit(provider, 3)
    assert processor.force_flush(30_000)

    assert_each_once(receiver, values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["retried"]) == (3, 0, 1)
    [cut] = [r for r in receiver.requests if r.fault == kind]
    retry = next(r for r in receiver.requests if r.insert_id == cut.insert_id and r is not cut)
    assert retry.received_at - cut.received_at < 5.0  # timeout 1 s + backoff <= 0.5 s


@pytest.mark.parametrize("http_client", CLIENTS)
def test_connections_broken_by_a_proxy_are_retried_without_duplicates(
    lab: LogLab, http_client: str
) -> None:
    receiver = lab.receiver()
    proxy = lab.proxy(receiver)
    proxy.inject("reset_after_request", times=3)
    proxy.inject("blackhole", times=2)
    processor, provider = lab.processor(
        receiver,
        http_client=http_client,
        base_url=proxy.base_url_for("/v1"),
        timeout_seconds=1.0,
    )
    values = lab.emit(provider, 10)
    assert processor.force_flush(30_000)

    assert proxy.connection_faults[:5] == ["reset_after_request"] * 3 + ["blackhole"] * 2
    assert_each_once(receiver, values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"]) == (10, 0)
    assert stats["retried"] >= 5


def test_thirty_percent_fault_mix_delivers_each_record_once(lab: LogLab) -> None:
    """100 records, 30 % of requests faulted (reset, hang, drip, 429 + Retry-After 1, 503,
    500; 5 % each), a 1 s request timeout: every record accepted exactly once, none failed."""
    mix = {
        Fault.reset(): 0.05,
        Fault.hang(): 0.05,
        Fault.drip(size=100_000, interval=0.5): 0.05,
        Fault.status(429, {"Retry-After": "1"}): 0.05,
        Fault.status(503): 0.05,
        Fault.status(500): 0.05,
    }
    receiver = lab.receiver(mix=mix, seed=23)
    processor, provider = lab.processor(receiver, timeout_seconds=1.0)
    values = lab.emit(provider, 100)
    assert processor.force_flush(120_000)

    assert_each_once(receiver, values)
    assert receiver.duplicates == 0
    stats = processor.stats()
    assert (stats["sent"], stats["failed"], stats["dropped"]) == (100, 0, {})
    outcomes = collections.Counter(r.outcome for r in receiver.requests)
    assert {"reset", "hang", "drip", 429, 503, 500} <= set(outcomes), outcomes
    assert stats["retried"] == sum(n for outcome, n in outcomes.items() if outcome != 200)


# -- failures that end a record --------------------------------------------------------------------


def test_rejected_and_unauthorized_records_fail_at_once_with_on_error(lab: LogLab) -> None:
    receiver = lab.receiver()
    receiver.inject(Fault.status(400))
    rejected_errors, unauthorized_errors = ErrorLog(), ErrorLog()
    rejecting, rejecting_provider = lab.processor(receiver, on_error=rejected_errors)
    rejected = lab.emit(rejecting_provider, 1, "rejected")
    assert rejecting.force_flush(10_000)
    revoked, revoked_provider = lab.processor(
        receiver, api_key="rk-revoked-key-000000", on_error=unauthorized_errors
    )
    unauthorized = lab.emit(revoked_provider, 1, "unauthorized")
    assert revoked.force_flush(10_000)

    assert [r.status for r in receiver.requests] == [400, 401]  # no retry of either
    assert [type(e) for e, _ in rejected_errors.items] == [EventRejectedError]
    assert rejected_errors.values == rejected
    assert [type(e) for e, _ in unauthorized_errors.items] == [AuthenticationError]
    assert unauthorized_errors.values == unauthorized
    assert (rejecting.stats()["failed"], revoked.stats()["failed"]) == (1, 1)
    assert receiver.accepted == []


def test_a_retry_window_that_runs_out_fails_the_records_then_later_ones_go_through(
    lab: LogLab,
) -> None:
    receiver = lab.receiver()
    receiver.inject(Fault.status(503), times=10_000)
    errors = ErrorLog()
    processor, provider = lab.processor(
        receiver, export_timeout_seconds=1.0, schedule_delay_seconds=0.05, on_error=errors
    )
    doomed = lab.emit(provider, 3, "doomed")
    assert processor.force_flush(30_000)
    assert all(isinstance(error, RetriesExhaustedError) for error, _ in errors.items)
    assert errors.values == sorted(doomed)
    assert processor.stats()["failed"] == 3

    receiver.clear_faults()
    later = lab.emit(provider, 2, "later")
    assert processor.force_flush(30_000)
    assert_each_once(receiver, later)
    stats = processor.stats()
    assert (stats["sent"], stats["failed"]) == (2, 3)


def test_a_full_queue_refuses_new_records_counts_them_and_never_blocks_the_app(
    lab: LogLab,
) -> None:
    receiver = lab.receiver(latency_seconds=0.2)
    dropped: list[str] = []
    lock = threading.Lock()

    def on_drop(events: Sequence[BusinessEvent], reason: str) -> None:
        with lock:
            dropped.extend(reason for _ in events)

    processor, provider = lab.processor(
        receiver, max_queue_size=20, max_concurrency=4, on_drop=on_drop
    )
    lab.emit(provider, 300)
    assert processor.force_flush(60_000)

    stats = processor.stats()
    refused = stats["dropped"].get("queue_full", 0)
    assert refused > 0
    assert set(stats["dropped"]) == {"queue_full"}
    assert dropped == ["queue_full"] * refused
    assert stats["sent"] + refused == 300
    assert stats["failed"] == 0
    assert len(receiver.accepted) == stats["sent"]
    assert receiver.duplicates == 0


# -- the exporter path -----------------------------------------------------------------------------


def test_batch_log_processor_export_waits_through_retries_and_succeeds(lab: LogLab) -> None:
    receiver = lab.receiver()
    receiver.inject(Fault.status(503), times=2)
    receiver.inject(Fault.status(429, {"Retry-After": "1"}))
    exporter, provider = lab.exporter(receiver)
    values = lab.emit(provider, 5)
    assert provider.force_flush(30_000)  # BatchLogRecordProcessor → export(), which waits

    assert_each_once(receiver, values)  # all delivered before force_flush returned
    stats = exporter.stats()
    assert (stats["sent"], stats["failed"], stats["retried"]) == (5, 0, 3)


def test_a_batch_exported_again_after_a_failed_export_is_delivered_once(lab: LogLab) -> None:
    """Every answer is lost (the receiver accepts, then resets): the retry window runs out
    and export() says FAILURE although the API has the events. The caller exports the same
    batch again once the network is back: same insertIds, so each record is kept once."""
    receiver = lab.receiver()
    receiver.inject(Fault.lost(), times=10_000)
    errors = ErrorLog()
    exporter = GreenflashLogRecordExporter(
        config=lab.config(receiver, export_timeout_seconds=1.0), on_error=errors
    )
    lab.intakes.append(exporter)
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # records as batched
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    lab.providers.append(provider)
    values = lab.emit(provider, 4)
    batch = list(memory.get_finished_logs())

    assert exporter.export(batch) is LogRecordExportResult.FAILURE
    assert errors.values == sorted(values)
    assert_each_once(receiver, values)  # accepted on the first attempt, answers lost
    receiver.clear_faults()
    assert exporter.export(batch) is LogRecordExportResult.SUCCESS  # the batch, again

    assert_each_once(receiver, values)
    assert receiver.duplicates >= 4
    first_ids = {r.insert_id for r in receiver.requests if r.fault == "lost"}
    again_ids = {r.insert_id for r in receiver.requests if r.fault is None}
    assert first_ids == again_ids == set(receiver.accepted_insert_ids)
    stats = exporter.stats()
    assert (stats["failed"], stats["sent"]) == (4, 4)
