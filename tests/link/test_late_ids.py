"""Conversation ids learned long after the business event (slow LLM turns) still link, at the
default settings: the event waits for its trace's local root span for minutes, not seconds."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import set_span_in_context

from otel_greenflash import GreenflashSpanProcessor
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver
from tests.support.processes import clean_env, run


@pytest.fixture
def pipeline() -> Iterator[tuple[Receiver, GreenflashSpanProcessor, TracerProvider]]:
    with Receiver(latency_seconds=0.01) as receiver:
        processor = GreenflashSpanProcessor(
            api_key=receiver.api_key, base_url=receiver.base_url, product_id=PRODUCT_ID
        )
        provider = TracerProvider()
        provider.add_span_processor(processor)
        yield receiver, processor, provider
        provider.shutdown()


class SkippingClock:
    """The link stage's clock: real time plus the seconds a test skips instead of sleeping."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


def test_ids_set_20_to_60_seconds_after_the_event_are_linked(
    pipeline: tuple[Receiver, GreenflashSpanProcessor, TracerProvider],
) -> None:
    """Three chat turns whose conversation ids arrive 20, 40 and 60 s after their events. The
    link stage's clock skips ahead instead of the test sleeping; at each step the worker runs a
    cycle at that time, so an event given up on before its id came would be sent unlinked."""
    receiver, processor, provider = pipeline
    clock = SkippingClock()
    assert processor._pipeline is not None
    processor._pipeline.clock = clock
    tracer = provider.get_tracer("chat")
    conversations = {delay: str(uuid.uuid4()) for delay in (20, 40, 60)}
    roots = {}
    for delay in conversations:
        root = tracer.start_span("chat turn")
        roots[delay] = root
        with tracer.start_as_current_span("purchase", context=set_span_in_context(root)) as event:
            event.set_attribute("greenflash.event.type", "upgrade_purchased")
            event.set_attribute("greenflash.event.value", f"after-{delay}s")
    clock.skipped = 10
    assert processor.deliver_queued(20_000)
    assert receiver.accepted == []  # still waiting for their roots, nothing sent unlinked
    for delay, root in roots.items():
        clock.skipped = delay  # the LLM call that finally returns Greenflash's conversation id
        assert processor.deliver_queued(20_000)
        sent = {event["value"] for event in receiver.accepted}
        assert sent == {f"after-{earlier}s" for earlier in roots if earlier < delay}
        root.set_attribute("greenflash.conversation.id", conversations[delay])
        root.end()
    assert processor.force_flush(20_000)
    linked = {event["value"]: event.get("conversationId") for event in receiver.accepted}
    assert linked == {f"after-{delay}s": conversations[delay] for delay in conversations}
    assert processor.stats()["unlinked"] == {}


def test_five_hundred_concurrent_chats_with_slow_turns_are_all_linked(
    pipeline: tuple[Receiver, GreenflashSpanProcessor, TracerProvider],
) -> None:
    """The case that left 221 to 385 of 1,000 events unlinked with a 5 s wait."""
    receiver, processor, provider = pipeline
    tracer = provider.get_tracer("chat")
    rng = random.Random(7)
    delays = [rng.uniform(0.0, 9.0) for _ in range(500)]
    conversations = [str(uuid.uuid4()) for _ in delays]

    async def chat(index: int) -> None:
        with tracer.start_as_current_span("chat turn") as root:
            for step in range(2):
                with tracer.start_as_current_span("tool") as event:
                    event.set_attribute("greenflash.event.type", "task_succeeded")
                    event.set_attribute("greenflash.event.value", f"{index}-{step}")
                await asyncio.sleep(delays[index] / 2)
            root.set_attribute("greenflash.conversation.id", conversations[index])

    async def main() -> None:
        await asyncio.gather(*(chat(index) for index in range(500)))

    asyncio.run(main())
    assert processor.force_flush(60_000)
    assert len(receiver.accepted) == 1000
    wrong = [
        event["value"]
        for event in receiver.accepted
        if event.get("conversationId") != conversations[int(str(event["value"]).split("-")[0])]
    ]
    assert wrong == []
    assert processor.stats()["unlinked"] == {}


WAITING_MEMORY = """
import gc, sys, time, tracemalloc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import set_span_in_context
from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import MemoryTransport

with_processor = sys.argv[1] == "processor"
provider = TracerProvider()
if with_processor:
    processor = GreenflashSpanProcessor(
        product_id="123e4567-e89b-12d3-a456-426614174000", transport=MemoryTransport()
    )
    provider.add_span_processor(processor)
tracer = provider.get_tracer("chat")
roots = []
gc.collect()
tracemalloc.start()
for index in range(2048):  # max_waiting's former default: roots open, their events waiting
    root = tracer.start_span("chat turn", attributes={"user.id": f"u{index}"})
    roots.append(root)
    with tracer.start_as_current_span("purchase", context=trace.set_span_in_context(root)) as s:
        s.set_attributes({
            "greenflash.event.type": "upgrade_purchased",
            "greenflash.event.value": "149.00",
            "greenflash.event.properties": '{"plan": "pro", "seats": 3}',
        })
if with_processor:
    processor.deliver_queued(10_000)  # the worker takes them; they wait for their roots
    print("waiting", processor.stats()["waiting"])
gc.collect()
print("traced_mb", round(tracemalloc.get_traced_memory()[0] / 1e6, 2))
"""


def test_events_waiting_at_the_bound_hold_about_8_mb(tmp_path: Path) -> None:
    """docs/linking.md's figure: 2,048 waiting events, measured against the same app without the
    processor (the application's own open root spans are not ours)."""
    script = tmp_path / "waiting_memory.py"
    script.write_text(WAITING_MEMORY)
    figures = {}
    for mode in ("processor", "none"):
        result = run([sys.executable, str(script), mode], clean_env(), timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        words = result.stdout.split()
        figures[mode] = float(words[words.index("traced_mb") + 1])
        if mode == "processor":
            assert int(words[words.index("waiting") + 1]) == 2048
    assert figures["processor"] - figures["none"] < 12.0, figures
