"""Conversation capture through the real SDK and real HTTP: LLM spans and log events to
``POST /messages``, evaluations and ``rate()`` to ``POST /ratings``; off by default."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_greenflash import (
    GreenflashLogRecordExporter,
    GreenflashLogRecordProcessor,
    GreenflashSpanExporter,
    GreenflashSpanProcessor,
    rate,
)
from otel_greenflash._records import LLM_CALL, EventLog
from otel_greenflash.testing import EventsApiServer
from tests.map.genai_recorded import OPENINFERENCE_SPANS, OTEL_GENAI_EVENTS, OTEL_GENAI_SPANS
from tests.map.genai_support import semconv_attributes, text_message
from tests.support.common import PRODUCT_ID, MakeProcessor

CAPTURE = {"capture_conversations": True}


def chat(
    provider: TracerProvider,
    calls: Sequence[Mapping[str, Any]],
    *,
    conversation: str = "chat-1",
    user: str | None = "user-1",
    user_at_end: bool = False,
    event: bool = True,
) -> None:
    """One trace per call, as a chat app's turns: a root naming the conversation (and the
    user, at its start or only at its end), an LLM span with ``attributes``, a business event."""
    tracer = provider.get_tracer("app")
    for turn, attributes in enumerate(calls):
        with tracer.start_as_current_span("turn") as root:
            root.set_attribute("greenflash.conversation.external_id", conversation)
            if user is not None and not user_at_end:
                root.set_attribute("greenflash.user.external_id", user)
            with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
                llm.set_attributes(attributes)
            if event:
                root.set_attribute("greenflash.event.type", "turn_answered")
                root.set_attribute("greenflash.event.value", turn)
            if user is not None and user_at_end:
                root.set_attribute("greenflash.user.external_id", user)


def stored(server: EventsApiServer, conversation: str = "chat-1") -> list[tuple[str, str]]:
    return [(m.message_type, m.content) for m in server.conversation(conversation).messages]


def test_off_by_default_only_events_are_sent(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    chat(provider, OTEL_GENAI_SPANS)
    with provider.get_tracer("app").start_as_current_span("turn") as root:
        root.set_attribute("greenflash.conversation.external_id", "chat-1")
        rate("up")  # an explicit rating is sent whatever the switch says
    assert processor.force_flush(10000)

    assert len(server.events) == 3
    assert server.stored_message_count == 0
    assert {request.path.rsplit("/", 1)[-1] for request in server.requests} == {"events", "ratings"}
    assert "messages" not in processor.stats()


def test_a_recorded_conversation_is_stored_once_in_order(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    chat(provider, OTEL_GENAI_SPANS)
    assert processor.force_flush(10000)

    conversation = server.conversation("chat-1")
    kinds = [message.message_type for message in conversation.messages]
    assert kinds[0] == "user_message"
    assert kinds.count("tool_call") == 1
    assert kinds.count("observation") == 1
    assert kinds[-1] == "assistant_message"
    ids = [message.external_message_id for message in conversation.messages]
    assert len(ids) == len(set(ids))
    assert server.deduplicated_messages > 0  # the history each call resent
    parents = [message.parent_message_id for message in conversation.messages]
    assert parents[1:] == [message.message_id for message in conversation.messages][:-1]
    assert conversation.external_user_id == "user-1"
    assert {event["externalConversationId"] for event in server.events} == {"chat-1"}
    stats = processor.stats()
    assert stats["messages"]["sent"] == 3
    assert stats["messages"]["dropped"] == {}
    assert stats["sent"] == 3


def test_the_same_conversation_read_through_another_convention_gets_the_same_ids(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    chat(provider, OTEL_GENAI_SPANS, conversation="a", event=False)
    chat(provider, OPENINFERENCE_SPANS, conversation="a", event=False)
    assert processor.force_flush(10000)
    first = [m.external_message_id for m in server.conversation("a").messages]
    assert len(first) >= 5
    assert server.stored_message_count == len(first)  # the second reading stored nothing new


def test_calls_wait_for_a_user_id_set_at_the_end_of_the_turn(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    chat(provider, OTEL_GENAI_SPANS[:1], user_at_end=True)
    assert processor.force_flush(10000)
    assert server.conversation("chat-1").external_user_id == "user-1"


def test_without_a_user_id_calls_are_counted_and_said_or_take_the_default(
    server: EventsApiServer, make_processor: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        chat(provider, OTEL_GENAI_SPANS, user=None)
        assert processor.force_flush(10000)
    assert server.stored_message_count == 0
    assert processor.stats()["messages"]["dropped"] == {"no_user_id": 3}
    said = [r.getMessage() for r in caplog.records if "no user id" in r.getMessage()]
    assert len(said) == 1, said  # rate-limited: one line for the three
    assert "GREENFLASH_DEFAULT_EXTERNAL_USER_ID" in said[0]
    assert len(server.events) == 3  # the events go as always

    other = make_processor(**CAPTURE, default_external_user_id="anonymous")
    provider = TracerProvider()
    provider.add_span_processor(other)
    chat(provider, OTEL_GENAI_SPANS[:1], conversation="chat-2", user=None, event=False)
    assert other.force_flush(10000)
    assert server.conversation("chat-2").external_user_id == "anonymous"


def test_content_off_redaction_and_the_size_limit(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    long_question = "é" * 200
    calls = [
        semconv_attributes(
            [text_message("user", long_question)], [text_message("assistant", "a secret")]
        )
    ]

    def redact(content: str, role: str) -> str | None:
        return None if "secret" in content else content

    def run(conversation: str, **settings: Any) -> GreenflashSpanProcessor:
        processor = make_processor(**CAPTURE, **settings)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        chat(provider, calls, conversation=conversation, event=False)
        assert processor.force_flush(10000)
        return processor

    run("off", capture_message_content=False)
    assert stored(server, "off") == [("user_message", ""), ("assistant_message", "")]

    processor = run("redacted", redact_message=redact, max_message_bytes=100)
    [(_, question), (_, answer)] = stored(server, "redacted")
    assert answer == ""
    assert question.endswith(" …[truncated]")
    assert len(question.encode()) <= 100
    stats = processor.stats()["messages"]
    assert stats.get("truncated") == 1
    assert stats.get("redacted") == 1


def test_log_events_become_messages_and_an_evaluation_rates_the_answer(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    log_processor = GreenflashLogRecordProcessor(config=processor.config)
    loggers = LoggerProvider()
    loggers.add_log_record_processor(log_processor)
    logger = loggers.get_logger("app")
    tracer = provider.get_tracer("app")
    for attributes in OTEL_GENAI_EVENTS:
        with tracer.start_as_current_span("turn") as root:
            root.set_attribute("greenflash.conversation.external_id", "chat-1")
            root.set_attribute("greenflash.user.external_id", "user-1")
            with tracer.start_as_current_span("chat"):
                logger.emit(
                    LogRecord(
                        event_name="gen_ai.client.inference.operation.details",
                        attributes=dict(attributes),  # type: ignore[arg-type]
                    )
                )
                logger.emit(
                    LogRecord(
                        event_name="gen_ai.evaluation.result",
                        attributes={
                            "gen_ai.evaluation.name": "relevance",
                            "gen_ai.evaluation.score.value": 0.75,
                            "gen_ai.evaluation.explanation": "on topic",
                        },
                    )
                )
    assert processor.force_flush(10000)
    assert log_processor.force_flush(10000)

    conversation = server.conversation("chat-1")
    assert conversation.messages[-1].message_type == "assistant_message"
    ratings = server.ratings
    assert len(ratings) == 3
    answers = {  # each call's last output: the tool call, then the two answers
        message.external_message_id
        for message in conversation.messages
        if message.message_type in ("tool_call", "assistant_message")
    }
    assert len(answers) == 3
    assert {rating["externalMessageId"] for rating in ratings} == answers
    assert {(r["rating"], r["ratingMin"], r["ratingMax"]) for r in ratings} == {(0.75, 0, 1)}
    assert ratings[0]["feedback"] == "relevance: on topic"
    loggers.shutdown()


def test_rate_links_like_track_and_bad_values_are_counted(
    server: EventsApiServer, make_processor: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        with provider.get_tracer("app").start_as_current_span("feedback") as root:
            root.set_attribute("greenflash.conversation.external_id", "chat-5")
            rate(False, feedback="wrong city")
            rate(6, kind="stars")
        rate(5, kind="stars", external_conversation_id="chat-6", external_message_id="m-1")
        assert processor.force_flush(10000)
    ratings = sorted(server.ratings, key=lambda rating: rating["rating"])  # sent concurrently
    assert all(rating.pop("ratedAt").endswith("Z") for rating in ratings)
    assert ratings == [
        {
            "productId": PRODUCT_ID,
            "rating": 0,
            "ratingMin": 0,
            "ratingMax": 1,
            "externalConversationId": "chat-5",
            "feedback": "wrong city",
        },
        {
            "productId": PRODUCT_ID,
            "rating": 5,
            "ratingMin": 1,
            "ratingMax": 5,
            "externalMessageId": "m-1",
        },
    ]
    assert processor.stats()["ratings"]["dropped"] == {"invalid": 1}
    [line] = [r.getMessage() for r in caplog.records if "(feedback 'stars')" in r.getMessage()]
    assert "'value' is out of range" in line
    assert "1 to 5" in line


def test_an_unreadable_call_is_counted_and_named(
    server: EventsApiServer, make_processor: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    broken = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "{not json"}
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        chat(provider, [broken], event=False)
        assert processor.force_flush(10000)
    assert processor.stats()["messages"]["dropped"] == {"invalid": 1}
    [line] = [r.getMessage() for r in caplog.records if "messages request" in r.getMessage()]
    assert "'chat gpt-4o-mini'" in line
    assert "gen_ai.input.messages" in line
    assert "{not json" not in line  # values are never logged


def test_without_an_api_key_calls_are_counted_as_dropped(
    make_processor: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    processor = make_processor(**CAPTURE, api_key=None)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    chat(provider, OTEL_GENAI_SPANS[:1])
    assert processor.force_flush(10000)
    stats = processor.stats()
    assert stats["messages"]["dropped"] == {"no_api_key": 1}
    assert stats["dropped"] == {"no_api_key": 1}


def test_the_switch_from_the_environment(
    server: EventsApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREENFLASH_CAPTURE_CONVERSATIONS", "true")
    monkeypatch.setenv("GREENFLASH_DEFAULT_EXTERNAL_USER_ID", "guest")
    processor = GreenflashSpanProcessor(
        api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
    )
    try:
        assert processor.config.capture_conversations
        provider = TracerProvider()
        provider.add_span_processor(processor)
        chat(provider, OTEL_GENAI_SPANS[:1], user=None, event=False)
        assert processor.force_flush(10000)
        assert server.conversation("chat-1").external_user_id == "guest"
    finally:
        processor.shutdown()


def test_the_span_and_log_exporters_capture_too(server: EventsApiServer) -> None:
    settings: dict[str, Any] = {
        "api_key": server.api_key,
        "base_url": server.base_url,
        "product_id": PRODUCT_ID,
        **CAPTURE,
    }
    exporter = GreenflashSpanExporter(**settings)
    log_exporter = GreenflashLogRecordExporter(**settings)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    loggers = LoggerProvider()
    loggers.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    chat(provider, OTEL_GENAI_SPANS, conversation="exported")
    with provider.get_tracer("app").start_as_current_span("turn") as root:
        root.set_attribute("greenflash.conversation.external_id", "exported")
        loggers.get_logger("app").emit(
            LogRecord(
                event_name="gen_ai.evaluation.result",
                attributes={"gen_ai.evaluation.score.value": 4, "gen_ai.evaluation.name": "help"},
            )
        )
    provider.shutdown()
    loggers.shutdown()

    assert len(server.conversation("exported").messages) >= 5
    [rating] = server.ratings
    assert (rating["rating"], rating["ratingMax"], rating["externalConversationId"]) == (
        4,
        10,
        "exported",
    )
    assert len(server.events) == 3


def test_an_llm_span_ending_after_shutdown_is_counted(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor(**CAPTURE)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("turn"):
        llm = tracer.start_span("chat gpt-4o-mini")
        llm.set_attributes(OTEL_GENAI_SPANS[0])  # type: ignore[arg-type]
        processor.shutdown()
        llm.end()
    assert processor.stats()["messages"]["dropped"] == {"shutdown": 1}
    assert server.stored_message_count == 0


def test_records_show_no_content_in_their_repr() -> None:
    record = EventLog({"gen_ai.input.messages": "my secret"}, "x", None, None, 1, 2, kind=LLM_CALL)
    assert "secret" not in repr(record)
