"""Scenario 9: many concurrent conversations whose events wait for a late conversation id.

Each of ``COUNT`` traces is a chat turn: a root span opened, an event span (a
``greenflash.event.*`` event, no id) ending inside it, then the root gets
``greenflash.conversation.external_id`` and ends. All roots are open at once: the run opens
``COUNT`` roots, ends ``COUNT`` event spans (paced by the span queue's depth, so none is
dropped: the queue in front of the worker is measured elsewhere), then names and ends the
roots. The processor runs at default settings; its transport counts the requests whose body
names an ``externalConversationId`` and discards them (no network: the figures are the
pipeline's own).

Figures (one JSON line): the linked share (requests naming the conversation / events), the
``unlinked`` counters, the records waiting at the peak and the bytes the store counted for
them, the worker thread's CPU per event (``pthread_getcpuclockid``, from before the first event
span ends to the last request) and, in ``memory`` mode (``tracemalloc`` on, so no CPU figure),
the bytes held per waiting event: allocated once every event span waits, minus before the
first ended (the open roots), after a collection, divided by the events waiting.

Fresh interpreter: ``python -m benchmarks.late_ids cpu|memory COUNT``.
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
import tracemalloc

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._deliver.transport import SendOutcome

from ._common import PRODUCT_ID, Row, emit_json, now, rss_mb, run_child

CONVERSATION_KEY = "greenflash.conversation.external_id"
EVENT_ATTRIBUTES: dict[str, AttributeValue] = {
    "greenflash.event.type": "task_success",
    "greenflash.event.value": "resolved",
    "greenflash.event.quality_impact": 0.5,
}
QUEUE_ROOM = 256
"""Event spans ended between two looks at the span queue's depth."""
WARM_UP = 256
"""Conversations linked and delivered before the measured ones."""


