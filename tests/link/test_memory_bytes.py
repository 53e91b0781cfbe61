"""Memory of linking, bounded in bytes: a waiting event keeps only what linking and mapping read
(not an LLM prompt recorded on its span), and the trace store keeps no over-long id values.

Measured with tracemalloc around real spans of the real SDK (library) and real OTLP requests
decoded as the gateway decodes them, each figure against the bound docs/linking.md states.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags, set_span_in_context

from otel_greenflash import GreenflashConfig, GreenflashSpanProcessor
from otel_greenflash._link.linker import Linker
from otel_greenflash._link.rules import (
    MAX_ID_LENGTH,
    MAX_SPAN_BYTES_PER_TRACE,
    MAX_SPANS_PER_TRACE,
    LinkKeys,
    TraceIds,
    WaitingEvents,
)
from otel_greenflash._link.waiting import RECORD_OVERHEAD_BYTES, slim, waiting_bytes
from otel_greenflash._map.mapper import EventMapper
from otel_greenflash._records import EventLog, EventSpan, LinkedSpan
from otel_greenflash._stats import DeliveryStats
from otel_greenflash.gateway._decode import PROTOBUF, decode_spans, parse_traces
from otel_greenflash.gateway._intake import DurableIntake
from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID, MakeProcessor

MIB = 1024 * 1024
WAITING_EVENTS = 200
TRACES = 1000
LONG_ID = 256 * 1024

WAITING_EVENT_BOUND = 8 * 1024
"""Bytes one waiting event may cost, its 1 MiB prompt attribute included: about
RECORD_OVERHEAD_BYTES (2 KiB) plus its small greenflash.event.* values, with room for
the allocator's noise and other Python versions' object sizes."""
TRACE_BOUND = 4 * 1024
"""Bytes one trace's entry in the store may cost when its only id is 256 KB long."""


def _text(index: int, size: int) -> str:
    """A distinct string of ``size`` characters (a fresh object, never shared)."""
    head = f"{index:08d}-"
    return head + "x" * (size - len(head))


