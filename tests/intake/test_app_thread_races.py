"""No exception ever leaves ``on_start``/``on_end``: 32 threads at a one-microsecond switch
interval, around every bound the application threads touch (live spans, event traces, the
trace store, the queue)."""

from __future__ import annotations

import sys
import threading
import time
import traceback

from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import MemoryTransport
from tests.support.common import PRODUCT_ID


def test_hooks_never_raise_into_application_threads_near_every_bound() -> None:
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID,
        transport=MemoryTransport(),
        max_queue_size=64,
        max_batch_size=16,
        max_traces=8,
        schedule_delay_seconds=0.001,
    )
    processor._max_live_spans = 48  # evict the live-span registry every few spans
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("race")
    errors: list[str] = []
    started = threading.Barrier(32)
    stop_at = time.monotonic() + 2.0

    def app(worker: int) -> None:
        started.wait()
        index = 0
        try:
            while time.monotonic() < stop_at:
                index += 1
                with tracer.start_as_current_span("request") as root:
                    root.set_attribute("greenflash.conversation.external_id", f"c{worker}-{index}")
                    leaked = tracer.start_span("never ends")  # pins the live registry
                    del leaked
                    with tracer.start_as_current_span("billing") as span:
                        span.set_attribute("greenflash.event.type", "t")
                        span.set_attribute("greenflash.event.value", index)
                    child = tracer.start_span("sibling")
                    child.set_attribute("session.id", f"s{worker}")
                    child.end()
        except Exception:
            errors.append(traceback.format_exc())

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=app, args=(n,)) for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(previous)
    provider.shutdown()
    assert errors == []
    assert all(not thread.is_alive() for thread in threads)
    # bounded (each thread may add one past the check)
    assert len(processor._linker.live) <= 48 + 32