class CountingTransport:
    """Discards every request; counts them, and the ones naming a conversation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.linked = 0

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        linked = b'"externalConversationId"' in body or b'"conversationId"' in body
        with self._lock:
            self.requests += 1
            self.linked += linked
        return SendOutcome(200)

    def close(self) -> None:
        return None


def thread_cpu_seconds(thread: threading.Thread) -> float:
    """CPU time of another thread of this process so far (Linux, POSIX thread clocks)."""
    ident = thread.ident
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def wait_until_taken(processor: GreenflashSpanProcessor, deadline: float) -> None:
    """Until the worker has taken and sorted every span queued so far."""
    worker = processor._shared.worker
    while not worker.idle:
        worker.wake()
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not take the event spans")
        time.sleep(0.002)


def run_once(mode: str, count: int) -> dict[str, float]:
    transport = CountingTransport()
    processor = GreenflashSpanProcessor(
        api_key="bench",
        product_id=PRODUCT_ID,
        base_url="http://127.0.0.1:9/api/v1",
        transport=transport,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    pipeline = processor._shared
    worker = pipeline.worker
    high_water = processor.config.max_queue_size - 2 * QUEUE_ROOM

    deadline = time.monotonic() + 900
    for index in range(WARM_UP):  # first-call costs (imports, caches) stay out of the figures
        with tracer.start_as_current_span("chat") as root:
            with tracer.start_as_current_span("resolve") as span:
                span.set_attributes(EVENT_ATTRIBUTES)
            root.set_attribute(CONVERSATION_KEY, f"warm-{index}")
    if not processor.force_flush(900_000):
        raise RuntimeError("the warm-up events were not delivered")
    before = processor.stats()
    requests_before, linked_before = transport.requests, transport.linked

    roots = [tracer.start_span("chat") for _ in range(count)]
    if mode == "memory":
        gc.collect()
        held_before = tracemalloc.get_traced_memory()[0]
    rss_before = rss_mb()
    worker_cpu = thread_cpu_seconds(worker._thread)
    wall = now()
    for index, root in enumerate(roots):
        if index % QUEUE_ROOM == 0:
            while len(worker) > high_water:  # a full span queue would drop event spans
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker fell behind")
                time.sleep(0.002)
        with trace.use_span(root), tracer.start_as_current_span("resolve") as span:
            span.set_attributes(EVENT_ATTRIBUTES)
    wait_until_taken(processor, deadline)
    waiting = float(len(pipeline.linker.waiting))
    waiting_bytes = float(pipeline.linker.waiting.bytes)
    figures: dict[str, float] = {}
    if mode == "memory":
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - held_before
        figures["held_bytes"] = float(held)
        figures["held_per_waiting"] = held / waiting if waiting else 0.0
    rss_growth = rss_mb() - rss_before
    for index, root in enumerate(roots):
        root.set_attribute(CONVERSATION_KEY, f"chat-{index}")
        root.end()
    roots.clear()
    if not processor.force_flush(900_000):
        raise RuntimeError("the events were not delivered")
    worker_cpu = thread_cpu_seconds(worker._thread) - worker_cpu
    wall = now() - wall
    stats = processor.stats()
    provider.shutdown()
    requests, linked = transport.requests - requests_before, transport.linked - linked_before
    if stats["sent"] - before["sent"] != count or requests != count:
        raise RuntimeError(f"{requests} requests for {count} events: {stats}")
    unlinked = stats.get("unlinked") or {}
    figures.update(
        {
            "count": float(count),
            "linked_share": linked / count,
            "unlinked": float(sum(unlinked.values())),
            "unlinked_waiting_full": float(unlinked.get("waiting_full", 0)),
            "waiting": waiting,
            "waiting_bytes": waiting_bytes,
            "waiting_bytes_per_event": waiting_bytes / waiting if waiting else 0.0,
            "max_waiting": float(processor.config.max_waiting),
            "worker_us_per_event": worker_cpu / count * 1e6,
            "rss_growth_mb": rss_growth,
            "seconds": wall,
        }
    )
    return figures


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    if mode == "memory":
        tracemalloc.start()
    emit_json(run_once(mode, count))


COUNTS = (1_000, 10_000, 100_000)


def run(quick: bool = False) -> list[Row]:
    """Linked share and memory at each count; worker CPU per event against the 1k run (medians
    over interleaved runs, each in a fresh interpreter)."""
    counts = COUNTS[:2] if quick else COUNTS
    rounds = 1 if quick else 3
    cpu: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    for _ in range(rounds):
        for count in counts:
            cpu[count].append(run_child("late_ids", "cpu", str(count)))
    # At 10,000: at 1,000 what the warm-up lets go meanwhile is a large share of the figure.
    memory = {count: run_child("late_ids", "memory", str(count)) for count in counts[1:2]}
    median = {
        count: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for count, runs in cpu.items()
    }
    small = median[counts[0]]
    rows: list[Row] = []
    for count in counts:
        figures = median[count]
        name = f"9 late ids: {count} open traces"
        rows.append(
            Row(
                f"{name}, linked",
                "share",
                figures["linked_share"],
                "every event",
                1.0,
                "≥ 0.99" if count <= 10_000 else "(info)",
            )
        )
        rows.append(
            Row(
                f"{name}, worker CPU",
                "µs/event",
                figures["worker_us_per_event"],
                f"{counts[0]} traces",
                small["worker_us_per_event"],
                "≤ 1.5×",
            )
        )
        rows.append(
            Row(
                f"{name}, waiting at peak",
                "events",
                figures["waiting"],
                "max_waiting",
                figures["max_waiting"],
                "(info)",
            )
        )
        if count in memory:
            held = memory[count]
            rows.append(
                Row(
                    f"{name}, held per waiting event",
                    "bytes",
                    held["held_per_waiting"],
                    "counted against the byte bound",
                    held["waiting_bytes_per_event"],
                    "(info)",
                )
            )
    return rows


if __name__ == "__main__":
    main()