def _held(work: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after ``work`` (traced by tracemalloc), and what it returned."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, result
    finally:
        tracemalloc.stop()


# -- library: the span processor ---------------------------------------------------------------


@pytest.fixture
def traced(make_processor: MakeProcessor) -> Iterator[tuple[GreenflashSpanProcessor, Any]]:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    yield processor, provider.get_tracer("genai")
    provider.shutdown()


def test_a_waiting_event_costs_kilobytes_not_its_1_mib_prompt(
    traced: tuple[GreenflashSpanProcessor, Any], server: EventsApiServer
) -> None:
    """200 LLM spans, each a business event with a 1 MiB prompt attribute, wait for a
    conversation id their open roots set later: they hold kilobytes, then link."""
    processor, tracer = traced
    # The roots stay open (the application's spans, not counted): their events wait.
    roots = [tracer.start_span("chat turn") for _ in range(WAITING_EVENTS)]

    def start_turns() -> None:
        for index, root in enumerate(roots):
            with tracer.start_as_current_span(
                "llm call", context=set_span_in_context(root)
            ) as span:
                span.set_attribute("gen_ai.prompt", _text(index, MIB))
                span.set_attribute("greenflash.event.type", "answer_shown")
                span.set_attribute("greenflash.event.value", f"turn-{index}")
            if index % 20 == 19:  # the worker takes them in as the application goes on
                assert processor.deliver_queued(10_000)
        assert processor.deliver_queued(10_000)

    held, _ = _held(start_turns)
    per_event = held / WAITING_EVENTS
    print(f"waiting events: {per_event:,.0f} bytes each ({held:,} for {WAITING_EVENTS})")
    assert len(processor._waiting) == WAITING_EVENTS
    assert server.events == []
    assert per_event < WAITING_EVENT_BOUND
    assert processor._waiting.bytes <= WAITING_EVENTS * (RECORD_OVERHEAD_BYTES + 1024)

    for index, root in enumerate(roots):  # the conversation id arrives late, on the root
        root.set_attribute("session.id", f"conversation-{index}")
        root.end()
    assert processor.force_flush(20_000)
    events = sorted(server.events, key=lambda event: int(event["value"].split("-")[1]))
    assert [event["value"] for event in events] == [f"turn-{i}" for i in range(WAITING_EVENTS)]
    assert [event["externalConversationId"] for event in events] == [
        f"conversation-{i}" for i in range(WAITING_EVENTS)
    ]
    assert processor.stats()["unlinked"] == {}


def test_a_256_kb_session_id_is_not_kept_per_trace(
    traced: tuple[GreenflashSpanProcessor, Any],
    server: EventsApiServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1000 traces whose spans carry a 256 KB ``session.id``: the store keeps none of them
    (an id is at most MAX_ID_LENGTH characters), says so once naming the attribute and never
    the value, and a real id of the same traces still links."""
    processor, tracer = traced
    long_prefix = "long-session-"

    def run_traces() -> None:
        for index in range(TRACES):
            with tracer.start_as_current_span("chat turn") as root:
                with tracer.start_as_current_span("retrieval") as child:
                    child.set_attribute("session.id", long_prefix + _text(index, LONG_ID))
                if index == TRACES - 1:
                    with tracer.start_as_current_span("purchase") as event:
                        event.set_attribute("greenflash.event.type", "upgrade")
                        event.set_attribute("greenflash.event.value", "pro")
                    root.set_attribute("gen_ai.conversation.id", "real-conversation")
        assert processor.force_flush(10_000)

    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        held, _ = _held(run_traces)
    linker = processor._shared.linker
    per_trace = held / TRACES
    print(f"trace store: {per_trace:,.0f} bytes per trace ({held:,} for {TRACES})")
    assert len(linker.trace_ids) == TRACES  # every trace is still remembered...
    assert per_trace < TRACE_BOUND  # ...without its 256 KB value
    [event] = server.events
    assert event["externalConversationId"] == "real-conversation"
    warnings = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert warnings
    assert "'session.id'" in warnings[0]
    assert f"{MAX_ID_LENGTH} characters" in warnings[0]
    assert not any(long_prefix in message for message in caplog.messages)


# -- gateway: decoded OTLP ---------------------------------------------------------------------


class _Service:
    """A service's real SDK: spans finished into memory, exported as OTLP protobuf."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("service")

    def finished(self) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


def _finished(build: Callable[[Any], None]) -> list[ReadableSpan]:
    service = _Service()
    build(service.tracer)
    service.provider.shutdown()
    return service.finished()


def test_the_gateway_holds_kilobytes_per_waiting_event_and_per_trace(
    tmp_path: Path, server: EventsApiServer
) -> None:
    """The same figures through the gateway's decoding and intake: 50 event spans with a 1 MiB
    prompt wait for their roots (sent later by another service), and 1000 traces' roots
    carry a 256 KB ``session.id``."""
    config = GreenflashConfig.resolve(
        environ={},
        api_key=server.api_key,
        base_url=server.base_url,
        product_id=PRODUCT_ID,
        spool_dir=str(tmp_path),
        handle_sigterm=False,
    )
    intake = DurableIntake(config)
    keys = LinkKeys(config.aliases).all_keys
    service = _Service()
    tracer = service.tracer
    events = 50
    roots: list[bytes] = []

    def send(body: bytes) -> None:
        request = parse_traces(body, PROTOBUF)
        intake.accept(decode_spans(request, linking_keys=keys).items, (), 30)

    def turn(index: int, prompt_size: int) -> None:
        root = tracer.start_span("chat turn")
        with tracer.start_as_current_span("llm", context=set_span_in_context(root)) as span:
            span.set_attribute("gen_ai.prompt", _text(index, prompt_size))
            span.set_attribute("greenflash.event.type", "answer_shown")
            span.set_attribute("greenflash.event.value", f"turn-{index}")
        root.set_attribute("session.id", f"conversation-{index}")
        root.end()
        event_span, root_span = service.finished()
        send(encode_spans([event_span]).SerializeToString())  # the root comes later, from
        roots.append(encode_spans([root_span]).SerializeToString())  # another service

    turn(-1, 100)  # the first request warms caches up: not part of the figures
    send(roots.pop())

    def waiting_events() -> None:
        for index in range(events):
            turn(index, MIB)
        assert intake.pipeline.take_in(10)  # a worker cycle: it let its last batch go

    held, _ = _held(waiting_events)
    held -= sum(map(len, roots))  # the test's own copies of the roots to send
    per_event = held / events
    print(f"gateway waiting events: {per_event:,.0f} bytes each ({held:,} for {events})")
    pipeline = intake.pipeline
    assert len(pipeline.linker.waiting) == events
    assert per_event < WAITING_EVENT_BOUND

    def long_ids() -> None:
        for first in range(0, TRACES, 50):
            for index in range(first, first + 50):
                with tracer.start_as_current_span("request") as root:
                    root.set_attribute("session.id", _text(index, LONG_ID))
            send(encode_spans(service.finished()).SerializeToString())
        assert intake.pipeline.take_in(10)

    held, _ = _held(long_ids)
    per_trace = held / TRACES
    print(f"gateway trace store: {per_trace:,.0f} bytes per trace ({held:,} for {TRACES})")
    assert len(pipeline.linker.trace_ids) >= TRACES
    assert per_trace < TRACE_BOUND

    for body in roots:
        send(body)
    assert intake.force_flush(20_000)
    delivered = {event["value"]: event.get("externalConversationId") for event in server.events}
    assert delivered == {f"turn-{i}": f"conversation-{i}" for i in range(-1, events)}
    intake.shutdown(5_000)
    service.provider.shutdown()


# -- the slim record maps as the original did --------------------------------------------------

_CONVERSATION = "0b9f3f8e-5a3c-4f7e-9c1d-2a6b8e4d7f10"


def _varied_spans(tracer: Any) -> None:
    """Event spans of every shape mapping reads (plus ballast it does not)."""
    too_long = "y" * (MAX_ID_LENGTH + 5)
    with tracer.start_as_current_span("turn") as root:
        root.set_attribute("session.id", "s-1")
        with tracer.start_as_current_span("plain event") as span:
            span.set_attribute("greenflash.event.type", "upgrade")
            span.set_attribute("greenflash.event.value", "149")
            span.set_attribute("greenflash.event.value_type", "currency")
            span.set_attribute("greenflash.event.properties", '{"plan": {"tier": ["pro", 2]}}')
            span.set_attribute("greenflash.event.properties.seats", 5)
            span.set_attribute("gen_ai.prompt", "p" * 10_000)
            span.set_attribute("chat.thread_id", "looks-like-an-id")
        with tracer.start_as_current_span("span events") as span:
            span.set_attribute("user.id", "u-7")
            span.add_event("log", {"message": "m" * 5000})
            span.add_event("greenflash.event", {"greenflash.event.type": "a", "x": "z" * 900})
            span.add_event("other", {})
            span.add_event("x", {"greenflash.event.type": "b", "greenflash.event.value": 3})
        with tracer.start_as_current_span("own ids") as span:
            span.set_attribute("greenflash.event.type", "c")
            span.set_attribute("greenflash.conversation.id", _CONVERSATION)
            span.set_attribute("greenflash.user.external_id", "me")
            span.set_attribute("enduser.id", too_long)  # an alias too long: skipped
        with tracer.start_as_current_span("invalid own id") as span:
            span.set_attribute("greenflash.event.type", "d")
            span.set_attribute("greenflash.organization.external_id", too_long)
        with tracer.start_as_current_span("invalid uuid") as span:
            span.set_attribute("greenflash.event.type", "e")
            span.set_attribute("greenflash.conversation.id", too_long)
        with tracer.start_as_current_span("invalid value") as span:
            span.set_attribute("greenflash.event.type", "f")
            span.set_attribute("greenflash.event.value", "many")
            span.set_attribute("greenflash.event.value_type", "numeric")


def _mapped(mapper: EventMapper, record: EventSpan | EventLog, linked: dict[str, Any]) -> Any:
    result = mapper._map(record, linked)
    return (
        [(event.body, event.insert_id, event.span_name) for event in result.events],
        result.invalid,
    )


def test_a_slim_record_maps_exactly_as_the_record_it_was_made_from() -> None:
    """For spans and log records of every shape: the same bodies, insertIds and invalid
    attributes (with the same messages), the same unlinked hint, from a record that holds a
    fraction of the bytes."""
    config = GreenflashConfig.resolve(environ={}, product_id=PRODUCT_ID)
    keys = LinkKeys(config.aliases)
    mapper = EventMapper(config, keys, DeliveryStats())
    spans = [span for span in _finished(_varied_spans) if span.name != "turn"]
    assert len(spans) == 6
    for linked in ({}, {"greenflash.conversation.external_id": "linked-1"}):
        for span in spans:
            original = EventSpan(span, (), {"session.id": "from-baggage", "other": "o" * 500})
            kept = slim(original, keys)
            assert isinstance(kept, EventSpan)
            assert _mapped(mapper, kept, linked) == _mapped(mapper, original, linked), span.name
            assert len(kept.span.events) == len(span.events)  # the indexes in insertIds
    span = spans[0]
    assert slim(EventSpan(span, (), None), keys).id_like_keys == ("chat.thread_id",)
    assert waiting_bytes(slim(EventSpan(span, (), None), keys)) < RECORD_OVERHEAD_BYTES + 2048

    log = EventLog(
        {
            "greenflash.event.type": "rated",
            "greenflash.event.value": 4,
            "session.id": "s-9",
            "gen_ai.completion": "c" * 50_000,
        },
        event_name="greenflash.event",
        timestamp=1_760_000_000_000_000_000,
        observed_timestamp=None,
        trace_id=0xABC,
        span_id=0xDEF,
        body={"text": "b" * 10_000},
        severity="INFO",
    )
    kept_log = slim(log, keys)
    assert isinstance(kept_log, EventLog)
    assert kept_log.body is None
    assert "gen_ai.completion" not in kept_log.attributes
    for linked in ({}, {"greenflash.user.external_id": "u"}):
        assert _mapped(mapper, kept_log, linked) == _mapped(mapper, log, linked)


def test_a_waiting_record_links_through_its_ancestors_as_before() -> None:
    """An ancestor held weakly: read live while the application holds it (a late id set on it
    is seen), then from what its end recorded for the trace once it is gone."""
    config = GreenflashConfig.resolve(environ={}, product_id=PRODUCT_ID)
    linker = Linker(config, LinkKeys(config.aliases))
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    root = tracer.start_span("root")
    parent = tracer.start_span("agent", context=set_span_in_context(root))
    with tracer.start_as_current_span("event", context=set_span_in_context(parent)) as span:
        span.set_attribute("greenflash.event.type", "x")
    item = EventSpan(span, (parent, root), None)  # type: ignore[arg-type]
    kept = slim(item, linker.link_keys)
    assert all(isinstance(ancestor, LinkedSpan) for ancestor in kept.ancestors)
    parent.set_attribute("gen_ai.conversation.id", "late-on-the-parent")  # after it parked
    assert linker.ids_for(kept) == linker.ids_for(item)
    assert linker.ids_for(kept)["greenflash.conversation.external_id"] == "late-on-the-parent"
    parent.end()
    context = parent.get_span_context()
    linker.linking_span_ended(
        context.trace_id,
        context.span_id,
        root=False,
        ids={"gen_ai.conversation.id": "late-on-the-parent"},
    )
    del item, parent
    gc.collect()
    gone = kept.ancestors[0]
    assert isinstance(gone, LinkedSpan)
    assert gone.reference is not None
    assert gone.reference() is None  # the record did not keep it alive
    assert linker.ids_for(kept)["greenflash.conversation.external_id"] == "late-on-the-parent"


# -- the bounds themselves ---------------------------------------------------------------------


def test_the_waiting_queue_is_bounded_in_bytes() -> None:
    """Past max_bytes the oldest records go out (sent unlinked, as at max_waiting); a record
    larger than the whole budget does not wait at all."""
    waiting: WaitingEvents[Any] = WaitingEvents(max_waiting=100, max_bytes=10_000)

    class Waiter:
        def __init__(self, trace_id: int) -> None:
            self.trace_id = trace_id

    first, second, third = Waiter(1), Waiter(2), Waiter(3)
    assert waiting.park(first, 0.0, 4_000) == []
    assert waiting.park(second, 0.0, 4_000) == []
    assert waiting.park(third, 0.0, 4_000) == [first]
    assert waiting.bytes == 8_000
    assert len(waiting) == 2
    huge = Waiter(4)
    assert waiting.park(huge, 0.0, 20_000) == [huge]  # goes alone, pushing nobody out
    assert waiting.bytes == 8_000
    assert len(waiting) == 2
    assert waiting.release_trace(2) == [second]


def test_a_trace_keeps_one_by_one_entries_within_its_byte_budget() -> None:
    """Per-span entries (for log records emitted in those spans) stop at
    MAX_SPAN_BYTES_PER_TRACE; the trace-wide ids, which events link through, are always kept;
    equal values repeated by many spans are held once."""
    store = TraceIds(LinkKeys(), max_traces=10)
    value = "u" * MAX_ID_LENGTH
    for span_id in range(1, MAX_SPANS_PER_TRACE + 1):
        store.record(7, {"user.id": f"{span_id:04d}" + value[4:]}, root=False, span_id=span_id)
    kept = sum(store.span_attributes(7, s) is not None for s in range(1, MAX_SPANS_PER_TRACE + 1))
    assert 0 < kept < MAX_SPANS_PER_TRACE
    assert kept * (MAX_ID_LENGTH + 100) <= MAX_SPAN_BYTES_PER_TRACE
    assert store.ids(7)["greenflash.user.external_id"] == "0001" + value[4:]
    store.record(8, {"session.id": "x" * (MAX_ID_LENGTH + 1)}, root=True, span_id=1)
    assert store.ids(8) == {}
    assert store.take_too_long() == {"session.id": 1}
    # Decoded OTLP: equal values, distinct objects. 80 entries fit only when the 250-character
    # value is held once (a dict is 184 bytes on 3.11, 232 on 3.10; the value ~300 bytes).
    shared = "s" * 250
    for span_id in range(1, 81):
        store.record(9, {"session.id": "".join(shared)}, root=False, span_id=span_id)
    assert all(store.span_attributes(9, s) is not None for s in range(1, 81))


def test_an_event_whose_own_id_is_too_long_is_invalid_and_says_why() -> None:
    """As any malformed id on the event itself: not sent, counted, the attribute named."""
    config = GreenflashConfig.resolve(environ={}, product_id=PRODUCT_ID)
    stats = DeliveryStats()
    mapper = EventMapper(config, LinkKeys(config.aliases), stats)
    context = SpanContext(0xA, 0xB, False, TraceFlags(1))
    span = ReadableSpan(
        "e",
        context=context,
        attributes={
            "greenflash.event.type": "t",
            "greenflash.event.value": "v",
            "greenflash.user.external_id": "z" * (MAX_ID_LENGTH + 1),
        },
        end_time=1,
    )
    assert mapper.events(EventSpan(span, (), None)) == []
    assert stats.snapshot()["invalid"] == 1
    [problem] = mapper._map(EventSpan(span, (), None), None).invalid
    assert problem.attribute == "greenflash.user.external_id"
    assert problem.problem == f"is longer than {MAX_ID_LENGTH} characters"
