"""Conversation capture through ``otel-greenflash gateway``: a subprocess on real ports, fed by
the SDK's own OTLP exporters (HTTP protobuf and gRPC) with multi-turn chat traces whose LLM
spans follow the OpenTelemetry GenAI conventions (JSON-form messages), a business event per
turn, and an evaluation log record; delivering to the independent receiver, which stores
messages per conversation (deduplicated by ``externalMessageId``) and every rating.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind, Tracer

from tests.support.chat_turns import (
    Acknowledged,
    AcknowledgedLogs,
    assert_acknowledged,
    assert_delivered_once,
    send_turns,
    settled,
    wait_until,
)
from tests.support.common import PRODUCT_ID
from tests.support.gateway_harness import (
    Gateway,
    grpc_exporters,
    http_exporters,
    logging_to,
    tracing,
)
from tests.support.independent_receiver import Receiver

CAPTURE = {"GREENFLASH_CAPTURE_CONVERSATIONS": "true"}
USER = "user-7"


def _text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def _questions(conversation: str) -> list[str]:
    return [f"{conversation}: first question?", f"{conversation}: and then?"]


def _answer(question: str) -> str:
    return f"answer to {question}"


def chat(tracer: Tracer, logs: LoggerProvider, conversation: str) -> None:
    """Two turns of one conversation, a trace each: the LLM call (the whole history as input,
    the answer as output), a business event, and on the last turn an evaluation of the answer
    emitted in the LLM span's context after it ended. The root learns the conversation and the
    user at its end, after everything else was exported."""
    history: list[dict[str, Any]] = []
    questions = _questions(conversation)
    for turn, question in enumerate(questions):
        history.append(_text("user", question))
        with tracer.start_as_current_span("chat.turn") as root:
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.input.messages": json.dumps(history),
                    "gen_ai.output.messages": json.dumps(
                        [{**_text("assistant", _answer(question)), "finish_reason": "stop"}]
                    ),
                    "gen_ai.usage.input_tokens": 11,
                    "gen_ai.usage.output_tokens": 7,
                },
            ) as llm:
                pass
            history.append(_text("assistant", _answer(question)))
            with tracer.start_as_current_span(
                "answer.shown",
                attributes={
                    "greenflash.event.type": "answer_shown",
                    "greenflash.event.value": 1,
                    "greenflash.event.properties.turn": f"{conversation}-{turn}",
                },
            ):
                pass
            if turn == len(questions) - 1:
                logs.get_logger("evaluator").emit(
                    event_name="gen_ai.evaluation.result",
                    context=trace.set_span_in_context(llm),
                    attributes={
                        "gen_ai.evaluation.name": "helpfulness",
                        "gen_ai.evaluation.score.value": 0.8,
                    },
                )
            root.set_attribute("greenflash.conversation.external_id", conversation)
            root.set_attribute("greenflash.user.external_id", USER)


def send_chats(
    span_exporter: SpanExporter, log_exporter: LogRecordExporter, conversations: Sequence[str]
) -> tuple[Acknowledged, AcknowledgedLogs]:
    spans, logs = Acknowledged(span_exporter), AcknowledgedLogs(log_exporter)
    with tracing(spans) as provider, logging_to(logs) as log_provider:
        tracer = provider.get_tracer("chat-app")
        for conversation in conversations:
            chat(tracer, log_provider, conversation)
    return spans, logs


def assert_events_linked(receiver: Receiver, conversations: Sequence[str]) -> None:
    """Each turn's business event exactly once, linked to its conversation."""
    assert receiver.duplicates == 0
    found = sorted(
        (event["properties"]["turn"], event.get("externalConversationId"))
        for event in receiver.accepted
    )
    assert found == sorted(
        (f"{conversation}-{turn}", conversation)
        for conversation in conversations
        for turn in range(2)
    )
    assert {event["productId"] for event in receiver.accepted} == {PRODUCT_ID}


