"""Self-tests of the independent receiver and fault proxy, using only http.client and sockets."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.independent_receiver import Fault, FaultProxy, Receiver

EVENT = {"eventType": "signup_completed", "productId": str(uuid.uuid4()), "value": "1"}


def event(insert_id: str | None = None) -> dict[str, Any]:
    """A valid event body with a fresh (or the given) ``insertId``."""
    return {**EVENT, "insertId": insert_id or str(uuid.uuid4())}


def connect(port: int, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def post(
    conn: http.client.HTTPConnection,
    body: Any,
    key: str | None,
    path: str = "/v1/events",
) -> http.client.HTTPResponse:
    """POST ``body`` as JSON on ``conn`` and return the (unread) response."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
    return conn.getresponse()


def post_once(receiver: Receiver, body: Any, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST on a fresh connection; return status and body."""
    with contextlib.closing(connect(receiver.port, timeout)) as conn:
        response = post(conn, body, receiver.api_key)
        return response.status, response.read()


def raw_request(receiver: Receiver, body: Any) -> bytes:
    """The bytes of one authorized POST /v1/events."""
    data = json.dumps(body).encode()
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {receiver.api_key}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started
    assert started.errors == []
    assert started.open_connections == 0


# --------------------------------------------------------------------------- plain behaviour


def test_keep_alive_serves_two_requests_on_one_connection(receiver: Receiver) -> None:
    with contextlib.closing(connect(receiver.port)) as conn:
        first = post(conn, event(), receiver.api_key)
        first_body = json.loads(first.read())
        second = post(conn, event(), receiver.api_key)
        second_body = json.loads(second.read())
    assert (first.status, second.status) == (200, 200)
    assert first_body["success"] is True
    assert uuid.UUID(first_body["eventId"]) != uuid.UUID(second_body["eventId"])
    assert first.getheader("Content-Type") == "application/json"
    assert receiver.connections_opened == 1
    assert len(receiver.accepted) == 2
    assert [r.connection for r in receiver.requests] == [1, 1]


def test_base_url_and_ok_status() -> None:
    with Receiver(ok_status=201) as receiver:
        assert receiver.base_url == f"http://127.0.0.1:{receiver.port}/v1"
        assert receiver.events_url == receiver.base_url + "/events"
        status, body = post_once(receiver, event())
    assert status == 201
    assert json.loads(body)["success"] is True


def test_key_path_and_body_are_checked_without_accepting(receiver: Receiver) -> None:
    with contextlib.closing(connect(receiver.port)) as conn:
        assert post(conn, event(), None).status == 401
        conn.close()
        assert post(conn, event(), "wrong-key").status == 401
        conn.close()
        assert post(conn, event(), receiver.api_key, path="/v1/other").status == 404
        conn.close()
        conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {receiver.api_key}"})
        assert conn.getresponse().status == 404
        conn.close()
        assert post(conn, [1, 2], receiver.api_key).status == 400
        conn.close()
        conn.request("POST", "/v1/events", body=b"{not json", headers={"Authorization": "Bearer x"})
        assert conn.getresponse().status == 401
    assert receiver.accepted == []
    assert [r.outcome for r in receiver.requests] == [401, 401, 404, 404, 400, 401]


def test_chunked_request_body_is_accepted(receiver: Receiver) -> None:
    data = json.dumps(event()).encode()
    with contextlib.closing(connect(receiver.port)) as conn:
        conn.request(
            "POST",
            "/v1/events",
            body=iter([data[:10], data[10:]]),
            headers={"Authorization": f"Bearer {receiver.api_key}"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        response.read()
    assert response.status == 200
    assert receiver.accepted == [json.loads(data)]


def test_deduplicates_by_insert_id(receiver: Receiver) -> None:
    body = event("same-id")
    first = json.loads(post_once(receiver, body)[1])
    second = json.loads(post_once(receiver, body)[1])
    post_once(receiver, event("other-id"))
    assert first["eventId"] == second["eventId"]
    assert receiver.accepted == [body, event("other-id")]
    assert receiver.accepted_insert_ids == ["same-id", "other-id"]
    assert receiver.duplicates == 1
    assert receiver.wait_for(2, timeout=1)
    assert not receiver.wait_for(3, timeout=0.05)


# --------------------------------------------------------------------------- faults


def test_status_faults_carry_headers_and_only_2xx_accepts(receiver: Receiver) -> None:
    receiver.inject(Fault.status(429, {"Retry-After": "1", "retry-after-ms": "1500"}), times=2)
    receiver.inject(Fault.status(202))
    with contextlib.closing(connect(receiver.port)) as conn:
        answers = []
        for insert_id in ("a", "a", "a", "a"):
            response = post(conn, event(insert_id), receiver.api_key)
            response.read()
            answers.append((response.status, response.getheader("retry-after-ms")))
    assert answers == [(429, "1500"), (429, "1500"), (202, None), (200, None)]
    assert receiver.accepted_insert_ids == ["a"]
    assert receiver.duplicates == 1
    assert receiver.pending_faults == 0


def test_reset_sends_rst_and_accepts_nothing(receiver: Receiver) -> None:
    receiver.inject(Fault.reset())
    with socket.create_connection((receiver.host, receiver.port), timeout=5) as sock:
        sock.sendall(raw_request(receiver, event()))
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    assert receiver.accepted == []
    assert [r.outcome for r in receiver.requests] == ["reset"]


def test_lost_accepts_but_the_client_sees_an_error(receiver: Receiver) -> None:
    receiver.inject(Fault.lost())
    body = event()
    with contextlib.closing(connect(receiver.port)) as conn, pytest.raises(ConnectionError):
        post(conn, body, receiver.api_key)
    assert receiver.accepted == [body]
    assert post_once(receiver, body)[0] == 200  # the retry is a duplicate
    assert receiver.duplicates == 1


def test_hang_times_the_client_out_and_stop_releases_it() -> None:
    receiver = Receiver(faults=[Fault.hang()]).start()
    try:
        with socket.create_connection((receiver.host, receiver.port), timeout=0.3) as sock:
            sock.sendall(raw_request(receiver, event()))
            with pytest.raises(TimeoutError):
                sock.recv(1024)
            assert receiver.wait_until(lambda: receiver.in_flight == 1)
            sock.settimeout(5)
            started = time.monotonic()
            receiver.stop()
            assert time.monotonic() - started < 5
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""  # closed by stop, never answered
    finally:
        receiver.stop()
    assert receiver.accepted == []
    assert receiver.open_connections == 0
    assert receiver.errors == []


def test_hang_ends_when_the_client_leaves(receiver: Receiver) -> None:
    receiver.inject(Fault.hang())
    with (
        contextlib.closing(connect(receiver.port, timeout=0.2)) as conn,
        pytest.raises(TimeoutError),
    ):
        post(conn, event(), receiver.api_key)
    assert receiver.wait_until(lambda: receiver.in_flight == 0)
    assert receiver.wait_until(lambda: receiver.open_connections == 0)


def test_drip_sends_the_head_then_a_slow_body(receiver: Receiver) -> None:
    receiver.inject(Fault.drip(size=4, interval=0.1))
    with contextlib.closing(connect(receiver.port)) as conn:
        response = post(conn, event(), receiver.api_key)
        assert response.status == 200
        assert response.getheader("Content-Length") == "4"
        started = time.monotonic()
        assert response.read() == b"{  }"
        assert time.monotonic() - started >= 0.3  # 4 bytes, 0.1 s apart
    assert receiver.accepted == []
    assert [r.outcome for r in receiver.requests] == ["drip"]


def test_drip_trips_a_client_read_timeout(receiver: Receiver) -> None:
    receiver.inject(Fault.drip(size=100, interval=0.5))
    with contextlib.closing(connect(receiver.port, timeout=0.2)) as conn:
        response = post(conn, event(), receiver.api_key)
        with pytest.raises(TimeoutError):
            response.read()
    assert receiver.wait_until(lambda: receiver.in_flight == 0)


def test_huge_body_streams_and_can_be_abandoned(receiver: Receiver) -> None:
    size = 200 * 1024 * 1024
    receiver.inject(Fault.huge(size))
    read = 0
    with contextlib.closing(connect(receiver.port)) as conn:
        response = post(conn, event(), receiver.api_key)
        assert response.status == 200
        assert response.getheader("Content-Length") == str(size)
        first = response.read(1)
        while read < 4 * 1024 * 1024:
            read += len(response.read(64 * 1024))
    assert first == b"{"
    assert read >= 4 * 1024 * 1024
    assert receiver.accepted == []
    assert receiver.wait_until(lambda: receiver.open_connections == 0)
    assert receiver.in_flight == 0


def test_mix_is_deterministic_for_a_seed() -> None:
    weights = {Fault.status(503): 0.3, Fault.status(429): 0.2}

    def outcomes(seed: int) -> list[int | str]:
        with Receiver(mix=weights, seed=seed) as receiver:
            receiver.inject(Fault.status(500))  # the queue goes first
            with contextlib.closing(connect(receiver.port)) as conn:
                for _ in range(40):
                    post(conn, event(), receiver.api_key).read()
            return [r.outcome for r in receiver.requests]

    first, again, other = outcomes(7), outcomes(7), outcomes(8)
    assert first == again
    assert first != other
    assert first[0] == 500
    assert {503, 429, 200} <= set(first[1:])


def test_mix_rejects_weights_above_one() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        Receiver().mix({Fault.reset(): 0.7, Fault.hang(): 0.4}, seed=1)


def test_max_concurrency_counts_parallel_requests() -> None:
    with Receiver(latency_seconds=0.2) as receiver:
        barrier = threading.Barrier(5)
        statuses: list[int] = []

        def client() -> None:
            with contextlib.closing(connect(receiver.port)) as conn:
                conn.connect()
                barrier.wait(timeout=5)
                response = post(conn, event(), receiver.api_key)
                response.read()
                statuses.append(response.status)

        threads = [threading.Thread(target=client) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert statuses == [200] * 5
        assert receiver.max_concurrency == 5
        assert receiver.wait_until(lambda: receiver.in_flight == 0)


def test_stop_closes_everything_and_leaves_no_thread() -> None:
    receiver = Receiver(latency_seconds=5).start()
    port = receiver.port
    sock = socket.create_connection((receiver.host, port), timeout=5)
    with sock:
        sock.sendall(raw_request(receiver, event()))  # stuck in latency
        assert receiver.wait_for_requests(1)
        receiver.stop()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b""
    assert not any(t.name == "independent-receiver" for t in threading.enumerate())
    assert receiver.open_connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    receiver.stop()  # idempotent


# --------------------------------------------------------------------------- proxy


@pytest.fixture
def proxied(receiver: Receiver) -> Iterator[tuple[Receiver, FaultProxy]]:
    with FaultProxy.in_front_of(receiver) as proxy:
        yield receiver, proxy
    assert proxy.errors == []
    assert proxy.open_connections == 0


def test_proxy_passes_keep_alive_traffic(proxied: tuple[Receiver, FaultProxy]) -> None:
    receiver, proxy = proxied
    assert proxy.base_url_for() == f"http://127.0.0.1:{proxy.port}/v1"
    with contextlib.closing(connect(proxy.port)) as conn:
        for _ in range(2):
            response = post(conn, event(), receiver.api_key)
            assert response.status == 200
            assert json.loads(response.read())["success"] is True
    assert len(receiver.accepted) == 2
    assert proxy.connection_faults == ["pass"]
    assert receiver.connections_opened == 1


def test_proxy_reset_after_request_forwards_nothing(
    proxied: tuple[Receiver, FaultProxy],
) -> None:
    receiver, proxy = proxied
    proxy.inject("reset_after_request")
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(raw_request(receiver, event()))
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    assert receiver.connections_opened == 0
    assert post_once_via(proxy, receiver) == 200  # the next connection passes
    assert proxy.connection_faults == ["reset_after_request", "pass"]


def test_proxy_blackhole_times_out(proxied: tuple[Receiver, FaultProxy]) -> None:
    receiver, proxy = proxied
    proxy.inject("blackhole")
    with contextlib.closing(connect(proxy.port, timeout=0.3)) as conn, pytest.raises(TimeoutError):
        post(conn, event(), receiver.api_key)
    assert receiver.connections_opened == 0
    assert receiver.requests == []
    assert proxy.wait_until(lambda: proxy.connections_opened == 1)


def test_proxy_delay_holds_the_response(proxied: tuple[Receiver, FaultProxy]) -> None:
    receiver, proxy = proxied
    proxy.inject("delay", delay_seconds=0.3)
    started = time.monotonic()
    assert post_once_via(proxy, receiver) == 200
    assert time.monotonic() - started >= 0.3
    assert len(receiver.accepted) == 1


def test_proxy_passes_an_upstream_reset_on(proxied: tuple[Receiver, FaultProxy]) -> None:
    receiver, proxy = proxied
    receiver.inject(Fault.lost())
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(raw_request(receiver, event()))
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    assert len(receiver.accepted) == 1


def post_once_via(proxy: FaultProxy, receiver: Receiver) -> int:
    with contextlib.closing(connect(proxy.port)) as conn:
        response = post(conn, event(), receiver.api_key)
        response.read()
        return response.status


# --------------------------------------------------------------------------- messages and ratings

PRODUCT = str(uuid.uuid4())
RATING = {
    "productId": PRODUCT,
    "rating": 1,
    "ratingMin": -1,
    "ratingMax": 1,
    "externalConversationId": "chat-1",
}


def chat_body(*messages: dict[str, Any], conversation: str = "chat-1") -> dict[str, Any]:
    """A valid messages body for ``conversation`` of PRODUCT."""
    return {
        "externalUserId": "user-1",
        "productId": PRODUCT,
        "externalConversationId": conversation,
        "messages": list(messages),
    }


def said(content: str, external_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": content}
    if external_id is not None:
        message["externalMessageId"] = external_id
    return message


def send(receiver: Receiver, path: str, body: Any) -> tuple[int, Any]:
    """POST ``body`` to ``path`` on a fresh connection; status and parsed answer."""
    status, raw = 0, b""
    with contextlib.closing(connect(receiver.port)) as conn:
        response = post(conn, body, receiver.api_key, path=path)
        status, raw = response.status, response.read()
    return status, json.loads(raw) if raw else None


def without_keys(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in names}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (without_keys(chat_body(said("a")), "externalUserId"), "externalUserId: required"),
        (without_keys(chat_body(said("a")), "messages"), "messages: required"),
        (
            without_keys(chat_body(said("a")), "productId", "externalConversationId"),
            "conversationId, externalConversationId or productId",
        ),
        (chat_body(), "messages: must be a non-empty array"),
        (chat_body({"role": "user"}), "messages[0].content: required"),
        (chat_body({"content": "a"}), "role / messageType"),
        (chat_body({"content": "a", "role": "bot"}), "messages[0].role"),
        (chat_body({"content": "a", "messageType": "chat"}), "messages[0].messageType"),
        (chat_body({"content": "", "messageType": "tool_call"}), "toolName: required"),
        (chat_body({**said("a"), "input": "text"}), "messages[0].input: must be an object"),
        (chat_body({**said("a"), "createdAt": "May 1st"}), "messages[0].createdAt"),
        (chat_body({**said("a"), "externalMessageId": ""}), "externalMessageId"),
        ({**chat_body(said("a")), "sampleRate": 2}, "sampleRate"),
        ({**chat_body(said("a")), "forceSample": 1}, "forceSample"),
        ({**chat_body(said("a")), "systemPrompt": ["x"]}, "systemPrompt"),
        ({**chat_body(said("a")), "tokens": 3}, "tokens: unknown field"),
    ],
)
def test_messages_breaking_the_contract_get_422_naming_the_field(
    receiver: Receiver, body: dict[str, Any], named: str
) -> None:
    receiver.inject(Fault.status(500))  # a rejected body does not consume it
    status, answer = send(receiver, Receiver.MESSAGES_PATH, body)
    assert (status, answer["success"]) == (422, False)
    assert named in answer["error"]
    assert receiver.requests[-1].errors
    assert (receiver.conversations, receiver.pending_faults) == ([], 1)


def test_a_resent_history_is_stored_once_in_order(receiver: Receiver) -> None:
    first = send(receiver, Receiver.MESSAGES_PATH, chat_body(said("a", "m-1")))[1]
    body = chat_body(
        said("a", "m-1"),
        {"role": "assistant", "content": "b", "externalMessageId": "m-2"}
        | {"parentExternalMessageId": "m-1"},
        {"messageType": "tool_call", "toolName": "search", "content": "", "input": {"q": "b"}},
    )
    status, second = send(receiver, Receiver.MESSAGES_PATH, body)
    assert status == 200
    assert second["conversationId"] == first["conversationId"]
    assert [m["status"] for m in second["messages"]] == ["deduplicated", "created", "created"]
    assert second["messages"][0]["messageId"] == first["messages"][0]["messageId"]
    assert [m["messageType"] for m in second["messages"]] == [
        "user_message",
        "assistant_message",
        "tool_call",
    ]
    stored = receiver.messages_of("chat-1")
    assert [m["content"] for m in stored] == ["a", "b", ""]
    assert stored[1]["parentMessageId"] == stored[0]["messageId"]
    assert (receiver.stored_messages, receiver.deduplicated_messages) == (3, 1)


def test_message_ids_are_deduplicated_per_conversation_only(receiver: Receiver) -> None:
    one = send(receiver, Receiver.MESSAGES_PATH, chat_body(said("a", "m-1"), conversation="A"))
    two = send(receiver, Receiver.MESSAGES_PATH, chat_body(said("a", "m-1"), conversation="B"))
    assert one[1]["conversationId"] != two[1]["conversationId"]
    assert one[1]["messages"][0]["status"] == two[1]["messages"][0]["status"] == "created"
    assert [len(c["messages"]) for c in receiver.conversations] == [1, 1]
    by_id = without_keys(chat_body(said("a", "m-1")), "productId", "externalConversationId")
    by_id["conversationId"] = one[1]["conversationId"]
    again = send(receiver, Receiver.MESSAGES_PATH, by_id)[1]
    assert again["messages"][0]["status"] == "deduplicated"
    assert receiver.deduplicated_messages == 1


def test_ratings_are_checked_and_never_deduplicated(receiver: Receiver) -> None:
    for broken, named in [
        (without_keys(RATING, "ratingMax"), "ratingMax: required"),
        (without_keys(RATING, "externalConversationId"), "exactly one is required"),
        ({**RATING, "messageId": str(uuid.uuid4())}, "exactly one is required"),
        ({**RATING, "rating": 2}, "rating: must lie within"),
        ({**RATING, "ratingMin": 1}, "ratingMin: must be below ratingMax"),
        ({**RATING, "ratedAt": "2026-05-01T12:00:00"}, "ratedAt"),
        ({**RATING, "feedback": ["no"]}, "feedback"),
    ]:
        status, answer = send(receiver, Receiver.RATINGS_PATH, broken)
        assert (status, named in answer["error"]) == (422, True), (broken, answer)
    rated = {**RATING, "feedback": "good", "ratedAt": "2026-05-01T12:00:00Z"}
    assert [send(receiver, Receiver.RATINGS_PATH, rated) for _ in range(2)] == [
        (200, {"success": True}),
        (200, {"success": True}),
    ]
    assert receiver.ratings == [rated, rated]
    assert receiver.wait_for_ratings(2, timeout=5)


def test_faults_reach_messages_and_ratings_and_can_target_one(receiver: Receiver) -> None:
    receiver.inject(Fault.status(503), endpoint="ratings")
    receiver.inject(Fault.lost(), endpoint="messages")
    assert send(receiver, "/v1/events", event())[0] == 200  # passes both targeted faults by
    body = chat_body(said("a", "m-1"))
    with contextlib.closing(connect(receiver.port)) as conn, pytest.raises(ConnectionError):
        post(conn, body, receiver.api_key, path=Receiver.MESSAGES_PATH)
    assert receiver.wait_for_messages(1)
    status, answer = send(receiver, Receiver.MESSAGES_PATH, body)  # the client's retry
    assert (status, answer["messages"][0]["status"]) == (200, "deduplicated")
    assert send(receiver, Receiver.RATINGS_PATH, RATING)[0] == 503
    assert receiver.ratings == []
    receiver.inject(Fault.lost())  # untargeted: whichever request comes next
    with contextlib.closing(connect(receiver.port)) as conn, pytest.raises(ConnectionError):
        post(conn, RATING, receiver.api_key, path=Receiver.RATINGS_PATH)
    assert send(receiver, Receiver.RATINGS_PATH, RATING)[0] == 200  # the retry: stored again
    assert receiver.ratings == [RATING, RATING]
    assert [r.outcome for r in receiver.requests] == [200, "lost", 200, 503, "lost", 200]
    with pytest.raises(ValueError, match="endpoint"):
        receiver.inject(Fault.reset(), endpoint="rating")


def test_the_official_client_is_understood(receiver: Receiver) -> None:
    greenflash = pytest.importorskip("greenflash")
    client = greenflash.Greenflash(api_key=receiver.api_key, base_url=receiver.base_url)
    created = client.messages.create(
        external_user_id="user-1",
        external_conversation_id="chat-1",
        product_id=PRODUCT,
        messages=[{"role": "user", "content": "hi", "external_message_id": "m-1"}],
        system_prompt={"content": "Be brief"},
    )
    assert created.messages[0].status == "created"
    client.ratings.log(
        product_id=PRODUCT,
        rating=5,
        rating_min=1,
        rating_max=5,
        message_id=created.messages[0].message_id,
    )
    assert [r.status for r in receiver.requests] == [200, 200]
    assert len(receiver.ratings) == 1
