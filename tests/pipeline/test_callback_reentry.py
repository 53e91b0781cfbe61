"""``on_drop`` and ``on_error`` run on the pipeline's own threads. What they call back into
the library — ``track()`` while the queue is full, ``force_flush()`` — must neither keep the
worker busy forever nor hold up the delivery loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import BusinessEvent, GreenflashSpanProcessor, track
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.common import MakeProcessor


def test_on_drop_calling_track_on_a_full_queue_does_not_stall_the_worker(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    dropped_types: list[str] = []

    def resend(events: Sequence[BusinessEvent], reason: str) -> None:
        dropped_types.extend(event.event_type for event in events)
        track("dropped_and_tracked", 1, value_type="count")  # meets the same full queue

    processor = make_processor(max_queue_size=2, on_drop=resend)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("burst")
    server.inject(Fault(delay_seconds=0.5))  # the worker's first delivery holds it up
    for number in range(400):
        with tracer.start_as_current_span("step") as span:
            span.set_attribute("greenflash.event.type", "step")
            span.set_attribute("greenflash.event.value", number)
            span.set_attribute("greenflash.conversation.external_id", "burst")

    assert processor.force_flush(20_000), "the worker never got back to the queue"
    stats = processor.stats()
    sent_types = [event["eventType"] for event in server.events]
    # Only the application's own drops reach on_drop, each once; one track() per call.
    assert set(dropped_types) == {"step"}, "the burst must overflow the queue"
    assert sent_types.count("step") + len(dropped_types) == 400
    tracked_dropped = stats["dropped"]["queue_full"] - len(dropped_types)
    assert sent_types.count("dropped_and_tracked") + tracked_dropped == len(dropped_types)
    assert stats["sent"] == len(sent_types)


def test_force_flush_from_on_error_returns_at_once_and_delivery_goes_on(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    flushes: list[tuple[bool, float]] = []
    processors: list[GreenflashSpanProcessor] = []

    def flush_on_error(error: Exception, events: Sequence[object]) -> None:
        started = time.monotonic()
        result = processors[0].force_flush(60_000)
        flushes.append((result, time.monotonic() - started))

    processor = make_processor(on_error=flush_on_error)
    processors.append(processor)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    server.inject(Fault(status=422))  # refused for good: on_error runs on the delivery loop

    def emit(event_type: str) -> None:
        with tracer.start_as_current_span("op") as span:
            span.set_attribute("greenflash.event.type", event_type)
            span.set_attribute("greenflash.event.value", 1)
            span.set_attribute("greenflash.conversation.external_id", "c-1")

    emit("refused")
    deadline = time.monotonic() + 30
    while not flushes and time.monotonic() < deadline:
        time.sleep(0.02)
    emit("after_the_error")
    flusher = threading.Thread(target=processor.force_flush, args=(30_000,))
    flusher.start()
    flusher.join(45)
    assert not flusher.is_alive(), "the delivery loop is held by the flush inside on_error"
    assert len(flushes) == 1
    result, waited = flushes[0]
    assert result is False
    assert waited < 30, f"force_flush inside on_error waited {waited:.1f} s of its 60 s"
    assert server.wait_for_events(1, timeout_seconds=10)
    assert [event["eventType"] for event in server.events] == ["after_the_error"]