def endpoint_requests(receiver: Receiver, endpoint: str) -> int:
    return sum(1 for request in receiver.requests if request.path == f"/v1/{endpoint}")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_captured_conversations_through_the_gateway(
    receiver: Receiver, tmp_path: Path, protocol: str
) -> None:
    conversations = [f"{protocol}-support-1", f"{protocol}-support-2"]
    with Gateway(receiver, tmp_path / "spool", environment=CAPTURE) as gateway:
        span_exporter, log_exporter = (
            http_exporters(gateway) if protocol == "http" else grpc_exporters(gateway)
        )
        spans, logs = send_chats(span_exporter, log_exporter, conversations)
        assert_acknowledged(spans, logs)
        wait_until(settled(gateway, 2 * len(conversations)), "the business events sent")
        wait_until(
            lambda: receiver.stored_messages >= 4 * len(conversations), "every message stored"
        )
        wait_until(lambda: len(receiver.ratings) >= len(conversations), "every rating stored")

        def counted() -> bool:  # stored first, counted when the gateway reads the answer
            pipeline = gateway.stats()["pipeline"]
            sent = (pipeline.get(kind, {}).get("sent") for kind in ("messages", "ratings"))
            return tuple(sent) == (2 * len(conversations), len(conversations))

        wait_until(counted, "every request counted as sent")
        stats: Any = gateway.stats()
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    for sample in (
        f'api_requests_total{{endpoint="messages",outcome="sent"}} {2 * len(conversations)}',
        f'api_requests_total{{endpoint="ratings",outcome="sent"}} {len(conversations)}',
        'api_requests_total{endpoint="ratings",outcome="unconfirmed"} 0',
    ):
        assert f"\ngreenflash_gateway_{sample}\n" in metrics, sample
    # What a client sees: every request answered in full, about business events only.
    assert stats["requests"][protocol]["traces"] == {"ok": 6 * len(conversations)}
    assert stats["requests"][protocol]["logs"] == {"ok": len(conversations)}
    assert stats["events"] == {"accepted": 2 * len(conversations), "rejected": 0}
    pipeline = stats["pipeline"]
    assert pipeline["messages"]["sent"] == 2 * len(conversations)  # one request per LLM call
    assert pipeline["messages"]["dropped"] == {}
    assert pipeline["ratings"]["sent"] == len(conversations)
    assert pipeline["ratings"]["dropped"] == {}

    assert_events_linked(receiver, conversations)
    threads = receiver.conversations
    assert sorted(thread["externalConversationId"] for thread in threads) == sorted(conversations)
    assert {(thread["externalUserId"], thread["productId"]) for thread in threads} == {
        (USER, PRODUCT_ID)
    }
    for conversation in conversations:
        stored = receiver.messages_of(conversation)
        expected = []
        for question in _questions(conversation):
            expected += [("user_message", question), ("assistant_message", _answer(question))]
        assert [(m["messageType"], m["content"]) for m in stored] == expected
        ids = [m["externalMessageId"] for m in stored]
        assert len(set(ids)) == len(ids)
        ratings = [
            rating
            for rating in receiver.ratings
            if rating.get("externalConversationId") == conversation
            or rating.get("externalMessageId") in ids
        ]
        assert len(ratings) == 1  # once
        # The evaluation was emitted in the LLM span's context: it rates that span's answer.
        assert ratings[0]["externalMessageId"] == ids[-1]
        assert ratings[0]["rating"] == 0.8
    assert len(receiver.ratings) == len(conversations)
    assert receiver.api_key not in gateway.output()


