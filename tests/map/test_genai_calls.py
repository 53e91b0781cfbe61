"""Tests of reading GenAI telemetry into LLM calls (``otel_greenflash._map.genai_calls``):
each convention, recorded from the real packages (see :mod:`tests.map.genai_recorded`), and
malformed input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest

from otel_greenflash._map.genai_calls import ChatMessage, Skipped, read_llm_call
from otel_greenflash._map.message_rules import message_ids, messages_body
from tests.map.genai_recorded import (
    INDEXED_SPANS,
    OPENINFERENCE_SPANS,
    OTEL_GENAI_EVENTS,
    OTEL_GENAI_SPANS,
)
from tests.map.genai_support import (
    CONVERSATIONS,
    IDS,
    as_invalid,
    read_call,
    request_for,
    semconv_attributes,
    sent_messages,
    text_message,
)

EXPECTED_LAST_CALL = [
    ("system", "You are terse.", (), None),
    ("user", "Weather in Paris?", (), None),
    ("assistant", None, (("call_1", "get_weather", {"city": "Paris"}),), None),
    ("tool", "sunny", (), "call_1"),
    ("assistant", "Sunny in Paris.", (), None),
    ("user", "ok", (), None),
]


def _summary(messages: Sequence[ChatMessage]) -> list[tuple[object, ...]]:
    return [
        (
            message.role,
            message.content,
            tuple((call.id, call.name, call.arguments) for call in message.tool_calls),
            message.tool_call_id,
        )
        for message in messages
    ]


# ---------------------------------------------------------------------------------------------
# Reading each convention


@pytest.mark.parametrize("stack", sorted(CONVERSATIONS))
def test_each_convention_reads_to_the_same_call(stack: str) -> None:
    convention, recorded = CONVERSATIONS[stack]
    call = read_call(recorded[2])
    assert call.convention == convention
    assert _summary(call.input) == EXPECTED_LAST_CALL
    assert _summary(call.output) == [("assistant", "ok", (), None)]
    assert call.usage["input_tokens"] == 11
    assert call.usage["output_tokens"] == 7
    assert call.provider is not None
    assert call.provider.lower() in ("openai", "ollama")
    assert call.model in ("gpt-4o-mini-2024", "llama3")
    assert call.content_recorded


@pytest.mark.parametrize("stack", sorted(CONVERSATIONS))
def test_first_call_output_is_the_tool_call(stack: str) -> None:
    call = read_call(CONVERSATIONS[stack][1][0])
    assert _summary(call.output) == [
        ("assistant", None, (("call_1", "get_weather", {"city": "Paris"}),), None)
    ]


def test_event_messages_as_tuples_read_alike() -> None:
    # Decoded OTLP may hand the event's array values over as tuples.
    def frozen(value: object) -> object:
        if isinstance(value, list):
            return tuple(frozen(item) for item in value)
        if isinstance(value, dict):
            return {key: frozen(item) for key, item in value.items()}
        return value

    attributes = {key: frozen(value) for key, value in OTEL_GENAI_EVENTS[2].items()}
    assert (
        request_for(read_call(attributes)).body == request_for(read_call(OTEL_GENAI_EVENTS[2])).body
    )


def test_semconv_reads_response_id_and_provider() -> None:
    call = read_call(OTEL_GENAI_SPANS[0])
    assert call.response_id == "chatcmpl-0"
    assert call.provider == "openai"
    assert call.model == "gpt-4o-mini-2024"  # the response model before the request model


def test_openinference_usage_is_normalized() -> None:
    call = read_call(OPENINFERENCE_SPANS[0])
    assert dict(call.usage) == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert call.provider == "openai"  # llm.system when llm.provider is absent


def test_indexed_usage_is_normalized() -> None:
    call = read_call({**INDEXED_SPANS[0], "gen_ai.usage.prompt_tokens": 3})
    assert call.usage["total_tokens"] == 18
    assert call.usage["input_tokens"] in (3, 11)


def test_usage_other_than_token_counts_is_not_read() -> None:
    attributes = {**semconv_attributes([text_message("user", "hi")]), "gen_ai.usage.cost": 0.0012}
    assert "cost" not in read_call(attributes).usage


def test_older_gen_ai_system_names_the_provider() -> None:
    attributes = {**semconv_attributes([text_message("user", "hi")]), "gen_ai.system": "anthropic"}
    assert read_call(attributes).provider == "anthropic"


def test_pydantic_ai_tool_result_and_system_instructions() -> None:
    # pydantic-ai-slim 2.78.0 (_otel_messages.py): a tool_call_response part has "name" and
    # "result"; the system prompt is in gen_ai.system_instructions.
    attributes = {
        **semconv_attributes(
            [
                text_message("user", "Weather?"),
                {
                    "role": "assistant",
                    "parts": [
                        {"type": "text", "content": "Let me check."},
                        {"type": "tool_call", "id": "t1", "name": "weather", "arguments": {}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {
                            "type": "tool_call_response",
                            "id": "t1",
                            "name": "weather",
                            "result": {"sky": "clear"},
                        }
                    ],
                },
            ]
        ),
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
    }
    call = read_call(attributes)
    assert call.system_instructions == "Be brief."
    assert _summary(call.input) == [
        ("user", "Weather?", (), None),
        ("assistant", "Let me check.", (("t1", "weather", {}),), None),
        ("tool", '{"sky":"clear"}', (), "t1"),
    ]
    request = request_for(call)
    messages = sent_messages(request)
    assert request.body["systemPrompt"] == "Be brief."
    assert [m.get("role") or m.get("messageType") for m in messages] == [
        "user",
        "assistant",
        "tool_call",
        "observation",
    ]
    assert messages[2]["input"] == {}
    assert messages[3]["toolName"] == "weather"


def test_openinference_contents_list_is_text() -> None:
    attributes = {
        "openinference.span.kind": "LLM",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.1.message_content.type": "text",
        "llm.input_messages.0.message.contents.1.message_content.text": "second",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "first",
        "llm.input_messages.0.message.contents.2.message_content.type": "image",
    }
    assert _summary(read_call(attributes).input) == [("user", "first\nsecond", (), None)]


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.input.messages": "[]"},
        {"gen_ai.operation.name": "execute_tool"},
        {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"},
        {"openinference.span.kind": "CHAIN", "llm.input_messages.0.message.role": "user"},
        {"http.route": "/chat"},
        {},
    ],
    ids=["agent", "tool", "embeddings", "openinference-chain", "http", "empty"],
)
def test_spans_that_are_not_llm_calls(attributes: Mapping[str, object]) -> None:
    assert read_llm_call(attributes) is None


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"},
        {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini"},
    ],
    ids=["gen_ai", "openinference"],
)
def test_llm_call_without_recorded_content_sends_nothing(attributes: Mapping[str, object]) -> None:
    call = read_call(attributes)
    assert not call.has_messages
    assert messages_body(call, IDS) == Skipped("no messages recorded")
    assert message_ids(call, IDS) == ()


def test_parts_without_content_send_structure_only() -> None:
    # Pydantic AI with include_content=False writes {"type": "text"} without "content".
    attributes = semconv_attributes(
        [{"role": "user", "parts": [{"type": "text"}]}],
        [{"role": "assistant", "parts": [{"type": "text"}]}],
    )
    call = read_call(attributes)
    assert not call.content_recorded
    messages = sent_messages(request_for(call))
    assert [(m["role"], m["content"]) for m in messages] == [("user", ""), ("assistant", "")]


def test_roles_are_mapped() -> None:
    attributes = semconv_attributes(
        [
            text_message("developer", "Rules."),
            text_message("model", "hi"),
            text_message("alice", "hello"),
        ],
        [text_message("", "answer")],
    )
    request = request_for(read_call(attributes))
    assert [m["role"] for m in sent_messages(request)] == ["assistant", "user", "assistant"]
    assert request.body["systemPrompt"] == "Rules."


def test_reasoning_and_media_parts_are_not_sent() -> None:
    attributes = semconv_attributes(
        [
            {
                "role": "user",
                "parts": [
                    {"type": "text", "content": "Describe"},
                    {"type": "uri", "modality": "image", "uri": "https://x/y.png"},
                ],
            }
        ],
        [
            {
                "role": "assistant",
                "parts": [
                    {"type": "reasoning", "content": "hmm"},
                    {"type": "text", "content": "A cat."},
                ],
            }
        ],
    )
    messages = sent_messages(request_for(read_call(attributes)))
    assert [m["content"] for m in messages] == ["Describe", "A cat."]


# ---------------------------------------------------------------------------------------------
# Invalid input


@pytest.mark.parametrize(
    ("attributes", "attribute", "problem"),
    [
        (
            {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "[{not json"},
            "gen_ai.input.messages",
            "is not valid JSON",
        ),
        (
            {"gen_ai.input.messages": '{"role": "user"}'},
            "gen_ai.input.messages",
            "holds a JSON dict",
        ),
        (
            {"gen_ai.output.messages": 42},
            "gen_ai.output.messages",
            "has type int",
        ),
        (
            {"gen_ai.input.messages": '["hello"]'},
            "gen_ai.input.messages",
            "holds a message that is not an object",
        ),
        (
            {"gen_ai.input.messages": '[{"role": "user", "parts": "hi"}]'},
            "gen_ai.input.messages",
            "holds a message without a role or parts",
        ),
        (
            {"gen_ai.input.messages": '[{"role": "user", "parts": [7]}]'},
            "gen_ai.input.messages",
            "holds a part that is not an object",
        ),
        (
            {
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": 1}]}]
                )
            },
            "gen_ai.input.messages",
            "holds a text part whose content is not a string",
        ),
        (
            {"gen_ai.input.messages": "[]", "gen_ai.system_instructions": "nope"},
            "gen_ai.system_instructions",
            "is not valid JSON",
        ),
        (
            {"gen_ai.input.messages": "[]", "gen_ai.usage.input_tokens": "eleven"},
            "gen_ai.usage.input_tokens",
            "is a string in the wrong format",
        ),
        (
            {"gen_ai.input.messages": "[]", "gen_ai.request.model": 4},
            "gen_ai.request.model",
            "has type int",
        ),
        (
            {"openinference.span.kind": "LLM", "llm.input_messages.0.message.role": 1},
            "llm.input_messages.0.message.role",
            "has type int",
        ),
        (
            {"openinference.span.kind": "LLM", "llm.token_count.prompt": True},
            "llm.token_count.prompt",
            "has type bool",
        ),
        (
            {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": ["a", "b"]},
            "gen_ai.prompt.0.content",
            "has type list",
        ),
        (
            {
                "gen_ai.completion.0.tool_calls.0.name": 5,
                "gen_ai.completion.0.role": "assistant",
            },
            "gen_ai.completion.0.tool_calls.0.name",
            "has type int",
        ),
    ],
)
def test_malformed_attributes_are_invalid_not_raised(
    attributes: Mapping[str, object], attribute: str, problem: str
) -> None:
    invalid = as_invalid(read_llm_call(attributes, source_name="chat"))
    assert invalid.attribute == attribute
    assert invalid.problem == problem
    assert invalid.allowed
    assert invalid.span_name == "chat"


def test_invalid_attribute_never_shows_the_value() -> None:
    secret = "my password is hunter2"
    invalid = as_invalid(read_llm_call({"gen_ai.input.messages": "[" + secret}))
    assert "hunter2" not in invalid.describe()
    assert "hunter2" not in repr(invalid)


def test_deeply_nested_json_is_invalid() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    invalid = as_invalid(read_llm_call({"gen_ai.input.messages": deep}))
    assert invalid.attribute == "gen_ai.input.messages"


def test_log_record_source_is_kept() -> None:
    invalid = as_invalid(
        read_llm_call(
            {"gen_ai.input.messages": "x"},
            source_name="gen_ai.client.inference.operation.details",
            source="log record",
        )
    )
    assert invalid.source == "log record"
