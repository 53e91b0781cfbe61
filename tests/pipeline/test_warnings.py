"""Warnings that say how many: rate-limited counts reported when the interval ends and at
shutdown, invalid events rate-limited per kind of problem, and a full queue that costs the
application thread no mapping."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

import otel_greenflash._logging as logging_module
import otel_greenflash._pipeline.drops as drops_module
from otel_greenflash import BusinessEvent, GreenflashSpanProcessor
from otel_greenflash._deliver.transport import SendOutcome
from otel_greenflash._logging import RateLimitedLog
from otel_greenflash.testing import MemoryTransport
from tests.support.common import PRODUCT_ID

EVENT: dict[str, AttributeValue] = {"greenflash.event.type": "ok", "greenflash.event.value": 1}
MORE = re.compile(r"\((\d+) more like this in the last \d+\.\d s\)")


class Rejecting:
    """Answers every request with HTTP 400 (not retried)."""

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        return SendOutcome(400)

    def close(self) -> None:
        return None


class Gated:
    """Accepts each request once ``gate`` is set: holds the delivery loop (and the worker
    behind it) still while a test fills the span queue."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        self.gate.wait(30)
        return SendOutcome(200)

    def close(self) -> None:
        return None


def tracer_for(processor: GreenflashSpanProcessor) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider.get_tracer("app")


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def total(messages: Sequence[str]) -> int:
    """Occurrences the lines account for: 1 for a first line, N for a report of N."""
    counted = 0
    for message in messages:
        more = MORE.search(message)
        counted += int(more.group(1)) if more else 1
    return counted


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


# -- 1. held counts are reported when the interval ends, and at shutdown ----------------------


def test_held_count_is_reported_when_the_interval_ends_without_another_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RateLimitedLog(interval_seconds=20, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        for index in range(1056):
            log.warning("gave-up", "event %d failed", index)
            now[0] += 0.01
        log.flush_due()  # the interval is not over: nothing yet
        assert lines(caplog, "failed") == ["event 0 failed"]
        now[0] = 120.0
        log.flush_due()  # over, and no further warning of that kind came
        log.flush_due()  # reported once
        now[0] = 125.0
        log.warning("gave-up", "event %d failed", 1056)  # held until the next report
        log.flush()  # shutdown: reported although its interval is not over
        now[0] = 130.0
        log.warning("gave-up", "event %d failed", 1057)  # held
        now[0] = 150.0
        log.warning("gave-up", "event %d failed", 1058)  # the interval ended: reports both

    assert lines(caplog, "failed") == [
        "event 0 failed",
        "event 1055 failed (1055 more like this in the last 20.0 s)",
        "event 1056 failed (1 more like this in the last 5.0 s)",
        "event 1058 failed (2 more like this in the last 25.0 s)",
    ]


def test_the_worker_reports_held_counts_once_the_interval_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging_module, "INTERVAL_SECONDS", 0.3, raising=False)
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID, transport=Rejecting(), schedule_delay_seconds=0.05
    )
    tracer = tracer_for(processor)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            for index in range(30):
                with tracer.start_as_current_span(f"e{index}") as span:
                    span.set_attributes(EVENT)
            assert processor.force_flush(10_000)
            assert processor.stats()["failed"] == 30
            # No further rejection comes: the worker's cycle reports what the interval held.
            assert wait_until(lambda: total(lines(caplog, "HTTP 400")) == 30)
    finally:
        processor.shutdown()


def test_shutdown_reports_every_held_count(caplog: pytest.LogCaptureFixture) -> None:
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID, transport=Rejecting(), schedule_delay_seconds=0.05
    )
    tracer = tracer_for(processor)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        for index in range(30):
            with tracer.start_as_current_span(f"rejected{index}") as span:
                span.set_attributes(EVENT)
            with tracer.start_as_current_span(f"invalid{index}") as span:
                span.set_attributes({**EVENT, "greenflash.event.value_type": "bogus"})
        assert processor.force_flush(10_000)
        assert len(lines(caplog, "HTTP 400")) == 1  # the rest held by the 20 s rate limit
        assert len(lines(caplog, "value_type")) == 1
        processor.shutdown()

    rejected = lines(caplog, "HTTP 400")
    invalid = lines(caplog, "value_type")
    assert [total(rejected), total(invalid)] == [30, 30]
    assert "(29 more like this in the last" in rejected[1]
    assert "(29 more like this in the last" in invalid[1]


# -- 2. invalid events: one full line per kind of problem, then counts ------------------------


def test_invalid_events_are_rate_limited_per_kind_and_the_first_is_logged_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = MemoryTransport()
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID, transport=transport, schedule_delay_seconds=0.05
    )
    tracer = tracer_for(processor)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        for index in range(50):
            with tracer.start_as_current_span(f"checkout-{index}") as span:
                span.set_attributes({**EVENT, "greenflash.event.value_type": f"bogus{index}"})
            with tracer.start_as_current_span(f"signup-{index}") as span:
                span.set_attributes({**EVENT, "greenflash.event.at": f"yesterday {index}"})
            with tracer.start_as_current_span(f"props-{index}") as span:
                span.set_attributes({**EVENT, f"greenflash.event.properties.k{index}": math.nan})
        assert processor.force_flush(10_000)
        first = lines(caplog, "not sent")
        processor.shutdown()

    assert processor.stats()["invalid"] == 150
    assert len(first) == 3  # one line per kind of problem, not one per event
    expected = [  # span name, attribute and what was wrong; then what is allowed
        ("checkout-0", "greenflash.event.value_type", "is not a known value type"),
        ("signup-0", "greenflash.event.at", "is not an ISO 8601 date-time"),
        ("props-0", "greenflash.event.properties.k0", "is not a finite number"),
    ]
    for line, (span_name, attribute, problem) in zip(first, expected, strict=True):
        assert line.startswith(
            f"otel_greenflash business event on span {span_name!r} not sent: attribute "
            f"{attribute!r} {problem}; allowed: "
        )
        assert len(line) > len(line.partition("; allowed: ")[0]) + len("; allowed: ")
    every = lines(caplog, "not sent")
    assert len(every) == 6  # one report per kind at shutdown
    for kind in ("value_type", "event.at", "event.properties"):
        assert total([line for line in every if kind in line]) == 50
    assert not any("bogus" in line or "yesterday" in line for line in every)  # no values


