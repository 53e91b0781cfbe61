"""GreenflashSpanProcessor end to end: real SDK spans, real HTTP to the local server."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import EventsApiServer, MemoryTransport
from tests.support.common import PRODUCT_ID, MakeProcessor

UPGRADE = {
    "greenflash.event.type": "upgrade_purchased",
    "greenflash.event.value": "149.00",
    "greenflash.event.value_type": "currency",
    "greenflash.event.influence": "positive",
    "greenflash.event.properties.plan": "pro",
    "greenflash.conversation.external_id": "chat-8812",
}


def test_event_span_becomes_one_api_call(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
        span.set_attributes(UPGRADE)
        context = span.get_span_context()

    assert processor.force_flush(5000)
    assert len(server.events) == 1
    event = server.events[0]
    assert {key: value for key, value in event.items() if key != "eventAt"} == {
        "eventType": "upgrade_purchased",
        "value": "149.00",
        "valueType": "currency",
        "influence": "positive",
        "properties": {"plan": "pro"},
        "externalConversationId": "chat-8812",
        "productId": PRODUCT_ID,
        "insertId": f"otel-{context.trace_id:032x}-{context.span_id:016x}",
    }
    assert str(event["eventAt"]).endswith("Z")
    assert processor.stats() == {
        "queued": 1,
        "sent": 1,
        "failed": 0,
        "invalid": 0,
        "retried": 0,
        "dropped": {},
        "unlinked": {},
        "waiting": 0,
        "spool": {},
    }


def test_request_headers_carry_bearer_key_json_and_user_agent(
    server: EventsApiServer, provider: TracerProvider
) -> None:
    with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
        span.set_attributes(UPGRADE)
    provider.force_flush()

    [request] = server.requests
    assert request.status == 200  # the server checked "Authorization: Bearer <key>"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("otel-greenflash/")


def test_span_events_become_one_event_each(
    server: EventsApiServer, provider: TracerProvider
) -> None:
    with provider.get_tracer("app").start_as_current_span("chat.turn") as span:
        span.set_attribute("greenflash.conversation.external_id", "chat-1")
        span.add_event(
            "greenflash.event", {"greenflash.event.type": "step", "greenflash.event.value": 1}
        )
        span.add_event("unrelated", {"x": 1})
        span.add_event(
            "greenflash.event", {"greenflash.event.type": "step", "greenflash.event.value": 2}
        )
    provider.force_flush()

    assert sorted(event["value"] for event in server.events) == ["1", "2"]
    assert {event["externalConversationId"] for event in server.events} == {"chat-1"}
    assert len({event["insertId"] for event in server.events}) == 2


def test_non_event_spans_are_never_sent(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for index in range(50):
        with tracer.start_as_current_span(f"plain-{index}") as span:
            span.set_attribute("greenflash.conversation.external_id", "chat-1")
            span.add_event("log", {"message": "hello"})

    assert processor.force_flush(5000)
    assert server.requests == []
    assert processor.stats()["queued"] == 0


def test_installing_the_processor_changes_nothing_other_exporters_see(
    make_processor: MakeProcessor,
) -> None:
    def run(with_greenflash: bool) -> list[tuple[object, ...]]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        if with_greenflash:
            provider.add_span_processor(make_processor())
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("root") as root:
            root.set_attribute("greenflash.conversation.external_id", "chat-1")
            with tracer.start_as_current_span("billing.upgrade") as span:
                span.set_attributes(UPGRADE)
                span.add_event(
                    "greenflash.event", {"greenflash.event.type": "t", "greenflash.event.value": 1}
                )
        provider.force_flush()
        return [
            (
                span.name,
                dict(span.attributes or {}),
                [(event.name, dict(event.attributes or {})) for event in span.events],
                span.status.status_code,
                span.parent is None,
            )
            for span in exporter.get_finished_spans()
        ]

    assert run(with_greenflash=True) == run(with_greenflash=False)


def test_invalid_event_is_logged_once_counted_and_not_sent(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("billing.refund") as span:
        span.set_attributes(
            {
                "greenflash.event.type": "refund",
                "greenflash.event.value": "secret-value-42",
                "greenflash.event.influence": "very-bad",
            }
        )
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        assert processor.force_flush(5000)

    assert server.requests == []
    assert processor.stats()["invalid"] == 1
    [record] = [r for r in caplog.records if r.name == "otel_greenflash"]
    message = record.getMessage()
    assert "billing.refund" in message
    assert "greenflash.event.influence" in message
    assert "positive, negative, neutral" in message
    assert "very-bad" not in message
    assert "secret-value-42" not in message


def test_without_api_key_it_warns_once_and_sends_nothing(
    server: EventsApiServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        processor = GreenflashSpanProcessor(base_url=server.base_url, product_id=PRODUCT_ID)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(3):
        with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
            span.set_attributes(UPGRADE)
    provider.shutdown()

    assert server.requests == []
    assert processor.stats()["dropped"] == {"no_api_key": 3}
    warnings = [r for r in caplog.records if "GREENFLASH_API_KEY" in r.getMessage()]
    assert len(warnings) == 1


def test_settings_come_from_environment_and_arguments_win(
    server: EventsApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREENFLASH_API_KEY", server.api_key)
    monkeypatch.setenv("GREENFLASH_BASE_URL", server.base_url)
    monkeypatch.setenv("GREENFLASH_PRODUCT_ID", PRODUCT_ID)
    from_env = GreenflashSpanProcessor()
    explicit = GreenflashSpanProcessor(api_key="other-key", base_url="http://127.0.0.1:9/api/v1")
    try:
        assert from_env.config.api_key == server.api_key
        assert from_env.config.base_url == server.base_url
        assert from_env.config.product_id == PRODUCT_ID
        assert explicit.config.api_key == "other-key"
        assert explicit.config.base_url == "http://127.0.0.1:9/api/v1"
        assert server.api_key not in repr(from_env.config)
    finally:
        from_env.shutdown()
        explicit.shutdown()


def test_rejected_key_is_reported_once_not_per_event(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor = make_processor(api_key="wrong-key-abcdef")
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(5):
        with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
            span.set_attributes(UPGRADE)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        assert processor.force_flush(5000)

    assert server.events == []
    assert processor.stats()["failed"] == 5
    errors = [r for r in caplog.records if r.name == "otel_greenflash"]
    assert len(errors) == 1
    assert "401" in errors[0].getMessage()
    assert "wrong-key-abcdef" not in caplog.text


def test_many_threads_emitting_at_once_deliver_every_event(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")

    def emit(thread_index: int) -> None:
        for index in range(25):
            with tracer.start_as_current_span("task") as span:
                span.set_attributes(
                    {
                        "greenflash.event.type": "task_success",
                        "greenflash.event.value": f"{thread_index}-{index}",
                    }
                )

    threads = [threading.Thread(target=emit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert processor.force_flush(30000)

    assert sorted(event["value"] for event in server.events) == sorted(
        f"{t}-{i}" for t in range(8) for i in range(25)
    )
    assert server.duplicates == 0


def test_force_flush_returns_false_when_the_server_hangs(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    from otel_greenflash.testing import Fault

    server.inject(Fault(delay_seconds=3.0))
    processor = make_processor(timeout_seconds=5.0)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
        span.set_attributes(UPGRADE)

    assert processor.force_flush(timeout_millis=200) is False
    assert processor.force_flush(timeout_millis=10000) is True
    assert len(server.events) == 1


def test_shutdown_reports_what_it_could_not_deliver(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from otel_greenflash.testing import Fault

    server.inject(Fault(delay_seconds=2.0), times=3)
    processor = make_processor(timeout_seconds=5.0, max_batch_size=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(3):
        with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
            span.set_attributes(UPGRADE)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        processor.shutdown(timeout_millis=300)

    assert processor.stats()["dropped"] == {"shutdown": 3}
    assert processor.stats()["sent"] == 0
    assert "before delivering 3 business event(s)" in caplog.text


def test_full_queue_drops_new_event_spans_counts_and_says_so(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from otel_greenflash.testing import Fault

    server.inject(Fault(delay_seconds=2.0), times=2)
    processor = make_processor(max_queue_size=2, max_batch_size=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)

    def emit(indexes: range) -> None:
        for index in indexes:
            with provider.get_tracer("app").start_as_current_span("billing.upgrade") as span:
                span.set_attributes({**UPGRADE, "greenflash.event.value": str(index)})

    def taken(count: int) -> bool:  # the worker took ``count`` event spans off the queue
        deadline = time.monotonic() + 10
        while processor.stats()["queued"] < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return processor.stats()["queued"] == count

    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        emit(range(2))  # 0 and 1 fill the delivery loop (max_pending = 2) for 2 s
        assert taken(2)
        emit(range(2, 3))  # the worker takes 2 and waits for room
        assert taken(3)
        emit(range(3, 10))  # the queue takes 3 and 4, then refuses the newest
    assert processor.force_flush(10000)

    stats = processor.stats()
    assert stats["dropped"]["queue_full"] == 5
    assert stats["queued"] == 5
    arrived = sorted(int(float(str(event["value"]))) for event in server.events)  # "3.00"
    assert arrived == [0, 1, 2, 3, 4]  # the first ones kept, the newest refused
    assert "queue is full" in caplog.text


def test_a_trace_stays_open_until_each_of_its_local_roots_ended() -> None:
    """Two local roots of one trace (requests under the same remote parent): log records of
    the trace may wait while either is open; the trace is closed once both ended."""
    processor = GreenflashSpanProcessor(product_id=PRODUCT_ID, transport=MemoryTransport())
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("roots")
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    remote = propagate.extract(carrier)
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    open_roots = processor._linker.open_roots
    try:
        first = tracer.start_span("first", context=remote)
        second = tracer.start_span("second", context=remote)
        assert trace_id in open_roots
        first.end()
        assert trace_id in open_roots  # the second is still open
        second.end()
        assert trace_id not in open_roots
        assert not processor._linker.extra_roots
        third = tracer.start_span("third", context=remote)
        assert trace_id in open_roots
        third.end()
        assert trace_id not in open_roots
    finally:
        provider.shutdown()