def test_capture_off_sends_events_only(receiver: Receiver, tmp_path: Path) -> None:
    """Without GREENFLASH_CAPTURE_CONVERSATIONS the same traffic makes no messages or ratings
    request; a user's ``greenflash.rating`` log record is a rating whatever the setting."""
    conversations = ["off-support-1"]
    with Gateway(receiver, tmp_path / "spool") as gateway:
        spans, logs = send_chats(*http_exporters(gateway), conversations)
        assert_acknowledged(spans, logs)
        wait_until(settled(gateway, 2), "the business events sent")
        assert_events_linked(receiver, conversations)
        assert endpoint_requests(receiver, "messages") == 0
        assert endpoint_requests(receiver, "ratings") == 0
        pipeline: Any = gateway.stats()["pipeline"]
        assert "messages" not in pipeline
        assert "ratings" not in pipeline
        assert "api_requests" not in httpx.get(f"{gateway.url}/metrics", timeout=10).text

        span_exporter, log_exporter = http_exporters(gateway)
        logs = AcknowledgedLogs(log_exporter)
        spans = Acknowledged(span_exporter)
        with tracing(spans) as provider, logging_to(logs) as log_provider:
            tracer = provider.get_tracer("chat-app")
            with tracer.start_as_current_span("feedback") as root:
                log_provider.get_logger("app").emit(
                    event_name="greenflash.rating",
                    attributes={
                        "greenflash.rating.kind": "thumbs",
                        "greenflash.rating.value": "up",
                    },
                )
                root.set_attribute("greenflash.conversation.external_id", "off-support-1")
        assert_acknowledged(spans, logs)
        wait_until(lambda: len(receiver.ratings) >= 1, "the user's rating stored")
        assert endpoint_requests(receiver, "messages") == 0
        assert receiver.ratings[0]["externalConversationId"] == "off-support-1"
        assert receiver.ratings[0]["rating"] == 1
        wait_until(
            lambda: gateway.stats()["pipeline"].get("ratings", {}).get("sent") == 1,
            "the rating counted as sent",
        )


def test_business_events_as_before_with_capture_on(receiver: Receiver, tmp_path: Path) -> None:
    """Capture on and no GenAI telemetry: the usual chat turns arrive exactly as without it."""
    conversations = ["plain-1", "plain-2"]
    with Gateway(receiver, tmp_path / "spool", environment=CAPTURE) as gateway:
        spans, logs = send_turns(*http_exporters(gateway), conversations)
        assert_acknowledged(spans, logs)
        wait_until(settled(gateway, 4), "4 events sent")
    assert_delivered_once(receiver, conversations)
    assert endpoint_requests(receiver, "messages") == 0
    assert endpoint_requests(receiver, "ratings") == 0


def test_inference_log_events_through_the_gateway(receiver: Receiver, tmp_path: Path) -> None:
    """An LLM call recorded as a ``gen_ai.client.inference.operation.details`` log event (the
    messages as lists of maps), over OTLP/gRPC, waits for its root like a span and is stored
    in the root's conversation."""
    with Gateway(receiver, tmp_path / "spool", environment=CAPTURE) as gateway:
        span_exporter, log_exporter = grpc_exporters(gateway)
        spans, logs = Acknowledged(span_exporter), AcknowledgedLogs(log_exporter)
        with tracing(spans) as provider, logging_to(logs) as log_provider:
            tracer = provider.get_tracer("chat-app")
            with tracer.start_as_current_span("chat.turn") as root:
                log_provider.get_logger("genai").emit(
                    event_name="gen_ai.client.inference.operation.details",
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.input.messages": [_text("user", "hi there")],
                        "gen_ai.output.messages": [
                            {**_text("assistant", "hello"), "finish_reason": "stop"}
                        ],
                    },
                )
                root.set_attribute("greenflash.conversation.external_id", "events-1")
                root.set_attribute("greenflash.user.external_id", USER)
        assert_acknowledged(spans, logs)
        wait_until(lambda: receiver.stored_messages >= 2, "both messages stored")
        wait_until(
            lambda: gateway.stats()["pipeline"].get("messages", {}).get("sent") == 1,
            "the request counted as sent",
        )
    stored = receiver.messages_of("events-1")
    assert [(m["messageType"], m["content"]) for m in stored] == [
        ("user_message", "hi there"),
        ("assistant_message", "hello"),
    ]
    assert endpoint_requests(receiver, "messages") == 1
    assert receiver.accepted == []