# -- 3. a full queue: the application thread counts; the worker maps and calls on_drop --------


def fill_queue(processor: GreenflashSpanProcessor, tracer: trace.Tracer) -> None:
    """With max_queue_size=1 and a gated transport: one event in flight, one holding the
    worker (the delivery loop is full), one in the queue. The next event span is refused."""

    def taken(count: int) -> bool:
        return wait_until(lambda: processor.stats()["queued"] == count)

    for index in range(3):
        with tracer.start_as_current_span(f"filler{index}") as span:
            span.set_attributes(EVENT)
        if index < 2:
            assert taken(index + 1)


def gated_processor(**settings: object) -> tuple[GreenflashSpanProcessor, Gated]:
    transport = Gated()
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID,
        transport=transport,
        max_queue_size=1,
        max_batch_size=1,
        max_concurrency=1,
        schedule_delay_seconds=0.05,
        **settings,  # type: ignore[arg-type]
    )
    return processor, transport


def test_a_span_dropped_from_a_full_queue_is_mapped_and_called_back_on_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops: list[tuple[threading.Thread, list[BusinessEvent], str]] = []

    def on_drop(events: Sequence[BusinessEvent], reason: str) -> None:
        drops.append((threading.current_thread(), list(events), reason))

    processor, transport = gated_processor(on_drop=on_drop)
    tracer = tracer_for(processor)
    properties = json.dumps({f"k{index}": index for index in range(200_000)})
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            fill_queue(processor, tracer)
            with tracer.start_as_current_span("big") as span:
                span.set_attributes({**EVENT, "greenflash.event.properties": properties})
            # Counted on the application thread; not mapped there (the worker is held up).
            assert processor.stats()["dropped"] == {"queue_full": 1}
            assert drops == []
            assert lines(caplog, "queue is full") == [
                "otel_greenflash queue is full (max_queue_size=1): 1 new business event(s) "
                "dropped; see stats()['dropped']['queue_full']"
            ]
            transport.gate.set()
            assert processor.force_flush(10_000)
    finally:
        transport.gate.set()
        processor.shutdown()

    assert len(drops) == 1
    thread, events, reason = drops[0]
    assert thread is not threading.current_thread()
    assert thread.name == "otel-greenflash-processor"
    assert reason == "queue_full"
    assert [event.span_name for event in events] == ["big"]
    assert len(events[0].body["properties"]) == 200_000  # type: ignore[arg-type]
    assert processor.stats()["sent"] == 3


def test_drops_beyond_the_side_buffer_are_counted_and_said_not_passed_to_on_drop(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drops_module, "MAX_DROPS_KEPT", 2)
    dropped: list[str] = []
    processor, transport = gated_processor(
        on_drop=lambda events, reason: dropped.extend(event.span_name for event in events)
    )
    tracer = tracer_for(processor)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            fill_queue(processor, tracer)
            for index in range(5):
                with tracer.start_as_current_span(f"dropped{index}") as span:
                    span.set_attributes(EVENT)
            transport.gate.set()
            assert processor.force_flush(10_000)
            processor.shutdown()
    finally:
        transport.gate.set()
        processor.shutdown()

    assert processor.stats()["dropped"] == {"queue_full": 5}
    assert dropped == ["dropped0", "dropped1"]
    assert lines(caplog, "not passed to on_drop") == [
        "otel_greenflash: 3 business event(s) dropped from the full queue were not passed to "
        "on_drop (at most 2 dropped records wait for it); they are counted in "
        "stats()['dropped']['queue_full']"
    ]
    # 4. The queue-full warnings say how many: 1 at first, the other 4 reported at shutdown.
    full = lines(caplog, "queue is full")
    assert total(full) == 5
    assert full[0].startswith("otel_greenflash queue is full (max_queue_size=1): 1 new")


def test_queue_full_warnings_say_how_many_events_were_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor, transport = gated_processor()
    tracer = tracer_for(processor)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            fill_queue(processor, tracer)
            for index in range(3):
                with tracer.start_as_current_span(f"dropped{index}") as span:
                    span.set_attributes(EVENT)
                    span.add_event("greenflash.event", EVENT)  # two business events per span
            assert lines(caplog, "queue is full") == [
                "otel_greenflash queue is full (max_queue_size=1): 2 new business event(s) "
                "dropped; see stats()['dropped']['queue_full']"
            ]
            transport.gate.set()
            processor.shutdown()
    finally:
        transport.gate.set()
        processor.shutdown()

    assert processor.stats()["dropped"] == {"queue_full": 6}
    full = lines(caplog, "queue is full")
    assert len(full) == 2
    assert "dropped; see stats()['dropped']['queue_full'] (4 more like this in the last" in full[1]
