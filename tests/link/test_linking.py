"""Linking events to conversations through the trace: each level, conflicts, late ids, bounds."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_greenflash import GreenflashSpanProcessor, attach_conversation, conversation
from otel_greenflash.testing import EventsApiServer
from tests.support.common import CONVERSATION_ID, MakeProcessor

OTHER_CONVERSATION_ID = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
EVENT = {"greenflash.event.type": "upgrade_purchased", "greenflash.event.value": "149.00"}


@pytest.fixture
def processor(make_processor: MakeProcessor) -> GreenflashSpanProcessor:
    return make_processor()


@pytest.fixture
def tracer(processor: GreenflashSpanProcessor) -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    yield provider.get_tracer("app")
    provider.shutdown()


def only_event(server: EventsApiServer, processor: GreenflashSpanProcessor) -> dict[str, Any]:
    assert processor.force_flush(10000)
    [event] = server.events
    return event


# -- each level alone ------------------------------------------------------------------------


def test_level_1_the_event_span_itself(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("billing") as span:
        span.set_attributes({**EVENT, "greenflash.conversation.id": CONVERSATION_ID})
    assert only_event(server, processor)["conversationId"] == CONVERSATION_ID


def test_level_2_an_ancestor_span(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "chat-1")
        root.set_attribute("greenflash.user.external_id", "user-1")
        with tracer.start_as_current_span("step"), tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
    event = only_event(server, processor)
    assert event["externalConversationId"] == "chat-1"
    assert event["externalUserId"] == "user-1"


def test_level_3_baggage(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    ctx = baggage.set_baggage("greenflash.conversation.external_id", "chat-from-baggage")
    ctx = baggage.set_baggage("greenflash.organization.external_id", "acme", ctx)
    token = context_api.attach(ctx)
    try:
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
    finally:
        context_api.detach(token)
    event = only_event(server, processor)
    assert event["externalConversationId"] == "chat-from-baggage"
    assert event["externalOrganizationId"] == "acme"


def test_level_4_a_sibling_that_ended_earlier(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat"):
        with tracer.start_as_current_span("llm.call") as llm:
            llm.set_attribute("gen_ai.conversation.id", "thread-9")
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
    assert only_event(server, processor)["externalConversationId"] == "thread-9"


def test_level_4_root_learns_the_id_after_the_event_span_ended(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat") as root:
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
        time.sleep(0.3)  # several worker cycles: the event must wait, not go out unlinked
        assert server.events == []
        assert processor.stats()["waiting"] == 1
        root.set_attribute("greenflash.conversation.id", CONVERSATION_ID)
    assert server.wait_for_events(1, timeout_seconds=5)
    assert server.events[0]["conversationId"] == CONVERSATION_ID
    assert processor.stats()["unlinked"] == {}


def test_a_root_ending_while_the_worker_links_its_event_gives_the_event_its_id(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    """The worker reads an event's ids, then the application sets the conversation id on the
    root and ends it, then the worker learns that the root ended: the event goes out with the
    root's id, not with the ids read before (a work horse under load, tests/lifecycle). The
    application's steps run at that point of the worker's linking, on its thread."""
    assert processor._pipeline is not None
    linker = processor._pipeline.linker
    read_ids = linker.ids_for
    root = tracer.start_span("job")
    root_ends: list[Any] = [root]

    def ids_then_root_ends(item: Any) -> Any:
        ids = read_ids(item)
        if root_ends:  # once, right after the first read for the event
            ending = root_ends.pop()
            ending.set_attribute("greenflash.conversation.id", CONVERSATION_ID)
            ending.end()
        return ids

    linker.ids_for = ids_then_root_ends  # type: ignore[method-assign]
    with tracer.start_as_current_span("billing", context=trace.set_span_in_context(root)) as span:
        span.set_attributes(EVENT)
    assert server.wait_for_events(1, timeout_seconds=5)
    assert root_ends == []  # the root ended between the worker's read and its decision
    assert server.events[0]["conversationId"] == CONVERSATION_ID
    assert processor.stats()["unlinked"] == {}


def test_level_4_a_sibling_that_ends_after_the_event_span(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat"):
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
        with tracer.start_as_current_span("llm.call") as llm:
            llm.set_attribute("greenflash.conversation.external_id", "late-sibling")
    assert only_event(server, processor)["externalConversationId"] == "late-sibling"


def test_level_5_product_id_from_configuration(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    product = "11111111-2222-4333-8444-555555555555"
    processor = make_processor(product_id=product)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("billing") as span:
        span.set_attributes(EVENT)
    assert only_event(server, processor)["productId"] == product


def test_an_event_with_no_conversation_anywhere_goes_out_when_its_root_ends(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("job"), tracer.start_as_current_span("billing") as span:
        span.set_attributes(EVENT)
    assert server.wait_for_events(1, timeout_seconds=5)
    assert "externalConversationId" not in server.events[0]
    assert processor.stats()["unlinked"] == {"no_conversation_id": 1}


# -- conflicts -------------------------------------------------------------------------------


def test_own_span_beats_ancestor_beats_baggage_beats_trace(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    ctx = baggage.set_baggage("greenflash.conversation.external_id", "from-baggage")
    ctx = baggage.set_baggage("greenflash.user.external_id", "user-from-baggage", ctx)
    ctx = baggage.set_baggage("greenflash.organization.external_id", "org-from-baggage", ctx)
    token = context_api.attach(ctx)
    try:
        with tracer.start_as_current_span("chat") as root:
            root.set_attribute("greenflash.conversation.external_id", "from-root")
            root.set_attribute("greenflash.user.external_id", "user-from-root")
            with tracer.start_as_current_span("step") as step:
                step.set_attribute("greenflash.conversation.external_id", "from-parent")
                with tracer.start_as_current_span("billing") as span:
                    span.set_attributes({**EVENT, "greenflash.conversation.external_id": "own"})
                with tracer.start_as_current_span("refund") as span:
                    span.set_attributes({**EVENT, "greenflash.event.type": "refund"})
            with tracer.start_as_current_span("sibling") as sibling:
                sibling.set_attribute("greenflash.product.id", OTHER_CONVERSATION_ID)
    finally:
        context_api.detach(token)
    assert processor.force_flush(10000)
    events = {event["eventType"]: event for event in server.events}

    assert events["upgrade_purchased"]["externalConversationId"] == "own"
    assert events["refund"]["externalConversationId"] == "from-parent"  # nearest ancestor
    assert events["refund"]["externalUserId"] == "user-from-root"  # ancestor beats baggage
    assert events["refund"]["externalOrganizationId"] == "org-from-baggage"
    assert events["refund"]["productId"] == OTHER_CONVERSATION_ID  # trace beats config


def test_greenflash_key_beats_alias_at_the_same_level_but_alias_on_own_span_beats_ancestor(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "root-greenflash")
        with tracer.start_as_current_span("a") as span:
            span.set_attributes(
                {
                    **EVENT,
                    "greenflash.event.type": "a",
                    "session.id": "a-session",
                    "greenflash.conversation.external_id": "a-greenflash",
                }
            )
        with tracer.start_as_current_span("b") as span:
            span.set_attributes({**EVENT, "greenflash.event.type": "b", "session.id": "b-session"})
    assert processor.force_flush(10000)
    events = {event["eventType"]: event for event in server.events}
    assert events["a"]["externalConversationId"] == "a-greenflash"
    assert events["b"]["externalConversationId"] == "b-session"


# -- aliases ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "field"),
    [
        ("gen_ai.conversation.id", "externalConversationId"),
        ("session.id", "externalConversationId"),
        ("user.id", "externalUserId"),
        ("enduser.id", "externalUserId"),
    ],
)
def test_default_aliases(
    server: EventsApiServer,
    processor: GreenflashSpanProcessor,
    tracer: trace.Tracer,
    alias: str,
    field: str,
) -> None:
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute(alias, "alias-value")
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
    assert only_event(server, processor)[field] == "alias-value"


def test_an_alias_never_moves_an_external_id_into_a_greenflash_uuid_field(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("billing") as span:
        span.set_attributes({**EVENT, "gen_ai.conversation.id": CONVERSATION_ID})
    event = only_event(server, processor)
    assert event["externalConversationId"] == CONVERSATION_ID
    assert "conversationId" not in event


def test_custom_aliases_replace_the_defaults(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(
        aliases={
            "langfuse.session.id": "greenflash.conversation.external_id",
            "langfuse.user.id": "greenflash.user.external_id",
        }
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("chat") as root:
        root.set_attributes({"langfuse.session.id": "lf-1", "langfuse.user.id": "u-lf"})
        root.set_attribute("session.id", "not-an-alias-any-more")
        with provider.get_tracer("app").start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
    event = only_event(server, processor)
    assert event["externalConversationId"] == "lf-1"
    assert event["externalUserId"] == "u-lf"


def test_alias_to_something_that_is_not_an_id_key_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"langfuse\.session\.id"):
        GreenflashSpanProcessor(api_key="k", aliases={"langfuse.session.id": "session"})


def test_a_malformed_id_on_an_ancestor_is_skipped_not_fatal(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.id", "not-a-uuid")
        root.set_attribute("greenflash.conversation.external_id", "chat-1")
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
    event = only_event(server, processor)
    assert "conversationId" not in event
    assert event["externalConversationId"] == "chat-1"


# -- across services, tasks and threads --------------------------------------------------------


def test_two_services_link_through_w3c_baggage_headers(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    chat_service = TracerProvider()
    billing_processor = make_processor()
    billing_service = TracerProvider()
    billing_service.add_span_processor(billing_processor)

    headers: dict[str, str] = {}
    with (
        conversation(external_id="chat-8812", user_external_id="user-5"),
        chat_service.get_tracer("chat").start_as_current_span("chat.turn"),
    ):
        propagator.inject(headers)
    assert "baggage" in headers
    assert "traceparent" in headers

    incoming = propagator.extract(headers)
    with billing_service.get_tracer("billing").start_as_current_span(
        "billing.upgrade", context=incoming
    ) as span:
        span.set_attributes(EVENT)
    event = only_event(server, billing_processor)
    assert event["externalConversationId"] == "chat-8812"
    assert event["externalUserId"] == "user-5"


def test_asyncio_tasks_each_keep_their_own_conversation(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    async def handle(chat_id: str) -> None:
        async with conversation(external_id=chat_id):
            with tracer.start_as_current_span("chat"):
                await asyncio.sleep(0.01)
                with tracer.start_as_current_span("billing") as span:
                    span.set_attributes({**EVENT, "greenflash.event.value": chat_id})

    async def main() -> None:
        await asyncio.gather(*(handle(f"chat-{n}") for n in range(20)))

    asyncio.run(main())
    assert processor.force_flush(10000)
    assert len(server.events) == 20
    for event in server.events:
        assert event["externalConversationId"] == event["value"]


def test_thread_pool_carries_context_when_the_app_copies_it(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    def work(index: int) -> None:
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes({**EVENT, "greenflash.event.value": str(index)})

    with (
        conversation(external_id="chat-pool"),
        tracer.start_as_current_span("chat"),
        ThreadPoolExecutor(4) as pool,
    ):
        futures = [pool.submit(contextvars.copy_context().run, work, n) for n in range(8)]
        for future in futures:
            future.result()
    assert processor.force_flush(10000)
    assert len(server.events) == 8
    assert {event["externalConversationId"] for event in server.events} == {"chat-pool"}


def test_many_concurrent_traces_do_not_mix_ids(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    barrier = threading.Barrier(8)

    def run(thread_index: int) -> None:
        barrier.wait()
        for index in range(30):
            chat_id = f"chat-{thread_index}-{index}"
            with tracer.start_as_current_span("chat") as root:
                with tracer.start_as_current_span("billing") as span:
                    span.set_attributes({**EVENT, "greenflash.event.value": chat_id})
                root.set_attribute("greenflash.conversation.external_id", chat_id)  # late

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert processor.force_flush(30000)
    assert len(server.events) == 240
    for event in server.events:
        assert event["externalConversationId"] == event["value"]
    assert processor.stats()["unlinked"] == {}


# -- bounds ----------------------------------------------------------------------------------


def test_waiting_set_is_bounded_under_10k_unfinished_traces(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(max_waiting=500, max_queue_size=20000, linger_seconds=60)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    roots = []
    for index in range(10_000):
        root = tracer.start_span("chat")
        roots.append(root)
        with (
            trace.use_span(root, end_on_exit=False),
            tracer.start_as_current_span("billing") as span,
        ):
            span.set_attributes({**EVENT, "greenflash.event.value": str(index)})
    deadline = time.monotonic() + 60
    while processor.stats()["sent"] < 9_500:
        assert time.monotonic() < deadline, processor.stats()
        time.sleep(0.05)

    stats = processor.stats()
    assert stats["waiting"] == 500
    # Overflow goes out unlinked and counted: pushed out of the waiting set.
    assert sum(stats["unlinked"].values()) == 9_500
    assert set(stats["unlinked"]) == {"waiting_full"}
    assert stats["dropped"] == {}
    for root in roots[:100]:
        root.end()
    assert processor.force_flush(60000)
    assert len(server.events) == 10_000  # nothing lost: overflow went out unlinked
    assert processor.stats()["waiting"] == 0


def test_an_event_whose_root_never_ends_goes_out_after_the_linger_bound(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(linger_seconds=0.3)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    root = tracer.start_span("chat")
    with trace.use_span(root), tracer.start_as_current_span("billing") as span:
        span.set_attributes(EVENT)
    assert server.wait_for_events(1, timeout_seconds=10)
    assert processor.stats()["unlinked"] == {"linger_expired": 1}
    root.end()


def test_linking_memory_is_released_when_traces_end(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    for index in range(200):
        with tracer.start_as_current_span("chat") as root:
            root.set_attribute("greenflash.conversation.external_id", f"chat-{index}")
            with tracer.start_as_current_span("step"):
                pass
    assert len(processor._linker.live) == 0
    assert len(processor._linker.trace_ids) <= 200
    processor._linker.trace_ids.purge(now=time.monotonic() + 3600)
    assert len(processor._linker.trace_ids) == 0


def test_trace_id_store_is_bounded_lru(make_processor: MakeProcessor) -> None:
    processor = make_processor(max_traces=50)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    roots = [tracer.start_span("chat") for _ in range(200)]
    for root in roots:
        with trace.use_span(root), tracer.start_as_current_span("llm") as span:
            span.set_attribute("session.id", "s")
    assert len(processor._linker.trace_ids) == 50
    for root in roots:
        root.end()


# -- helpers ---------------------------------------------------------------------------------


def test_conversation_scope_links_spans_started_inside(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with (
        conversation(CONVERSATION_ID, "chat-77", user_external_id="u-1"),
        tracer.start_as_current_span("billing") as span,
    ):
        span.set_attributes(EVENT)
    event = only_event(server, processor)
    assert event["conversationId"] == CONVERSATION_ID
    assert event["externalConversationId"] == "chat-77"
    assert event["externalUserId"] == "u-1"
    assert baggage.get_all() == {}  # the scope restored the context


def test_conversation_scope_entered_inside_an_existing_span_links_that_trace(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("http.request") as request:
        request.set_attributes(EVENT)
        with conversation(external_id="chat-late-scope"):
            pass
    assert only_event(server, processor)["externalConversationId"] == "chat-late-scope"


def test_attach_conversation_reaches_events_already_waiting(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat"):
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
        with tracer.start_as_current_span("greenflash.messages.create"):
            attach_conversation(CONVERSATION_ID)  # learned from the Messages API response
    assert only_event(server, processor)["conversationId"] == CONVERSATION_ID


def test_attach_conversation_outranks_other_spans_of_the_trace(
    server: EventsApiServer, processor: GreenflashSpanProcessor, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("chat"):
        with tracer.start_as_current_span("old") as old:
            old.set_attribute("greenflash.conversation.id", OTHER_CONVERSATION_ID)
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
        attach_conversation(CONVERSATION_ID)
    assert only_event(server, processor)["conversationId"] == CONVERSATION_ID


def test_invalid_helper_ids_are_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with conversation("not-a-uuid", "chat-1") as scope:
        assert baggage.get_all() == {"greenflash.conversation.external_id": "chat-1"}
    assert scope.ids == {"greenflash.conversation.external_id": "chat-1"}
    assert "greenflash.conversation.id" in caplog.text
    assert "not-a-uuid" not in caplog.text


def test_purge_drops_only_traces_whose_root_ended_long_enough_ago() -> None:
    from otel_greenflash._link.rules import LinkKeys, TraceIds

    store = TraceIds(LinkKeys(), max_traces=100, retain_seconds=30.0)
    started = time.monotonic()
    for trace_id in range(10):
        store.record(trace_id, {"greenflash.conversation.external_id": f"c{trace_id}"}, root=True)
        store.root_ended(trace_id)
    store.record(99, {"greenflash.conversation.external_id": "open"}, root=False)  # root open
    store.purge(now=started + 10)
    assert len(store) == 11
    time.sleep(0.05)
    between = time.monotonic()
    time.sleep(0.05)
    store.root_ended(3)  # ended again later: its newest end decides
    store.purge(now=between + 30)
    assert sorted(trace_id for trace_id in range(100) if trace_id in store) == [3, 99]
    store.purge(now=time.monotonic() + 31)
    assert sorted(trace_id for trace_id in range(100) if trace_id in store) == [99]


def test_purge_looks_only_at_expired_entries() -> None:
    from otel_greenflash._link.rules import LinkKeys, TraceIds

    store = TraceIds(LinkKeys(), max_traces=10_000, retain_seconds=30.0)
    for trace_id in range(5_000):
        store.record(trace_id, {"greenflash.conversation.external_id": "c"}, root=True)
        store.root_ended(trace_id)
    store.purge(now=time.monotonic())  # nothing expired: the queue of ends is left as it was
    assert len(store) == 5_000
    assert len(store._ended) == 5_000
    store.purge(now=time.monotonic() + 3600)
    assert len(store) == 0
    assert len(store._ended) == 0


def test_many_local_roots_of_one_trace_keep_one_purge_entry() -> None:
    from otel_greenflash._link.rules import LinkKeys, TraceIds

    store = TraceIds(LinkKeys(), max_traces=100, retain_seconds=30.0)
    for _ in range(10_000):  # e.g. requests sharing one incoming traceparent
        store.record(7, {"session.id": "s"}, root=True)
        store.root_ended(7)
    assert len(store._ended) == 1
