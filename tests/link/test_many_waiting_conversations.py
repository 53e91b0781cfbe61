"""Many conversations open at once whose events wait for a conversation id set last on the
root: at default settings every one links; the waiting store's byte bound lets the oldest go
(counted) when it is exceeded; the trace store's LRU bound does not lose the traces they wait
on."""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._link.rules import LinkKeys, TraceIds
from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID, MakeProcessor

CONVERSATION_KEY = "greenflash.conversation.external_id"
CONVERSATIONS = 10_000


def _open_conversations(
    processor: GreenflashSpanProcessor, tracer: trace.Tracer, count: int
) -> list[trace.Span]:
    """``count`` roots open at once, an event span ended in each (no id anywhere yet); returns
    the roots once the worker has taken every event span (the span queue is never full)."""
    roots = [tracer.start_span("chat") for _ in range(count)]
    worker = processor._worker
    deadline = time.monotonic() + 600
    for index, root in enumerate(roots):
        while index % 128 == 0 and len(worker) > 1024:
            assert time.monotonic() < deadline, "the worker did not take the event spans"
            time.sleep(0.005)
        with trace.use_span(root), tracer.start_as_current_span("resolve") as span:
            span.set_attributes(
                {"greenflash.event.type": "resolved", "greenflash.event.value": index}
            )
    while not worker.idle:
        assert time.monotonic() < deadline, "the worker did not take the event spans"
        worker.wake()
        time.sleep(0.005)
    return roots


def _close_conversations(roots: list[trace.Span]) -> None:
    for index, root in enumerate(roots):
        root.set_attribute(CONVERSATION_KEY, f"chat-{index}")
        root.end()


def test_ten_thousand_open_conversations_all_link_at_default_settings(
    server: EventsApiServer,
) -> None:
    """10,000 roots open at once, each with an ended event span and its conversation id set
    last: every event reaches the server with its own conversation (none unlinked)."""
    processor = GreenflashSpanProcessor(
        api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        roots = _open_conversations(processor, provider.get_tracer("chat"), CONVERSATIONS)
        assert len(processor._waiting) == CONVERSATIONS
        _close_conversations(roots)
        assert processor.force_flush(600_000)
        assert server.wait_for_events(CONVERSATIONS, timeout_seconds=120)
        stats = processor.stats()
        assert stats["sent"] == CONVERSATIONS
        assert stats["unlinked"] == {}
        linked = {event["value"]: event.get("externalConversationId") for event in server.events}
        assert linked == {str(index): f"chat-{index}" for index in range(CONVERSATIONS)}
    finally:
        provider.shutdown()


def test_past_the_byte_bound_the_oldest_waiting_events_go_unlinked_and_counted(
    make_processor: MakeProcessor, server: EventsApiServer
) -> None:
    """With the waiting store's byte bound set to about 20 events, 50 waiting events push the
    oldest 30 out (sent without a conversation id, counted ``waiting_full``); the 20 still
    waiting link when their roots end."""
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    waiting = processor._waiting
    tracer = provider.get_tracer("chat")
    try:
        first = _open_conversations(processor, tracer, 1)
        waiting.max_bytes = 20 * waiting.bytes + waiting.bytes // 2  # room for 20 such events
        roots = first + _open_conversations(processor, tracer, 49)
        assert len(waiting) == 20
        assert waiting.bytes <= waiting.max_bytes
        assert processor.stats()["unlinked"] == {"waiting_full": 30}
        _close_conversations(roots)
        assert processor.force_flush(60_000)
        assert server.wait_for_events(50, timeout_seconds=60)
        assert processor.stats()["sent"] == 50
        assert processor.stats()["unlinked"] == {"waiting_full": 30}
        linked = sorted(
            event["value"] for event in server.events if "externalConversationId" in event
        )
        assert len(linked) == 20
    finally:
        provider.shutdown()


def test_a_waited_on_trace_outlives_the_lru_bound_until_done_waiting() -> None:
    """A trace events wait on, pushed out of the trace store by newer traces, still reports
    its root's end as awaited and gives the root's ids; once nothing waits on it, it goes."""
    store = TraceIds(LinkKeys(), max_traces=4)
    assert store.wait(1) == "wait"
    for trace_id in range(2, 20):
        store.record(trace_id, {CONVERSATION_KEY: f"c-{trace_id}"}, root=False)
    assert 1 not in store._traces  # pushed out of the LRU: kept aside
    assert 1 in store._waited
    assert 1 in store  # still a trace the store knows (a root's end is noticed)
    assert store.is_open(1)
    store.record(1, {CONVERSATION_KEY: "late"}, root=True)
    assert store.root_ended(1)  # the events waiting on it are told
    for trace_id in range(20, 40):  # the worker may read its ids after many other traces
        store.record(trace_id, {CONVERSATION_KEY: f"c-{trace_id}"}, root=False)
    assert store.ids(1) == {CONVERSATION_KEY: "late"}
    store.done_waiting(1)
    assert store.ids(1) == {}
    assert not store._waited


def test_a_trace_whose_events_were_pushed_out_is_not_kept_aside(
    make_processor: MakeProcessor,
) -> None:
    """Events pushed out by the waiting store's bound no longer hold their trace past the
    trace store's LRU bound."""
    processor = make_processor(max_waiting=10, max_traces=8)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        roots = _open_conversations(processor, provider.get_tracer("chat"), 100)
        assert len(processor._waiting) == 10
        assert len(processor._shared.linker.trace_ids._waited) <= 10
        _close_conversations(roots)
        assert processor.force_flush(60_000)
        assert not processor._shared.linker.trace_ids._waited
        assert processor.stats()["unlinked"] == {"waiting_full": 90}
    finally:
        provider.shutdown()


def test_a_root_without_ids_still_releases_the_events_of_a_trace_set_aside(
    make_processor: MakeProcessor, server: EventsApiServer
) -> None:
    """More open traces than ``max_traces``, each with an event span that waits (no id known),
    taken in before the next trace starts; then each root ends carrying nothing. The root's end
    is still noticed though the trace store's bound set its trace aside and the linker's list of
    traces with events forgot it, so the events go at once (unlinked: there is no id), not
    after ``linger_seconds`` (five minutes)."""
    processor = make_processor(max_traces=8)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("chat")
    count = 40
    try:
        roots = [tracer.start_span("chat") for _ in range(count)]
        for index, root in enumerate(roots):
            with trace.use_span(root), tracer.start_as_current_span("resolve") as span:
                span.set_attributes(
                    {"greenflash.event.type": "resolved", "greenflash.event.value": index}
                )
            assert processor.deliver_queued(60_000)  # waiting events keep waiting
        assert len(processor._waiting) == count
        for root in roots:
            root.end()
        assert server.wait_for_events(count, timeout_seconds=60)
        assert len(processor._waiting) == 0
        values = sorted(int(event["value"]) for event in server.events)
        assert values == list(range(count))
        assert not any("externalConversationId" in event for event in server.events)
    finally:
        provider.shutdown()
