"""``POST /messages`` and ``POST /ratings`` on the local server, spoken to with plain httpx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from otel_greenflash.testing import (
    EventsApiServer,
    Fault,
    validate_messages_body,
    validate_rating_body,
)
from tests.support.common import CONVERSATION_ID, PRODUCT_ID
from tests.support.independent_receiver import messages_contract_errors, rating_contract_errors

OTHER_PRODUCT_ID = "7c1e2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
EVENT = {"eventType": "signup_completed", "productId": PRODUCT_ID, "value": "1"}


def chat(*messages: dict[str, Any], conversation: str = "chat-1", **extra: Any) -> dict[str, Any]:
    """A valid ``POST /messages`` body for conversation ``conversation`` of PRODUCT_ID."""
    return {
        "externalUserId": "user-1",
        "productId": PRODUCT_ID,
        "externalConversationId": conversation,
        "messages": list(messages) or [user("hello")],
        **extra,
    }


def user(content: str, external_id: str | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": content, **extra}
    if external_id is not None:
        message["externalMessageId"] = external_id
    return message


RATING = {
    "productId": PRODUCT_ID,
    "rating": 4,
    "ratingMin": 1,
    "ratingMax": 5,
    "externalConversationId": "chat-1",
}


BROKEN_MESSAGES: list[tuple[Any, str]] = [
    ({"role": "user"}, "messages[0].content is required"),
    ({"content": "hi"}, "role or messageType is required"),
    ({"role": "user", "content": 7}, "messages[0].content must be a string"),
    ({"role": "robot", "content": "hi"}, "role must be one of user, assistant, system"),
    ({"messageType": "user", "content": "hi"}, "messageType must be one of"),
    ({"messageType": "tool_call", "content": ""}, "toolName is required"),
    ({"role": "user", "messageType": "user_message", "content": "hi"}, "both role and"),
    ({"role": "user", "content": "hi", "input": "x"}, "messages[0].input must be an object"),
    ({"role": "user", "content": "hi", "output": []}, "messages[0].output must be an object"),
    ({"role": "user", "content": "hi", "createdAt": "yesterday"}, "createdAt must be an ISO"),
    ({"role": "user", "content": "hi", "createdAt": "2026-05-01T12:00:00"}, "createdAt"),
    ({"role": "user", "content": "hi", "externalMessageId": 5}, "externalMessageId"),
    ({"role": "user", "content": "hi", "externalMessageId": ""}, "externalMessageId"),
    ({"role": "user", "content": "hi", "parentMessageId": "m-0"}, "parentMessageId must be"),
    (
        {"role": "user", "content": "hi", "parentMessageId": CONVERSATION_ID}
        | {"parentExternalMessageId": "m-0"},
        "both parentMessageId and parentExternalMessageId",
    ),
    ({"role": "user", "content": "hi", "model": 4}, "messages[0].model must be a string"),
    ({"role": "user", "content": "hi", "properties": "x"}, "messages[0].properties must"),
    ({"role": "user", "content": "hi", "tokens": 3}, "unknown field 'tokens'"),
    ("hi", "messages[0] must be an object"),
]
BROKEN_BODY_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"messages": []}, "messages must not be empty"),
    ({"messages": {"role": "user"}}, "messages must be an array"),
    ({"externalUserId": ""}, "externalUserId must be a non-empty string"),
    ({"externalConversationId": 12}, "externalConversationId must be a non-empty string"),
    ({"conversationId": "chat-1"}, "conversationId must be a UUID"),
    ({"productId": "product"}, "productId must be a UUID"),
    ({"model": ["gpt"]}, "model must be a string"),
    ({"properties": [1]}, "properties must be an object"),
    ({"systemPrompt": 3}, "systemPrompt must be a string or an object"),
    ({"systemPrompt": {"variables": {}}}, "systemPrompt needs content"),
    ({"systemPrompt": {"content": "a", "components": []}}, "both content and components"),
    ({"sampleRate": 1.5}, "sampleRate must be a number from 0 to 1"),
    ({"forceSample": "yes"}, "forceSample must be a boolean"),
    ({"totalTokens": 3}, "unknown field 'totalTokens'"),
]
BROKEN_RATINGS: list[tuple[dict[str, Any], str]] = [
    ({"externalConversationId": None}, "exactly one of conversationId"),
    ({"externalMessageId": "m-1"}, "(got externalConversationId, externalMessageId)"),
    ({"rating": 6}, "rating must be between ratingMin and ratingMax"),
    ({"rating": 0.5}, "rating must be between"),
    ({"ratingMin": 5}, "ratingMin must be less than ratingMax"),
    ({"rating": "4"}, "rating must be a finite number"),
    ({"ratingMax": True}, "ratingMax must be a finite number"),
    ({"productId": "shop"}, "productId must be a UUID"),
    ({"feedback": 5}, "feedback must be a string"),
    ({"ratedAt": "2026-05-01"}, "ratedAt must be an ISO 8601 date-time"),
    ({"stars": 4}, "unknown field 'stars'"),
]


def post(
    server: EventsApiServer, endpoint: str, body: Any, key: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/{endpoint}",
        json=body,
        headers={"Authorization": f"Bearer {key or server.api_key}"},
        timeout=10,
    )


def assert_rejected(response: httpx.Response, *names: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["success"] is False
    for name in names:
        assert name in response.json()["error"]


def changed(body: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``body`` updated by ``change``; a ``None`` in ``change`` removes that field."""
    merged = {**body, **change}
    return {key: value for key, value in merged.items() if value is not None}


