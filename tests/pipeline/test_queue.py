"""The queue in front of the worker: an isolated event goes out without waiting for the schedule
delay, a burst of 10,000 events fits at the default settings, and the byte bound refuses (and
counts) records past it."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._deliver.transport import SendOutcome
from otel_greenflash._pipeline.worker import BackgroundWorker
from otel_greenflash._records import FEW_ATTRIBUTES
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver

EVENT: dict[str, AttributeValue] = {"greenflash.event.type": "ok", "greenflash.event.value": 1}


def tracer_for(processor: GreenflashSpanProcessor) -> tuple[TracerProvider, trace.Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("app")


def wait_until(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


# -- latency: no waiting for the schedule delay -----------------------------------------------


def test_an_isolated_event_goes_out_without_a_flush_long_before_the_schedule_delay(
    receiver: Receiver,
) -> None:
    processor = GreenflashSpanProcessor(
        api_key=receiver.api_key,
        base_url=receiver.base_url,
        product_id=PRODUCT_ID,
        schedule_delay_seconds=30,
    )
    provider, tracer = tracer_for(processor)
    try:
        for index in range(3):  # the worker goes back to waiting between them: woken each time
            with tracer.start_as_current_span(f"isolated{index}") as span:
                span.set_attributes(EVENT)
            assert receiver.wait_for(index + 1, timeout=10), f"event {index} still queued"
    finally:
        provider.shutdown()
    assert processor.stats()["sent"] == 3


# -- a burst at the default settings ----------------------------------------------------------


def test_a_burst_of_ten_thousand_event_spans_at_the_defaults_loses_nothing(
    receiver: Receiver,
) -> None:
    count = 10_000
    processor = GreenflashSpanProcessor(
        api_key=receiver.api_key, base_url=receiver.base_url, product_id=PRODUCT_ID
    )
    provider, tracer = tracer_for(processor)
    try:
        for index in range(count):  # as fast as the application can
            with tracer.start_as_current_span("task") as span:
                span.set_attributes({**EVENT, "greenflash.event.value": index})
        assert processor.force_flush(300_000)
        stats = processor.stats()
    finally:
        provider.shutdown()
    assert stats["dropped"] == {}
    assert stats["sent"] == count
    assert len(set(receiver.accepted_insert_ids)) == count


# -- the byte bound ---------------------------------------------------------------------------


class Gated:
    """Accepts each request once ``gate`` is set: holds the delivery loop, and the worker
    behind it, while a test fills the queue."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        self.gate.wait(60)
        return SendOutcome(200)

    def close(self) -> None:
        return None


def large_attributes(kilobytes: int) -> dict[str, AttributeValue]:
    """An event span's attributes with more than ``FEW_ATTRIBUTES`` of them (so their values
    are measured), holding about ``kilobytes`` KB of text."""
    pads = FEW_ATTRIBUTES + 1
    return {**EVENT, **{f"pad.{n}": "x" * (kilobytes * 1024 // pads) for n in range(pads)}}


def test_records_past_the_byte_bound_are_refused_counted_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = Gated()
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID,
        transport=transport,
        max_queue_size=3,  # the delivery loop holds 3 unsettled: the 4th holds the worker
        max_queue_bytes=1_000_000,
        max_batch_size=1,
        max_concurrency=1,
        schedule_delay_seconds=0.05,
    )
    provider, tracer = tracer_for(processor)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            for index in range(4):  # taken one by one: the worker ends up held by the loop
                with tracer.start_as_current_span(f"filler{index}") as span:
                    span.set_attributes(EVENT)
                assert wait_until(lambda n=index: processor.stats()["queued"] == n + 1)
            for index in range(3):  # about 800 KB each: the first fits, the others do not
                with tracer.start_as_current_span(f"large{index}") as span:
                    span.set_attributes(large_attributes(800))
            assert len(processor._worker) == 1  # room by count: refused for bytes
            assert processor.stats()["dropped"] == {"queue_full": 2}
            full = [r.getMessage() for r in caplog.records if "queue is full" in r.getMessage()]
            assert full[0] == (
                "otel_greenflash queue is full (max_queue_bytes=1000000): 1 new business "
                "event(s) dropped; see stats()['dropped']['queue_full']"
            )
            transport.gate.set()
            assert processor.force_flush(30_000)
    finally:
        transport.gate.set()
        provider.shutdown()
    stats = processor.stats()
    assert stats["sent"] == 5
    assert stats["dropped"] == {"queue_full": 2}
    assert processor._worker.queued_bytes == 0


def test_the_worker_counts_bytes_in_and_out_and_keeps_its_peaks() -> None:
    held = threading.Event()
    release = threading.Event()
    handled: list[int] = []

    def handle(batch: list[int], drain: bool) -> None:
        if batch:
            held.set()
            release.wait(30)
        handled.extend(batch)

    worker: BackgroundWorker[int] = BackgroundWorker(
        handle, name="test-worker", max_queue_size=10, max_queue_bytes=1000, max_batch_size=1
    )
    try:
        assert worker.submit(0, 10)
        assert held.wait(30)  # the worker holds item 0: the queue is empty
        assert worker.submit(1, 600)
        assert not worker.submit(2, 600)  # past the bound with something queued: refused
        assert worker.full_by_bytes()
        assert worker.submit(3, 400)  # exactly at the bound: taken
        assert not worker.submit(4, 1)
        assert worker.submit(5, 5000, bytes_bounded=False)  # its intake bounds itself
        assert worker.queued_bytes == 6000
        release.set()
        assert worker.flush(30)
        assert handled == [0, 1, 3, 5]
        assert worker.queued_bytes == 0
        assert worker.peak == (3, 6000)
        assert worker.submit(6, 5000)  # larger than the bound, into an empty queue: taken
        assert worker.flush(30)
        assert handled[-1] == 6
    finally:
        release.set()
        worker.shutdown(10)
    assert worker.stopped
