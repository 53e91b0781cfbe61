"""Requests of the three kinds for delivery and spool tests: an event, a Messages API request
and a rating, each valid for the local server's contract checks."""

from __future__ import annotations

from typing import Any

from otel_greenflash import BusinessEvent
from otel_greenflash._event import ApiRequest
from tests.support.common import PRODUCT_ID


def an_event(insert_id: str = "otel-endpoints-1") -> BusinessEvent:
    body = {"eventType": "upgrade", "productId": PRODUCT_ID, "value": "1", "insertId": insert_id}
    return BusinessEvent(body, insert_id, "billing.upgrade")


def a_messages_request(conversation: str = "chat-1", turns: int = 2) -> ApiRequest:
    messages: list[dict[str, Any]] = []
    for index in range(turns):
        message = {
            "role": "user" if index % 2 == 0 else "assistant",
            "content": f"turn {index} of {conversation}",
            "externalMessageId": f"{conversation}-m{index}",
        }
        if index:
            message["parentExternalMessageId"] = f"{conversation}-m{index - 1}"
        messages.append(message)
    body = {
        "externalUserId": "user-1",
        "productId": PRODUCT_ID,
        "externalConversationId": conversation,
        "messages": messages,
    }
    return ApiRequest.messages(body, "chat gpt-4o")


def a_rating(score: int = 4, conversation: str = "chat-1") -> ApiRequest:
    body = {
        "productId": PRODUCT_ID,
        "rating": score,
        "ratingMin": 1,
        "ratingMax": 5,
        "externalConversationId": conversation,
        "feedback": "private words",
    }
    return ApiRequest.rating(body, "gen_ai.evaluation.result")
