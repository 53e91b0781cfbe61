"""Tests of the message rules (``otel_greenflash._map.message_rules``): stable message ids,
``/messages`` bodies, redaction, the size limit and content off. The recorded calls come from the
real packages (see :mod:`tests.map.genai_recorded`): one conversation of three chat calls with a
tool call, its result, and a duplicate "ok".
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_greenflash._map.genai_calls import Skipped, ToolCall
from otel_greenflash._map.message_rules import (
    TRUNCATION_MARKER,
    ConversationIds,
    MessageOptions,
    message_ids,
    messages_body,
)
from otel_greenflash._map.rating_rules import RatingTarget, rating_from_feedback
from tests.map.genai_recorded import OTEL_GENAI_SPANS
from tests.map.genai_support import (
    CONVERSATIONS,
    END_NS,
    IDS,
    START_NS,
    read_call,
    request_for,
    semconv_attributes,
    sent_messages,
    text_message,
)
from tests.support.common import CONVERSATION_ID, PRODUCT_ID

# ---------------------------------------------------------------------------------------------
# Message ids


@pytest.mark.parametrize("stack", sorted(CONVERSATIONS))
def test_history_keeps_its_ids_from_call_to_call(stack: str) -> None:
    """The output of call N is history in call N+1: same id both times, so every call's ids
    begin with all ids of the call before."""
    _, recorded = CONVERSATIONS[stack]
    per_call = [request_for(read_call(attributes)).message_ids for attributes in recorded]
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
    history: list[dict[str, object]] = [text_message("system", "S")]
    previous: tuple[str, ...] = ()
    for number, (question, answer, uses_tool) in enumerate(turns):
        history.append(text_message("user", question))
        if uses_tool:
            call = {"type": "tool_call", "id": f"c{number}", "name": "f", "arguments": {"n": 1}}
            tool_turn: dict[str, object] = {"role": "assistant", "parts": [call]}
            request = request_for(read_call(semconv_attributes(history, [tool_turn])))
            assert request.message_ids[: len(previous)] == previous
            previous = request.message_ids
            history.append(tool_turn)
            result: dict[str, object] = {
                "type": "tool_call_response",
                "id": f"c{number}",
                "response": answer,
            }
            history.append({"role": "tool", "parts": [result]})
        output = text_message("assistant", answer)
        request = request_for(read_call(semconv_attributes(history, [output])))
        assert request.message_ids[: len(previous)] == previous
        assert len(set(request.message_ids)) == len(request.message_ids)
        previous = request.message_ids
        history.append(output)


def test_every_convention_gives_the_same_ids() -> None:
    ids = {
        stack: request_for(read_call(recorded[2])).message_ids
        for stack, (_, recorded) in CONVERSATIONS.items()
    }
    assert len(set(ids.values())) == 1, ids


def test_threading_follows_the_history() -> None:
    messages = sent_messages(request_for(read_call(OTEL_GENAI_SPANS[2])))
    assert "parentExternalMessageId" not in messages[0]
    for before, message in itertools.pairwise(messages):
        assert message["parentExternalMessageId"] == before["externalMessageId"]


def test_identical_messages_at_different_positions_get_different_ids() -> None:
    attributes = semconv_attributes(
        [text_message("user", "ok"), text_message("assistant", "ok"), text_message("user", "ok")],
        [text_message("assistant", "ok")],
    )
    ids = request_for(read_call(attributes)).message_ids
    assert len(set(ids)) == 4


def test_ids_depend_on_the_conversation() -> None:
    call = read_call(OTEL_GENAI_SPANS[0])
    other = ConversationIds(
        product_id=PRODUCT_ID, external_conversation_id="support-43", external_user_id="user-7"
    )
    assert set(message_ids(call, IDS)).isdisjoint(message_ids(call, other))


def test_ids_do_not_depend_on_user_or_product() -> None:
    call = read_call(OTEL_GENAI_SPANS[0])
    other = ConversationIds(
        product_id="9a1c3e5f-7b2d-4c6e-8f0a-1b3d5f7a9c2e",
        external_conversation_id="support-42",
        external_user_id="someone-else",
    )
    assert message_ids(call, IDS) == message_ids(call, other)


def test_greenflash_conversation_id_is_the_key_without_an_external_one() -> None:
    ids = ConversationIds(conversation_id=CONVERSATION_ID, external_user_id="u")
    request = request_for(read_call(OTEL_GENAI_SPANS[0]), ids)
    assert request.body["conversationId"] == CONVERSATION_ID
    assert "productId" not in request.body
    assert request.message_ids != request_for(read_call(OTEL_GENAI_SPANS[0])).message_ids


def test_changing_system_prompt_moves_no_id() -> None:
    def ids_with(system: str) -> tuple[str, ...]:
        attributes = semconv_attributes(
            [text_message("system", system), text_message("user", "hi")]
        )
        return request_for(read_call(attributes)).message_ids

    assert ids_with("Today is Monday.") == ids_with("Today is Tuesday.")
    without = request_for(read_call(semconv_attributes([text_message("user", "hi")]))).message_ids
    assert without == ids_with("Anything.")


def test_edited_message_gets_a_new_id_and_so_do_the_ones_after() -> None:
    first = request_for(
        read_call(
            semconv_attributes([text_message("user", "hi"), text_message("assistant", "hello")])
        )
    )
    edited = request_for(
        read_call(
            semconv_attributes([text_message("user", "hey"), text_message("assistant", "hello")])
        )
    )
    assert first.message_ids[0] != edited.message_ids[0]
    # same position, same content: the same message (the API keeps the first)
    assert first.message_ids[1] == edited.message_ids[1]


def test_empty_output_message_takes_no_position() -> None:
    # The OTel GenAI instrumentation records an output without parts but drops a history
    # message without parts: neither takes a position, so the next message keeps its id.
    with_empty = semconv_attributes(
        [text_message("user", "hi")], [{"role": "assistant", "parts": []}]
    )
    call = read_call(with_empty)
    assert (
        request_for(call).message_ids
        == request_for(read_call(semconv_attributes([text_message("user", "hi")]))).message_ids
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
        return request_for(read_call(attributes)).message_ids

    assert ids_with('{"a": 1, "b": 2}') == ids_with('{"b":2,"a":1}')


# ---------------------------------------------------------------------------------------------
# Bodies


def test_body_fields() -> None:
    call = read_call(OTEL_GENAI_SPANS[1])
    request = request_for(call, start_time_ns=START_NS, end_time_ns=END_NS)
    body = request.body
    assert body["externalUserId"] == "user-7"
    assert body["externalConversationId"] == "support-42"
    assert body["productId"] == PRODUCT_ID
    assert body["model"] == "gpt-4o-mini-2024"
    assert body["systemPrompt"] == "You are terse."
    assert body["properties"] == {"gen_ai.provider.name": "openai"}
    messages = sent_messages(request)
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
    assert (
        request_for(read_call(OTEL_GENAI_SPANS[0]), ids).body["externalOrganizationId"] == "org-1"
    )


def test_no_times_no_created_at() -> None:
    messages = sent_messages(request_for(read_call(OTEL_GENAI_SPANS[0])))
    assert all("createdAt" not in message for message in messages)


def test_user_id_falls_back_then_skips() -> None:
    call = read_call(OTEL_GENAI_SPANS[0])
    anonymous = ConversationIds(product_id=PRODUCT_ID, external_conversation_id="c")
    request = request_for(call, anonymous, default_external_user_id="anonymous")
    assert request.body["externalUserId"] == "anonymous"
    assert messages_body(call, anonymous) == Skipped("no user id")
    # the telemetry's own user id wins over the fallback
    assert (
        request_for(call, default_external_user_id="anonymous").body["externalUserId"] == "user-7"
    )


def test_no_conversation_or_product_skips() -> None:
    call = read_call(OTEL_GENAI_SPANS[0])
    no_conversation = ConversationIds(product_id=PRODUCT_ID, external_user_id="u")
    assert messages_body(call, no_conversation) == Skipped("no conversation id")
    no_product = ConversationIds(external_conversation_id="c", external_user_id="u")
    assert messages_body(call, no_product) == Skipped("no product id")


def test_text_is_cleaned_for_the_wire() -> None:
    attributes = semconv_attributes([text_message("user", "a\x00b\ud800c")])
    assert sent_messages(request_for(read_call(attributes)))[0]["content"] == "a\ufffdb\ufffdc"


def test_non_object_tool_arguments_are_wrapped() -> None:
    attributes = semconv_attributes(
        [],
        [
            {
                "role": "assistant",
                "parts": [{"type": "tool_call", "id": "c", "name": "f", "arguments": [1, 2]}],
            }
        ],
    )
    assert sent_messages(request_for(read_call(attributes)))[0]["input"] == {"arguments": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Redaction, size limit, content off


def test_redaction_hook_replaces_content() -> None:
    seen: list[tuple[str, str]] = []

    def redact(content: str, role: str) -> str | None:
        seen.append((content, role))
        return content.replace("Paris", "[city]")

    options = MessageOptions(redact=redact)
    request = request_for(read_call(OTEL_GENAI_SPANS[1]), options=options)
    messages = sent_messages(request)
    assert messages[0]["content"] == "Weather in [city]?"
    assert messages[3]["content"] == "Sunny in [city]."
    assert "input" not in messages[1]  # arguments changed by the hook: only the redacted text
    assert "Paris" not in json.dumps(request.body)
    assert request.redacted == 3
    assert {role for _, role in seen} == {"user", "tool_call", "tool", "assistant", "system"}


def test_redaction_none_keeps_the_message_without_content() -> None:
    options = MessageOptions(redact=lambda content, role: None if role == "user" else content)
    request = request_for(read_call(OTEL_GENAI_SPANS[2]), options=options)
    messages = sent_messages(request)
    assert len(messages) == 6
    assert [m["content"] for m in messages if m.get("role") == "user"] == ["", ""]
    assert request.redacted == 2


def test_redaction_ids_follow_what_is_sent() -> None:
    call = read_call(OTEL_GENAI_SPANS[0])
    plain = request_for(call).message_ids
    redacted = request_for(call, options=MessageOptions(redact=lambda c, r: "x")).message_ids
    assert plain != redacted
    again = request_for(call, options=MessageOptions(redact=lambda c, r: "x")).message_ids
    assert redacted == again


def test_failing_redaction_hook_fails_closed() -> None:
    def broken(content: str, role: str) -> str:
        raise RuntimeError("bug in the application's hook")

    request = request_for(read_call(OTEL_GENAI_SPANS[1]), options=MessageOptions(redact=broken))
    assert all(message["content"] == "" for message in sent_messages(request))
    assert "systemPrompt" not in request.body
    assert request.redaction_failed == 5


def test_size_limit_cuts_at_a_character_boundary() -> None:
    text = "é" * 100  # 200 bytes
    attributes = semconv_attributes([text_message("user", text), text_message("user", "short")])
    request = request_for(read_call(attributes), options=MessageOptions(max_message_bytes=50))
    first, second = sent_messages(request)
    content = str(first["content"])
    assert content.endswith(TRUNCATION_MARKER)
    assert len(content.encode("utf-8")) <= 50
    assert content[: -len(TRUNCATION_MARKER)] == "é" * len(content[: -len(TRUNCATION_MARKER)])
    assert second["content"] == "short"
    assert request.truncated == 1


def test_size_limit_drops_tool_input_but_keeps_cut_arguments() -> None:
    attributes = semconv_attributes(
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
    request = request_for(read_call(attributes), options=MessageOptions(max_message_bytes=100))
    (message,) = sent_messages(request)
    assert "input" not in message
    assert str(message["content"]).endswith(TRUNCATION_MARKER)
    assert request.truncated == 1


def test_size_limit_smaller_than_the_marker_sends_empty_content() -> None:
    attributes = semconv_attributes([text_message("user", "hello world")])
    request = request_for(read_call(attributes), options=MessageOptions(max_message_bytes=3))
    assert sent_messages(request)[0]["content"] == ""
    assert request.truncated == 1


def test_no_size_limit() -> None:
    text = "x" * 100_000
    attributes = semconv_attributes([text_message("user", text)])
    request = request_for(read_call(attributes), options=MessageOptions(max_message_bytes=None))
    assert sent_messages(request)[0]["content"] == text


def test_content_off_sends_structure_only() -> None:
    call = read_call(OTEL_GENAI_SPANS[2])
    request = request_for(call, options=MessageOptions(include_content=False))
    messages = sent_messages(request)
    assert len(messages) == 6
    assert all(message["content"] == "" for message in messages)
    assert "input" not in messages[1]
    assert messages[1]["toolName"] == "get_weather"
    assert "systemPrompt" not in request.body
    for word in ("Paris", "sunny", "terse", '"ok"'):
        assert word not in json.dumps(request.body)
    # ids carry no content: the same whatever was said
    other = read_call(semconv_attributes([text_message("user", "something else")]))
    off = MessageOptions(include_content=False)
    assert request_for(other, options=off).message_ids[0] == request.message_ids[0]
    assert request.message_ids != request_for(call).message_ids


# ---------------------------------------------------------------------------------------------
# Nothing shows content


def test_reprs_show_no_content() -> None:
    call = read_call(OTEL_GENAI_SPANS[2])
    request = request_for(call)
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