def without(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in names}


# --------------------------------------------------------------------------- /messages contract


def test_a_valid_messages_body_is_answered_like_the_api(server: EventsApiServer) -> None:
    body = chat(
        user("I want to upgrade", "m-1"),
        {"messageType": "tool_call", "toolName": "lookup_plan", "content": "", "input": {}},
        {"role": "assistant", "content": "Done", "externalMessageId": "m-3"},
    )
    response = post(server, "messages", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["success"] is True
    assert [m["messageType"] for m in answer["messages"]] == [
        "user_message",
        "tool_call",
        "assistant_message",
    ]
    assert [m["status"] for m in answer["messages"]] == ["created"] * 3
    assert [m["externalMessageId"] for m in answer["messages"]] == ["m-1", None, "m-3"]
    assert len({m["messageId"] for m in answer["messages"]}) == 3
    [conversation] = server.conversations()
    assert conversation.conversation_id == answer["conversationId"]
    assert [m.message_id for m in conversation.messages] == [
        m["messageId"] for m in answer["messages"]
    ]
    assert conversation.messages[1].body["toolName"] == "lookup_plan"
    assert server.messages == [body]
    assert server.stored_message_count == 3


def test_every_optional_field_of_the_contract_is_accepted(server: EventsApiServer) -> None:
    message = {
        "messageType": "final_response",
        "content": "Here you go",
        "context": None,
        "input": {"q": "plan"},
        "output": {"plan": "pro"},
        "createdAt": "2026-05-01T12:00:00.123Z",
        "externalMessageId": "m-1",
        "parentExternalMessageId": "m-0",
        "model": "gpt-4o",
        "properties": {"gen_ai.usage.input_tokens": 12},
    }
    body = chat(
        message,
        externalOrganizationId="acme",
        model="gpt-4o",
        properties={"channel": "web"},
        systemPrompt={"content": "Be brief", "variables": {"name": "Ada"}},
        sampleRate=0.25,
        forceSample=True,
    )
    assert post(server, "messages", body).status_code == 200
    assert post(server, "messages", chat(systemPrompt="Be brief")).status_code == 200


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        (("externalUserId",), "externalUserId"),
        (("messages",), "messages"),
        (("productId", "externalConversationId"), "conversationId, externalConversationId"),
    ],
)
def test_a_missing_required_field_is_named(
    server: EventsApiServer, missing: tuple[str, ...], named: str
) -> None:
    assert_rejected(post(server, "messages", without(chat(), *missing)), named)
    assert server.messages == []
    assert server.conversations() == []


@pytest.mark.parametrize(("message", "named"), BROKEN_MESSAGES)
def test_a_message_breaking_the_contract_is_named(
    server: EventsApiServer, message: Any, named: str
) -> None:
    assert_rejected(post(server, "messages", chat(message)), named)
    assert server.stored_message_count == 0


