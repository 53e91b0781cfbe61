"""What the GenAI rules' tests share: the recorded conversation in each stack, the ids it is
sent under, and short helpers that read a call and write its body."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from otel_greenflash._event import InvalidAttribute
from otel_greenflash._map.genai_calls import INDEXED, OPENINFERENCE, SEMCONV, LlmCall, read_llm_call
from otel_greenflash._map.message_rules import ConversationIds, MessagesRequest, messages_body
from tests.map.genai_recorded import (
    INDEXED_SPANS,
    OPENINFERENCE_SPANS,
    OPENLLMETRY_SPANS,
    OTEL_GENAI_EVENTS,
    OTEL_GENAI_SPANS,
)
from tests.support.common import PRODUCT_ID

IDS = ConversationIds(
    product_id=PRODUCT_ID, external_conversation_id="support-42", external_user_id="user-7"
)
START_NS = 1_777_000_000_000_000_000
END_NS = START_NS + 1_500_000_000


CONVERSATIONS: dict[str, tuple[str, Sequence[Mapping[str, object]]]] = {
    "otel-genai-spans": (SEMCONV, OTEL_GENAI_SPANS),
    "otel-genai-events": (SEMCONV, OTEL_GENAI_EVENTS),
    "openinference": (OPENINFERENCE, OPENINFERENCE_SPANS),
    "openllmetry": (SEMCONV, OPENLLMETRY_SPANS),
    "openllmetry-indexed": (INDEXED, INDEXED_SPANS),
}


def read_call(attributes: Mapping[str, object]) -> LlmCall:
    call = read_llm_call(attributes, source_name="chat gpt-4o-mini")
    assert isinstance(call, LlmCall), call
    return call


def request_for(call: LlmCall, ids: ConversationIds = IDS, **kwargs: object) -> MessagesRequest:
    request = messages_body(call, ids, **kwargs)  # type: ignore[arg-type]
    assert isinstance(request, MessagesRequest), request
    return request


def sent_messages(request: MessagesRequest) -> list[dict[str, object]]:
    messages = request.body["messages"]
    assert isinstance(messages, list)
    return messages


def as_invalid(result: object) -> InvalidAttribute:
    assert isinstance(result, InvalidAttribute), result
    return result


def semconv_attributes(
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


def text_message(role: str, content: str) -> dict[str, object]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}
