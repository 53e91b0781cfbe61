"""Tests of the pure GenAI telemetry → Messages/Ratings API bodies mapping
(``otel_greenflash._map.conversation_rules``).

The recorded calls come from the real packages (see :mod:`tests.map.genai_recorded`): one
conversation of three chat calls with a tool call, its result, and a duplicate "ok".
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_greenflash._event import InvalidAttribute
from otel_greenflash._map.conversation_rules import (
    INDEXED,
    OPENINFERENCE,
    SEMCONV,
    TRUNCATION_MARKER,
    ChatMessage,
    ConversationIds,
    LlmCall,
    MessageOptions,
    MessagesRequest,
    RatingRequest,
    RatingTarget,
    Skipped,
    ToolCall,
    message_ids,
    messages_body,
    rating_from_evaluation,
    rating_from_feedback,
    read_llm_call,
)
from tests.map.genai_recorded import (
    OPENINFERENCE_SPANS,
    OPENLLMETRY_SPANS,
    OTEL_GENAI_EVENTS,
    OTEL_GENAI_SPANS,
)
from tests.support.common import CONVERSATION_ID, PRODUCT_ID

IDS = ConversationIds(
    product_id=PRODUCT_ID, external_conversation_id="support-42", external_user_id="user-7"
)
START_NS = 1_777_000_000_000_000_000
END_NS = START_NS + 1_500_000_000

# The older indexed OpenLLMetry form, as opentelemetry-instrumentation-ollama 0.62.4's
# span_utils writes prompts (gen_ai.prompt.<i>.role|content|tool_call_id|tool_calls.<j>.*) and
# completions (gen_ai.completion.<i>.role|content), with its usage keys; the same conversation.
_INDEXED_COMMON: dict[str, object] = {
    "gen_ai.system": "Ollama",
    "gen_ai.request.model": "llama3",
    "gen_ai.response.model": "llama3",
    "llm.request.type": "chat",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 7,
    "llm.usage.total_tokens": 18,
    "gen_ai.prompt.0.role": "system",
    "gen_ai.prompt.0.content": "You are terse.",
    "gen_ai.prompt.1.role": "user",
    "gen_ai.prompt.1.content": "Weather in Paris?",
}
_INDEXED_TOOL_TURN: dict[str, object] = {
    "gen_ai.prompt.2.role": "assistant",
    "gen_ai.prompt.2.tool_calls.0.id": "call_1",
    "gen_ai.prompt.2.tool_calls.0.name": "get_weather",
    "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
    "gen_ai.prompt.3.role": "tool",
    "gen_ai.prompt.3.content": "sunny",
    "gen_ai.prompt.3.tool_call_id": "call_1",
}
INDEXED_SPANS: list[dict[str, object]] = [
    {
        **_INDEXED_COMMON,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.tool_calls.0.id": "call_1",
        "gen_ai.completion.0.tool_calls.0.name": "get_weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city":"Paris"}',
    },
    {
        **_INDEXED_COMMON,
        **_INDEXED_TOOL_TURN,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Sunny in Paris.",
    },
    {
        **_INDEXED_COMMON,
        **_INDEXED_TOOL_TURN,
        "gen_ai.prompt.4.role": "assistant",
        "gen_ai.prompt.4.content": "Sunny in Paris.",
        "gen_ai.prompt.5.role": "user",
        "gen_ai.prompt.5.content": "ok",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "ok",
    },
]

CONVERSATIONS: dict[str, tuple[str, Sequence[Mapping[str, object]]]] = {
    "otel-genai-spans": (SEMCONV, OTEL_GENAI_SPANS),
    "otel-genai-events": (SEMCONV, OTEL_GENAI_EVENTS),
    "openinference": (OPENINFERENCE, OPENINFERENCE_SPANS),
    "openllmetry": (SEMCONV, OPENLLMETRY_SPANS),
    "openllmetry-indexed": (INDEXED, INDEXED_SPANS),
}
EXPECTED_LAST_CALL = [
    ("system", "You are terse.", (), None),
    ("user", "Weather in Paris?", (), None),
    ("assistant", None, (("call_1", "get_weather", {"city": "Paris"}),), None),
    ("tool", "sunny", (), "call_1"),
    ("assistant", "Sunny in Paris.", (), None),
    ("user", "ok", (), None),
]


def _call(attributes: Mapping[str, object]) -> LlmCall:
    call = read_llm_call(attributes, source_name="chat gpt-4o-mini")
    assert isinstance(call, LlmCall), call
    return call


def _request(call: LlmCall, ids: ConversationIds = IDS, **kwargs: object) -> MessagesRequest:
    request = messages_body(call, ids, **kwargs)  # type: ignore[arg-type]
    assert isinstance(request, MessagesRequest), request
    return request


def _messages(request: MessagesRequest) -> list[dict[str, object]]:
    messages = request.body["messages"]
    assert isinstance(messages, list)
    return messages


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


def _invalid(result: object) -> InvalidAttribute:
    assert isinstance(result, InvalidAttribute), result
    return result


def _semconv(
    inputs: list[dict[str, object]], outputs: list[dict[str, object]] | None = None
) -> dict[str, object]:
    attributes: dict[str, object] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": json.dumps(inputs),
    }
    if outputs is not None:
        attributes["gen_ai.output.messages"] = json.dumps(outputs)
    return attributes


def _text(role: str, content: str) -> dict[str, object]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


# ---------------------------------------------------------------------------------------------
# Reading each convention


@pytest.mark.parametrize("stack", sorted(CONVERSATIONS))
def test_each_convention_reads_to_the_same_call(stack: str) -> None:
    convention, recorded = CONVERSATIONS[stack]
    call = _call(recorded[2])
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
    call = _call(CONVERSATIONS[stack][1][0])
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
    assert _request(_call(attributes)).body == _request(_call(OTEL_GENAI_EVENTS[2])).body


def test_semconv_reads_response_id_and_provider() -> None:
    call = _call(OTEL_GENAI_SPANS[0])
    assert call.response_id == "chatcmpl-0"
    assert call.provider == "openai"
    assert call.model == "gpt-4o-mini-2024"  # the response model before the request model


def test_openinference_usage_is_normalized() -> None:
    call = _call(OPENINFERENCE_SPANS[0])
    assert dict(call.usage) == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert call.provider == "openai"  # llm.system when llm.provider is absent


def test_indexed_usage_is_normalized() -> None:
    call = _call({**INDEXED_SPANS[0], "gen_ai.usage.prompt_tokens": 3})
    assert call.usage["total_tokens"] == 18
    assert call.usage["input_tokens"] in (3, 11)


def test_usage_other_than_token_counts_is_not_read() -> None:
    attributes = {**_semconv([_text("user", "hi")]), "gen_ai.usage.cost": 0.0012}
    assert "cost" not in _call(attributes).usage


def test_older_gen_ai_system_names_the_provider() -> None:
    attributes = {**_semconv([_text("user", "hi")]), "gen_ai.system": "anthropic"}
    assert _call(attributes).provider == "anthropic"


def test_pydantic_ai_tool_result_and_system_instructions() -> None:
    # pydantic-ai-slim 2.78.0 (_otel_messages.py): a tool_call_response part has "name" and
    # "result"; the system prompt is in gen_ai.system_instructions.
    attributes = {
        **_semconv(
            [
                _text("user", "Weather?"),
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
    call = _call(attributes)
    assert call.system_instructions == "Be brief."
    assert _summary(call.input) == [
        ("user", "Weather?", (), None),
        ("assistant", "Let me check.", (("t1", "weather", {}),), None),
        ("tool", '{"sky":"clear"}', (), "t1"),
    ]
    request = _request(call)
    messages = _messages(request)
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
    assert _summary(_call(attributes).input) == [("user", "first\nsecond", (), None)]


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
    call = _call(attributes)
    assert not call.has_messages
    assert messages_body(call, IDS) == Skipped("no messages recorded")
    assert message_ids(call, IDS) == ()


def test_parts_without_content_send_structure_only() -> None:
    # Pydantic AI with include_content=False writes {"type": "text"} without "content".
    attributes = _semconv(
        [{"role": "user", "parts": [{"type": "text"}]}],
        [{"role": "assistant", "parts": [{"type": "text"}]}],
    )
    call = _call(attributes)
    assert not call.content_recorded
    messages = _messages(_request(call))
    assert [(m["role"], m["content"]) for m in messages] == [("user", ""), ("assistant", "")]


def test_roles_are_mapped() -> None:
    attributes = _semconv(
        [_text("developer", "Rules."), _text("model", "hi"), _text("alice", "hello")],
        [_text("", "answer")],
    )
    request = _request(_call(attributes))
    assert [m["role"] for m in _messages(request)] == ["assistant", "user", "assistant"]
    assert request.body["systemPrompt"] == "Rules."


def test_reasoning_and_media_parts_are_not_sent() -> None:
    attributes = _semconv(
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
    messages = _messages(_request(_call(attributes)))
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
    invalid = _invalid(read_llm_call(attributes, source_name="chat"))
    assert invalid.attribute == attribute
    assert invalid.problem == problem
    assert invalid.allowed
    assert invalid.span_name == "chat"


def test_invalid_attribute_never_shows_the_value() -> None:
    secret = "my password is hunter2"
    invalid = _invalid(read_llm_call({"gen_ai.input.messages": "[" + secret}))
    assert "hunter2" not in invalid.describe()
    assert "hunter2" not in repr(invalid)


def test_deeply_nested_json_is_invalid() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    invalid = _invalid(read_llm_call({"gen_ai.input.messages": deep}))
    assert invalid.attribute == "gen_ai.input.messages"


def test_log_record_source_is_kept() -> None:
    invalid = _invalid(
        read_llm_call(
            {"gen_ai.input.messages": "x"},
            source_name="gen_ai.client.inference.operation.details",
            source="log record",
        )
    )
    assert invalid.source == "log record"


# ---------------------------------------------------------------------------------------------
# Message ids


@pytest.mark.parametrize("stack", sorted(CONVERSATIONS))
def test_history_keeps_its_ids_from_call_to_call(stack: str) -> None:
    """The output of call N is history in call N+1: same id both times, so every call's ids
    begin with all ids of the call before."""
    _, recorded = CONVERSATIONS[stack]
    per_call = [_request(_call(attributes)).message_ids for attributes in recorded]
    assert [len(ids) for ids in per_call] == [2, 4, 6]
    for before, after in itertools.pairwise(per_call):
        assert after[: len(before)] == before
    assert len(set(per_call[-1])) == 6


_TURN_TEXT = st.sampled_from(["ok", "yes", "no", "ok ", "é", ""])


@settings(max_examples=60, deadline=None)
@given(
    turns=st.lists(
        st.tuples(_TURN_TEXT, _TURN_TEXT, st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_any_chat_keeps_its_ids_from_call_to_call(turns: list[tuple[str, str, bool]]) -> None:
    """A chat of short, often repeated turns, some answered by a tool call and its result:
    each call's ids begin with the previous call's, and no id repeats within a call."""
    history: list[dict[str, object]] = [_text("system", "S")]
    previous: tuple[str, ...] = ()
    for number, (question, answer, uses_tool) in enumerate(turns):
        history.append(_text("user", question))
        if uses_tool:
            call = {"type": "tool_call", "id": f"c{number}", "name": "f", "arguments": {"n": 1}}
            tool_turn: dict[str, object] = {"role": "assistant", "parts": [call]}
            request = _request(_call(_semconv(history, [tool_turn])))
            assert request.message_ids[: len(previous)] == previous
            previous = request.message_ids
            history.append(tool_turn)
            result: dict[str, object] = {
                "type": "tool_call_response",
                "id": f"c{number}",
                "response": answer,
            }
            history.append({"role": "tool", "parts": [result]})
        output = _text("assistant", answer)
        request = _request(_call(_semconv(history, [output])))
        assert request.message_ids[: len(previous)] == previous
        assert len(set(request.message_ids)) == len(request.message_ids)
        previous = request.message_ids
        history.append(output)


def test_every_convention_gives_the_same_ids() -> None:
    ids = {
        stack: _request(_call(recorded[2])).message_ids
        for stack, (_, recorded) in CONVERSATIONS.items()
    }
    assert len(set(ids.values())) == 1, ids


def test_threading_follows_the_history() -> None:
    messages = _messages(_request(_call(OTEL_GENAI_SPANS[2])))
    assert "parentExternalMessageId" not in messages[0]
    for before, message in itertools.pairwise(messages):
        assert message["parentExternalMessageId"] == before["externalMessageId"]


def test_identical_messages_at_different_positions_get_different_ids() -> None:
    attributes = _semconv(
        [_text("user", "ok"), _text("assistant", "ok"), _text("user", "ok")],
        [_text("assistant", "ok")],
    )
    ids = _request(_call(attributes)).message_ids
    assert len(set(ids)) == 4


def test_ids_depend_on_the_conversation() -> None:
    call = _call(OTEL_GENAI_SPANS[0])
    other = ConversationIds(
        product_id=PRODUCT_ID, external_conversation_id="support-43", external_user_id="user-7"
    )
    assert set(message_ids(call, IDS)).isdisjoint(message_ids(call, other))


def test_ids_do_not_depend_on_user_or_product() -> None:
    call = _call(OTEL_GENAI_SPANS[0])
    other = ConversationIds(
        product_id="9a1c3e5f-7b2d-4c6e-8f0a-1b3d5f7a9c2e",
        external_conversation_id="support-42",
        external_user_id="someone-else",
    )
    assert message_ids(call, IDS) == message_ids(call, other)


def test_greenflash_conversation_id_is_the_key_without_an_external_one() -> None:
    ids = ConversationIds(conversation_id=CONVERSATION_ID, external_user_id="u")
    request = _request(_call(OTEL_GENAI_SPANS[0]), ids)
    assert request.body["conversationId"] == CONVERSATION_ID
    assert "productId" not in request.body
    assert request.message_ids != _request(_call(OTEL_GENAI_SPANS[0])).message_ids


def test_changing_system_prompt_moves_no_id() -> None:
    def ids_with(system: str) -> tuple[str, ...]:
        attributes = _semconv([_text("system", system), _text("user", "hi")])
        return _request(_call(attributes)).message_ids

    assert ids_with("Today is Monday.") == ids_with("Today is Tuesday.")
    without = _request(_call(_semconv([_text("user", "hi")]))).message_ids
    assert without == ids_with("Anything.")


def test_edited_message_gets_a_new_id_and_so_do_the_ones_after() -> None:
    first = _request(_call(_semconv([_text("user", "hi"), _text("assistant", "hello")])))
    edited = _request(_call(_semconv([_text("user", "hey"), _text("assistant", "hello")])))
    assert first.message_ids[0] != edited.message_ids[0]
    # same position, same content: the same message (the API keeps the first)
    assert first.message_ids[1] == edited.message_ids[1]


def test_empty_output_message_takes_no_position() -> None:
    # The OTel GenAI instrumentation records an output without parts but drops a history
    # message without parts: neither takes a position, so the next message keeps its id.
    with_empty = _semconv([_text("user", "hi")], [{"role": "assistant", "parts": []}])
    call = _call(with_empty)
    assert (
        _request(call).message_ids == _request(_call(_semconv([_text("user", "hi")]))).message_ids
    )


def test_tool_arguments_formatting_does_not_change_ids() -> None:
    def ids_with(arguments: str) -> tuple[str, ...]:
        attributes = {
            "openinference.span.kind": "LLM",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "c",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "f",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": arguments,
        }
        return _request(_call(attributes)).message_ids

    assert ids_with('{"a": 1, "b": 2}') == ids_with('{"b":2,"a":1}')


# ---------------------------------------------------------------------------------------------
# Bodies


def test_body_fields() -> None:
    call = _call(OTEL_GENAI_SPANS[1])
    request = _request(call, start_time_ns=START_NS, end_time_ns=END_NS)
    body = request.body
    assert body["externalUserId"] == "user-7"
    assert body["externalConversationId"] == "support-42"
    assert body["productId"] == PRODUCT_ID
    assert body["model"] == "gpt-4o-mini-2024"
    assert body["systemPrompt"] == "You are terse."
    assert body["properties"] == {"gen_ai.provider.name": "openai"}
    messages = _messages(request)
    user, tool_call, observation, answer = messages
    assert user["role"] == "user"
    assert user["content"] == "Weather in Paris?"
    assert tool_call["messageType"] == "tool_call"
    assert tool_call["toolName"] == "get_weather"
    assert tool_call["input"] == {"city": "Paris"}
    assert json.loads(str(tool_call["content"])) == {"city": "Paris"}
    assert observation["messageType"] == "observation"
    assert observation["toolName"] == "get_weather"  # found through the tool call's id
    assert observation["content"] == "sunny"
    assert answer["role"] == "assistant"
    assert answer["model"] == "gpt-4o-mini-2024"
    assert answer["properties"] == {
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.id": "chatcmpl-1",
    }
    assert {m["createdAt"] for m in messages[:3]} == {"2026-04-24T03:06:40.000Z"}
    assert answer["createdAt"] == "2026-04-24T03:06:41.500Z"
    assert "properties" not in user
    assert not any(key.endswith("Tokens") or "token" in key for key in body)
    json.dumps(body)  # JSON all the way down


def test_organization_is_passed_on() -> None:
    ids = ConversationIds(
        product_id=PRODUCT_ID,
        external_conversation_id="c",
        external_user_id="u",
        external_organization_id="org-1",
    )
    assert _request(_call(OTEL_GENAI_SPANS[0]), ids).body["externalOrganizationId"] == "org-1"


def test_no_times_no_created_at() -> None:
    messages = _messages(_request(_call(OTEL_GENAI_SPANS[0])))
    assert all("createdAt" not in message for message in messages)


def test_user_id_falls_back_then_skips() -> None:
    call = _call(OTEL_GENAI_SPANS[0])
    anonymous = ConversationIds(product_id=PRODUCT_ID, external_conversation_id="c")
    request = _request(call, anonymous, default_external_user_id="anonymous")
    assert request.body["externalUserId"] == "anonymous"
    assert messages_body(call, anonymous) == Skipped("no user id")
    # the telemetry's own user id wins over the fallback
    assert _request(call, default_external_user_id="anonymous").body["externalUserId"] == "user-7"


def test_no_conversation_or_product_skips() -> None:
    call = _call(OTEL_GENAI_SPANS[0])
    no_conversation = ConversationIds(product_id=PRODUCT_ID, external_user_id="u")
    assert messages_body(call, no_conversation) == Skipped("no conversation id")
    no_product = ConversationIds(external_conversation_id="c", external_user_id="u")
    assert messages_body(call, no_product) == Skipped("no product id")


def test_text_is_cleaned_for_the_wire() -> None:
    attributes = _semconv([_text("user", "a\x00b\ud800c")])
    assert _messages(_request(_call(attributes)))[0]["content"] == "a\ufffdb\ufffdc"


def test_non_object_tool_arguments_are_wrapped() -> None:
    attributes = _semconv(
        [],
        [
            {
                "role": "assistant",
                "parts": [{"type": "tool_call", "id": "c", "name": "f", "arguments": [1, 2]}],
            }
        ],
    )
    assert _messages(_request(_call(attributes)))[0]["input"] == {"arguments": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Redaction, size limit, content off


def test_redaction_hook_replaces_content() -> None:
    seen: list[tuple[str, str]] = []

    def redact(content: str, role: str) -> str | None:
        seen.append((content, role))
        return content.replace("Paris", "[city]")

    options = MessageOptions(redact=redact)
    request = _request(_call(OTEL_GENAI_SPANS[1]), options=options)
    messages = _messages(request)
    assert messages[0]["content"] == "Weather in [city]?"
    assert messages[3]["content"] == "Sunny in [city]."
    assert "input" not in messages[1]  # arguments changed by the hook: only the redacted text
    assert "Paris" not in json.dumps(request.body)
    assert request.redacted == 3
    assert {role for _, role in seen} == {"user", "tool_call", "tool", "assistant", "system"}


def test_redaction_none_keeps_the_message_without_content() -> None:
    options = MessageOptions(redact=lambda content, role: None if role == "user" else content)
    request = _request(_call(OTEL_GENAI_SPANS[2]), options=options)
    messages = _messages(request)
    assert len(messages) == 6
    assert [m["content"] for m in messages if m.get("role") == "user"] == ["", ""]
    assert request.redacted == 2


def test_redaction_ids_follow_what_is_sent() -> None:
    call = _call(OTEL_GENAI_SPANS[0])
    plain = _request(call).message_ids
    redacted = _request(call, options=MessageOptions(redact=lambda c, r: "x")).message_ids
    assert plain != redacted
    again = _request(call, options=MessageOptions(redact=lambda c, r: "x")).message_ids
    assert redacted == again


def test_failing_redaction_hook_fails_closed() -> None:
    def broken(content: str, role: str) -> str:
        raise RuntimeError("bug in the application's hook")

    request = _request(_call(OTEL_GENAI_SPANS[1]), options=MessageOptions(redact=broken))
    assert all(message["content"] == "" for message in _messages(request))
    assert "systemPrompt" not in request.body
    assert request.redaction_failed == 5


def test_size_limit_cuts_at_a_character_boundary() -> None:
    text = "é" * 100  # 200 bytes
    attributes = _semconv([_text("user", text), _text("user", "short")])
    request = _request(_call(attributes), options=MessageOptions(max_message_bytes=50))
    first, second = _messages(request)
    content = str(first["content"])
    assert content.endswith(TRUNCATION_MARKER)
    assert len(content.encode("utf-8")) <= 50
    assert content[: -len(TRUNCATION_MARKER)] == "é" * len(content[: -len(TRUNCATION_MARKER)])
    assert second["content"] == "short"
    assert request.truncated == 1


def test_size_limit_drops_tool_input_but_keeps_cut_arguments() -> None:
    attributes = _semconv(
        [],
        [
            {
                "role": "assistant",
                "parts": [
                    {"type": "tool_call", "id": "c", "name": "f", "arguments": {"q": "x" * 500}}
                ],
            }
        ],
    )
    request = _request(_call(attributes), options=MessageOptions(max_message_bytes=100))
    (message,) = _messages(request)
    assert "input" not in message
    assert str(message["content"]).endswith(TRUNCATION_MARKER)
    assert request.truncated == 1


def test_size_limit_smaller_than_the_marker_sends_empty_content() -> None:
    attributes = _semconv([_text("user", "hello world")])
    request = _request(_call(attributes), options=MessageOptions(max_message_bytes=3))
    assert _messages(request)[0]["content"] == ""
    assert request.truncated == 1


def test_no_size_limit() -> None:
    text = "x" * 100_000
    attributes = _semconv([_text("user", text)])
    request = _request(_call(attributes), options=MessageOptions(max_message_bytes=None))
    assert _messages(request)[0]["content"] == text


def test_content_off_sends_structure_only() -> None:
    call = _call(OTEL_GENAI_SPANS[2])
    request = _request(call, options=MessageOptions(include_content=False))
    messages = _messages(request)
    assert len(messages) == 6
    assert all(message["content"] == "" for message in messages)
    assert "input" not in messages[1]
    assert messages[1]["toolName"] == "get_weather"
    assert "systemPrompt" not in request.body
    for word in ("Paris", "sunny", "terse", '"ok"'):
        assert word not in json.dumps(request.body)
    # ids carry no content: the same whatever was said
    other = _call(_semconv([_text("user", "something else")]))
    off = MessageOptions(include_content=False)
    assert _request(other, options=off).message_ids[0] == request.message_ids[0]
    assert request.message_ids != _request(call).message_ids


# ---------------------------------------------------------------------------------------------
# Nothing shows content


def test_reprs_show_no_content() -> None:
    call = _call(OTEL_GENAI_SPANS[2])
    request = _request(call)
    rating = rating_from_feedback(
        "stars", 4, RatingTarget(PRODUCT_ID, external_conversation_id="c"), feedback="Paris!"
    )
    texts = [
        repr(call),
        repr(call.input),
        repr(call.output),
        repr(ToolCall("c", "get_weather", {"city": "Paris"})),
        repr(request),
        repr(rating),
    ]
    for text in texts:
        for secret in ("Paris", "terse", "sunny"):
            assert secret not in text, text


# ---------------------------------------------------------------------------------------------
# Ratings from evaluations

TARGET = RatingTarget(PRODUCT_ID, external_conversation_id="support-42")


def _rating(result: object) -> Mapping[str, object]:
    assert isinstance(result, RatingRequest), result
    return result.body


@pytest.mark.parametrize(
    ("score", "low", "high"),
    [(0, 0, 1), (0.8, 0, 1), (1, 0, 1), (1.5, 0, 10), (7, 0, 10), (10, 0, 10), (42, 0, 100)],
)
def test_evaluation_score_range_is_inferred(score: float, low: int, high: int) -> None:
    body = _rating(rating_from_evaluation({"gen_ai.evaluation.score.value": score}, TARGET))
    assert (body["rating"], body["ratingMin"], body["ratingMax"]) == (score, low, high)


def test_evaluation_body() -> None:
    attributes = {
        "gen_ai.evaluation.name": "Relevance",
        "gen_ai.evaluation.score.value": 0.75,
        "gen_ai.evaluation.score.label": "relevant",
        "gen_ai.evaluation.explanation": "Answers the question.",
    }
    target = RatingTarget(PRODUCT_ID, external_message_id="otel-msg-1", conversation_id="x")
    body = _rating(rating_from_evaluation(attributes, target, rated_at_ns=START_NS))
    assert body == {
        "productId": PRODUCT_ID,
        "rating": 0.75,
        "ratingMin": 0,
        "ratingMax": 1,
        "externalMessageId": "otel-msg-1",  # the message, when known, over the conversation
        "feedback": "Relevance (relevant): Answers the question.",
        "ratedAt": "2026-04-24T03:06:40.000Z",
    }


@pytest.mark.parametrize(
    ("attributes", "feedback"),
    [
        ({"gen_ai.evaluation.name": "Tone"}, "Tone"),
        ({"gen_ai.evaluation.explanation": "Fine."}, "Fine."),
        ({"gen_ai.evaluation.score.label": "pass"}, "(pass)"),
        ({}, None),
    ],
)
def test_evaluation_feedback_text(attributes: Mapping[str, object], feedback: str | None) -> None:
    body = _rating(
        rating_from_evaluation({**attributes, "gen_ai.evaluation.score.value": 1}, TARGET)
    )
    assert body.get("feedback") == feedback


def test_evaluation_explicit_range() -> None:
    attributes = {
        "gen_ai.evaluation.score.value": 4,
        "greenflash.rating.min": 1,
        "greenflash.rating.max": 5,
    }
    body = _rating(rating_from_evaluation(attributes, TARGET))
    assert (body["rating"], body["ratingMin"], body["ratingMax"]) == (4, 1, 5)
    negative = {**attributes, "gen_ai.evaluation.score.value": -0.5, "greenflash.rating.min": -1}
    assert _rating(rating_from_evaluation(negative, TARGET))["ratingMin"] == -1


def test_evaluation_label_only_is_skipped() -> None:
    attributes = {"gen_ai.evaluation.name": "x", "gen_ai.evaluation.score.label": "pass"}
    assert rating_from_evaluation(attributes, TARGET) == Skipped(
        "evaluation with a label and no score"
    )


def test_evaluation_without_target_is_skipped() -> None:
    result = rating_from_evaluation({"gen_ai.evaluation.score.value": 1}, RatingTarget(PRODUCT_ID))
    assert result == Skipped("no conversation or message to rate")


@pytest.mark.parametrize(
    ("attributes", "attribute", "problem"),
    [
        ({}, "gen_ai.evaluation.score.value", "is missing"),
        (
            {"gen_ai.evaluation.score.value": "0.5"},
            "gen_ai.evaluation.score.value",
            "is a string in the wrong format",
        ),
        ({"gen_ai.evaluation.score.value": True}, "gen_ai.evaluation.score.value", "has type bool"),
        (
            {"gen_ai.evaluation.score.value": float("nan")},
            "gen_ai.evaluation.score.value",
            "is not a finite number",
        ),
        (
            {"gen_ai.evaluation.score.value": 101},
            "gen_ai.evaluation.score.value",
            "is out of range",
        ),
        ({"gen_ai.evaluation.score.value": -1}, "gen_ai.evaluation.score.value", "is out of range"),
        (
            {"gen_ai.evaluation.score.value": 3, "greenflash.rating.min": 1},
            "greenflash.rating.max",
            "is missing",
        ),
        (
            {
                "gen_ai.evaluation.score.value": 3,
                "greenflash.rating.min": 5,
                "greenflash.rating.max": 1,
            },
            "greenflash.rating.min",
            "is not below greenflash.rating.max",
        ),
        (
            {
                "gen_ai.evaluation.score.value": 9,
                "greenflash.rating.min": 1,
                "greenflash.rating.max": 5,
            },
            "gen_ai.evaluation.score.value",
            "is out of range",
        ),
    ],
)
def test_evaluation_invalid(attributes: Mapping[str, object], attribute: str, problem: str) -> None:
    invalid = _invalid(rating_from_evaluation(attributes, TARGET))
    assert (invalid.attribute, invalid.problem) == (attribute, problem)
    assert invalid.source == "log record"
    assert invalid.span_name == "gen_ai.evaluation.result"


# ---------------------------------------------------------------------------------------------
# Ratings from user feedback


@pytest.mark.parametrize(
    ("kind", "value", "rating", "low", "high"),
    [
        ("thumbs", True, 1, 0, 1),
        ("thumbs", False, 0, 0, 1),
        ("thumbs", "up", 1, 0, 1),
        ("thumbs", " Down ", 0, 0, 1),
        ("thumbs", 1, 1, 0, 1),
        ("thumbs", 0, 0, 0, 1),
        ("stars", 1, 1, 1, 5),
        ("stars", 5, 5, 1, 5),
    ],
)
def test_feedback_ratings(kind: str, value: object, rating: int, low: int, high: int) -> None:
    body = _rating(
        rating_from_feedback(kind, value, TARGET, feedback="Great", rated_at_ns=START_NS)
    )
    assert (body["rating"], body["ratingMin"], body["ratingMax"]) == (rating, low, high)
    assert body["feedback"] == "Great"
    assert body["externalConversationId"] == "support-42"
    assert body["ratedAt"] == "2026-04-24T03:06:40.000Z"


@pytest.mark.parametrize(
    ("kind", "value", "argument", "problem"),
    [
        ("thumbs", "sideways", "value", "is not a thumbs value"),
        ("thumbs", 2, "value", "is not a thumbs value"),
        ("thumbs", 0.5, "value", "has type float"),
        ("thumbs", None, "value", "has type NoneType"),
        ("stars", 0, "value", "is out of range"),
        ("stars", 6, "value", "is out of range"),
        ("stars", 4.5, "value", "has type float"),
        ("stars", True, "value", "has type bool"),
        ("stars", "5", "value", "is a string in the wrong format"),
        ("hearts", 1, "kind", "is not a known kind"),
    ],
)
def test_feedback_invalid(kind: str, value: object, argument: str, problem: str) -> None:
    invalid = _invalid(rating_from_feedback(kind, value, TARGET))
    assert (invalid.attribute, invalid.problem) == (argument, problem)
    assert invalid.source == "feedback"
    assert invalid.allowed


def test_feedback_without_target_is_invalid() -> None:
    invalid = _invalid(rating_from_feedback("thumbs", True, RatingTarget(PRODUCT_ID)))
    assert invalid.attribute == "target"