@pytest.mark.parametrize(("extra", "named"), BROKEN_BODY_FIELDS)
def test_a_body_field_breaking_the_contract_is_named(
    server: EventsApiServer, extra: dict[str, Any], named: str
) -> None:
    assert_rejected(post(server, "messages", chat(**extra)), named)


def test_messages_need_the_key_and_json(server: EventsApiServer) -> None:
    assert post(server, "messages", chat(), key="nope").status_code == 401
    response = httpx.post(
        server.base_url + "/messages",
        content=b'{"externalUserId": "u"',
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert server.messages == []


# --------------------------------------------------------------------------- conversations


def test_a_resent_history_is_stored_once_in_order(server: EventsApiServer) -> None:
    first = post(server, "messages", chat(user("a", "m-1"), user("b", "m-2"))).json()
    history = chat(user("a", "m-1"), user("b", "m-2"), user("c", "m-3"))
    second = post(server, "messages", history).json()
    assert [m["status"] for m in second["messages"]] == ["deduplicated", "deduplicated", "created"]
    assert [m["messageId"] for m in second["messages"][:2]] == [
        m["messageId"] for m in first["messages"]
    ]
    assert second["conversationId"] == first["conversationId"]
    conversation = server.conversation("chat-1")
    assert [m.content for m in conversation.messages] == ["a", "b", "c"]
    assert [m.external_message_id for m in conversation.messages] == ["m-1", "m-2", "m-3"]
    assert server.deduplicated_messages == 2
    assert len(server.messages) == 2  # request bodies, re-sends included


def test_a_repeated_id_within_one_batch_is_deduplicated(server: EventsApiServer) -> None:
    answer = post(server, "messages", chat(user("a", "m-1"), user("a again", "m-1"))).json()
    assert [m["status"] for m in answer["messages"]] == ["created", "deduplicated"]
    assert [m.content for m in server.conversation("chat-1").messages] == ["a"]


def test_messages_without_an_external_id_are_stored_every_time(server: EventsApiServer) -> None:
    post(server, "messages", chat(user("a")))
    post(server, "messages", chat(user("a")))
    assert [m.content for m in server.conversation("chat-1").messages] == ["a", "a"]
    assert server.deduplicated_messages == 0


def test_the_same_external_message_id_in_two_conversations_is_two_messages(
    server: EventsApiServer,
) -> None:
    one = post(server, "messages", chat(user("a", "m-1"), conversation="chat-A")).json()
    two = post(server, "messages", chat(user("a", "m-1"), conversation="chat-B")).json()
    assert one["conversationId"] != two["conversationId"]
    assert one["messages"][0]["status"] == two["messages"][0]["status"] == "created"
    assert server.stored_message_count == 2
    assert server.deduplicated_messages == 0


def test_conversation_ids_are_stable_per_product_and_external_id(server: EventsApiServer) -> None:
    first = post(server, "messages", chat()).json()["conversationId"]
    assert post(server, "messages", chat()).json()["conversationId"] == first
    other = post(server, "messages", chat(productId=OTHER_PRODUCT_ID)).json()["conversationId"]
    assert other != first
    with EventsApiServer() as another_server:  # derived from the pair, so the same everywhere
        assert post(another_server, "messages", chat()).json()["conversationId"] == first
    by_id = without(chat(user("by id", "m-9")), "productId", "externalConversationId")
    answer = post(server, "messages", {**by_id, "conversationId": first}).json()
    assert answer["conversationId"] == first
    assert server.conversation("chat-1", PRODUCT_ID).messages[-1].content == "by id"
    with pytest.raises(LookupError):
        server.conversation("chat-1")  # two products have a chat-1
    assert len(server.conversations()) == 2


def test_a_product_id_alone_starts_a_new_conversation_each_time(server: EventsApiServer) -> None:
    body = without(chat(), "externalConversationId")
    ids = {post(server, "messages", body).json()["conversationId"] for _ in range(2)}
    assert len(ids) == 2
    assert all(c.external_conversation_id is None for c in server.conversations())


def test_parents_are_resolved_within_the_conversation(server: EventsApiServer) -> None:
    post(server, "messages", chat(user("q", "m-1")))
    reply = {"role": "assistant", "content": "a", "externalMessageId": "m-2"}
    orphan = {"role": "assistant", "content": "b", "parentExternalMessageId": "m-404"}
    post(server, "messages", chat({**reply, "parentExternalMessageId": "m-1"}, orphan))
    conversation = server.conversation("chat-1")
    question, answer, lost = conversation.messages
    assert answer.parent_message_id == question.message_id
    assert answer.parent_external_message_id == "m-1"
    assert conversation.by_external_id("m-2") is answer
    assert lost.parent_message_id is None
    assert lost.parent_external_message_id == "m-404"


# --------------------------------------------------------------------------- /ratings


def test_a_valid_rating_is_answered_like_the_api(server: EventsApiServer) -> None:
    body = {**RATING, "feedback": "helpful", "ratedAt": "2026-05-01T12:00:00+02:00"}
    response = post(server, "ratings", body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert server.ratings == [body]


@pytest.mark.parametrize("target", ["conversationId", "messageId"])
def test_greenflash_ids_are_targets_too(server: EventsApiServer, target: str) -> None:
    body = {**without(RATING, "externalConversationId"), target: CONVERSATION_ID}
    assert post(server, "ratings", body).status_code == 200
    body = {**without(RATING, "externalConversationId"), "externalMessageId": "m-1"}
    assert post(server, "ratings", body).status_code == 200


@pytest.mark.parametrize("missing", ["productId", "rating", "ratingMin", "ratingMax"])
def test_a_rating_without_a_required_field_is_named(server: EventsApiServer, missing: str) -> None:
    assert_rejected(post(server, "ratings", without(RATING, missing)), f"{missing} is required")
    assert server.ratings == []


@pytest.mark.parametrize(("change", "named"), BROKEN_RATINGS)
def test_a_rating_breaking_the_contract_is_named(
    server: EventsApiServer, change: dict[str, Any], named: str
) -> None:
    body = changed(RATING, change)
    assert_rejected(post(server, "ratings", body), named)
    assert server.ratings == []


def test_ratings_are_never_deduplicated(server: EventsApiServer) -> None:
    assert [post(server, "ratings", RATING).status_code for _ in range(2)] == [200, 200]
    assert server.ratings == [RATING, RATING]


# --------------------------------------------------------------------------- faults


def test_faults_apply_to_messages_and_a_resend_after_a_lost_answer_is_deduplicated(
    server: EventsApiServer,
) -> None:
    body = chat(user("a", "m-1"))
    server.inject(Fault(status=503, retry_after="1"))
    server.inject(Fault(lose_response=True))
    assert post(server, "messages", body).status_code == 503
    with pytest.raises(httpx.TransportError):
        post(server, "messages", body)
    answer = post(server, "messages", body).json()
    assert answer["messages"][0]["status"] == "deduplicated"
    assert [r.status for r in server.requests] == [503, 200, 200]
    assert len(server.conversation("chat-1").messages) == 1
    assert server.deduplicated_messages == 1


def test_a_rating_resent_after_a_lost_answer_is_stored_twice(server: EventsApiServer) -> None:
    server.inject(Fault(lose_response=True))
    with pytest.raises(httpx.TransportError):
        post(server, "ratings", RATING)
    assert post(server, "ratings", RATING).status_code == 200
    assert server.ratings == [RATING, RATING]


def test_faults_dropped_on_ratings_store_nothing(server: EventsApiServer) -> None:
    server.inject(Fault(drop=True))
    server.inject(Fault(status=429, retry_after="2"))
    with pytest.raises(httpx.TransportError):
        post(server, "ratings", RATING)
    response = post(server, "ratings", RATING)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "2")
    assert server.ratings == []
    assert post(server, "ratings", RATING).status_code == 200


def test_a_fault_can_target_one_endpoint(server: EventsApiServer) -> None:
    server.inject(Fault(status=500), times=2, endpoint="ratings")
    server.inject(Fault(status=429), endpoint="messages")
    assert post(server, "events", EVENT).status_code == 200
    assert post(server, "messages", chat()).status_code == 429
    assert post(server, "messages", chat()).status_code == 200
    assert [post(server, "ratings", RATING).status_code for _ in range(3)] == [500, 500, 200]
    server.inject(Fault(status=503))  # untargeted: the next request of any endpoint
    assert post(server, "events", EVENT).status_code == 503
    with pytest.raises(ValueError, match="endpoint"):
        server.inject(Fault(status=500), endpoint="rating")


# --------------------------------------------------------------------------- waiting, resetting


def test_wait_for_messages_and_ratings(server: EventsApiServer) -> None:
    assert server.wait_for_messages(1, timeout_seconds=0.1) is False
    assert server.wait_for_ratings(1, timeout_seconds=0.1) is False
    post(server, "messages", chat(user("a", "m-1"), user("b", "m-2")))
    post(server, "messages", chat(user("a", "m-1")))  # deduplicated: not counted again
    post(server, "ratings", RATING)
    assert server.wait_for_messages(2, timeout_seconds=10) is True
    assert server.wait_for_messages(3, timeout_seconds=0.1) is False
    assert server.wait_for_ratings(1, timeout_seconds=10) is True


def test_stats_and_reset_cover_messages_and_ratings(server: EventsApiServer) -> None:
    post(server, "messages", chat(user("a", "m-1")))
    post(server, "messages", chat(user("a", "m-1")))
    post(server, "ratings", RATING)
    stats = httpx.get(server.base_url + "/_local/stats", timeout=10).json()
    assert (stats["messages"], stats["deduplicated_messages"], stats["ratings"]) == (1, 1, 1)
    server.reset()
    assert (server.conversations(), server.ratings, server.messages) == ([], [], [])
    assert (server.stored_message_count, server.deduplicated_messages) == (0, 0)
    answer = post(server, "messages", chat(user("a", "m-1"))).json()
    assert answer["messages"][0]["status"] == "created"


# --------------------------------------------------------------------------- the official client


def test_the_official_client_s_requests_meet_the_contract(server: EventsApiServer) -> None:
    greenflash = pytest.importorskip("greenflash")
    client = greenflash.Greenflash(api_key=server.api_key, base_url=server.base_url)
    created = client.messages.create(
        external_user_id="user-1",
        external_conversation_id="chat-1",
        product_id=PRODUCT_ID,
        model="gpt-4o",
        system_prompt="Be brief",
        messages=[
            {"role": "user", "content": "Weather?", "external_message_id": "m-1"},
            {
                "message_type": "tool_call",
                "tool_name": "weather",
                "content": "",
                "input": {"city": "Paris"},
                "external_message_id": "m-2",
                "parent_external_message_id": "m-1",
                "created_at": "2026-05-01T12:00:00Z",
            },
        ],
    )
    assert [m.status for m in created.messages] == ["created", "created"]
    again = client.messages.create(
        external_user_id="user-1",
        conversation_id=created.conversation_id,
        messages=[{"role": "user", "content": "Weather?", "external_message_id": "m-1"}],
    )
    assert [m.status for m in again.messages] == ["deduplicated"]
    client.ratings.log(
        product_id=PRODUCT_ID,
        rating=1,
        rating_min=0,
        rating_max=1,
        external_message_id="m-2",
        feedback="useful",
        rated_at="2026-05-01T12:01:00Z",
    )
    assert [r.errors for r in server.requests] == [(), (), ()]
    assert len(server.conversation("chat-1").messages) == 2
    assert server.ratings[0]["externalMessageId"] == "m-2"


# --------------------------------------------------------------------------- the two checkers


def test_the_independent_receiver_judges_every_case_alike() -> None:
    """Both contract checkers, written apart, reject each broken body and pass the valid ones."""
    broken = [chat(message) for message, _ in BROKEN_MESSAGES]
    broken += [chat(**extra) for extra, _ in BROKEN_BODY_FIELDS]
    broken += [without(chat(), "externalUserId"), without(chat(), "messages")]
    for body in broken:
        assert validate_messages_body(body), body
        assert messages_contract_errors(body), body
    valid = [chat(), chat(systemPrompt="Be brief"), chat(systemPrompt={"promptId": "p-1"})]
    valid.append(without(chat(conversationId=CONVERSATION_ID), "productId"))
    for body in valid:
        assert (validate_messages_body(body), messages_contract_errors(body)) == ([], []), body
    for change, _ in BROKEN_RATINGS:
        body = changed(RATING, change)
        assert validate_rating_body(body), body
        assert rating_contract_errors(body), body
    for target in ("conversationId", "messageId"):
        body = changed(RATING, {"externalConversationId": None, target: CONVERSATION_ID})
        assert (validate_rating_body(body), rating_contract_errors(body)) == ([], []), body
