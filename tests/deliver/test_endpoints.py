"""The delivery loop posts each item to its endpoint (``/events``, ``/messages``, ``/ratings``)
over real HTTP to the local server, and follows the delivery rule for ratings: sent again only
when the API surely did not store them (no connection made, ``408``/``429``, or ``503`` with
``Retry-After``); after an ambiguous outcome (a bare ``503`` too) they are counted as
unconfirmed and never sent twice."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from otel_greenflash import GreenflashConfig
from otel_greenflash._deliver.engine import DeliveryEngine
from otel_greenflash._deliver.http import ThreadedTransport, transport_for
from otel_greenflash._deliver.retry import RetryPolicy
from otel_greenflash._deliver.transport import SendOutcome
from otel_greenflash._event import (
    MESSAGES_KEY_PREFIX,
    RATINGS_KEY_PREFIX,
    ApiRequest,
    DeliveryItem,
    Endpoint,
    messages_key,
)
from otel_greenflash._stats import DeliveryStats
from otel_greenflash.testing import EventsApiServer, Fault, MemoryTransport
from tests.support.api_requests import a_messages_request, a_rating, an_event
from tests.support.common import PRODUCT_ID
from tests.support.ports import free_port

CLIENTS = ("aiohttp", "httpx")
FAST_RETRIES = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, jitter=0.0)
LONG = 60.0
"""Generous deadline for anything to happen on a loaded machine."""


class Engines:
    """Delivery engines aimed at a server; each shut down at the end of the test."""

    def __init__(self) -> None:
        self.started: list[DeliveryEngine] = []

    def start(
        self,
        base_url: str,
        api_key: str,
        *,
        http_client: str = "aiohttp",
        window: float = LONG,
        timeout: float = 10.0,
        on_settled: Callable[[DeliveryItem, str], bool] | None = None,
    ) -> tuple[DeliveryEngine, DeliveryStats]:
        config = GreenflashConfig.resolve(
            {}, api_key=api_key, base_url=base_url, product_id=PRODUCT_ID, http_client=http_client
        )
        stats = DeliveryStats()
        engine = DeliveryEngine(
            transport_for(config),
            stats,
            max_concurrency=4,
            retry_window_seconds=window,
            timeout_seconds=timeout,
            policy=FAST_RETRIES,
            on_settled=on_settled,
        )
        self.started.append(engine)
        return engine, stats


@pytest.fixture
def engines() -> Iterator[Engines]:
    made = Engines()
    yield made
    for engine in made.started:
        engine.shutdown(5)


@pytest.fixture
def server() -> Iterator[EventsApiServer]:
    with EventsApiServer() as running:
        yield running


def wait_until(condition: Callable[[], bool], seconds: float = LONG) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def paths(server: EventsApiServer) -> list[str]:
    return [request.path.rsplit("/", 1)[-1] for request in server.requests]


# --------------------------------------------------------------------------- the items


def test_requests_are_keyed_by_their_ids_and_show_no_content() -> None:
    first, again = a_messages_request(), a_messages_request()
    assert first.key == again.key
    assert first.key.startswith(MESSAGES_KEY_PREFIX)
    assert a_messages_request(turns=3).key != first.key
    assert a_messages_request("chat-2").key != first.key
    ratings = [a_rating(), a_rating()]
    assert ratings[0].key != ratings[1].key  # equal ratings are two ratings
    assert all(rating.key.startswith(RATINGS_KEY_PREFIX) for rating in ratings)
    for item in (first, ratings[0]):
        shown = repr(item)
        assert "turn 0" not in shown
        assert "private words" not in shown
        assert item.endpoint.value in shown
    event = an_event()
    assert event.endpoint is Endpoint.EVENTS
    assert event.key == event.insert_id


@pytest.mark.parametrize(
    "messages",
    [
        [{"content": "hi"}],
        [{"externalMessageId": "m-1", "content": "hi"}, {"content": "bye"}],
        [{"externalMessageId": "", "content": "hi"}],
        [{"externalMessageId": 7, "content": "hi"}],
        ["hi"],
        None,
    ],
)
def test_a_messages_request_needs_the_external_id_of_every_message(messages: object) -> None:
    body = {"externalUserId": "u", "productId": PRODUCT_ID, "messages": messages}
    with pytest.raises(ValueError, match="Messages API body"):  # the API would not deduplicate it
        ApiRequest.messages(body, "chat")
    with pytest.raises(ValueError, match="Messages API body"):
        ApiRequest(Endpoint.MESSAGES, body, "k", "chat")  # e.g. a damaged spool row
    with pytest.raises(ValueError, match="Messages API body"):
        messages_key(body)


def test_an_api_request_is_never_an_events_request() -> None:
    with pytest.raises(ValueError, match="BusinessEvent"):
        ApiRequest(Endpoint.EVENTS, {}, "k", "span")


# --------------------------------------------------------------------------- each to its endpoint


@pytest.mark.parametrize("client", CLIENTS)
def test_each_item_goes_to_its_endpoint_and_is_counted_under_it(
    client: str, server: EventsApiServer, engines: Engines
) -> None:
    engine, stats = engines.start(server.base_url, server.api_key, http_client=client)
    engine.submit([an_event(), a_messages_request(), a_rating()])
    assert engine.flush(LONG)

    assert sorted(paths(server)) == ["events", "messages", "ratings"]
    assert [request.status for request in server.requests] == [200, 200, 200]
    assert len(server.events) == 1
    assert len(server.ratings) == 1
    assert [m.content for m in server.conversation("chat-1").messages] == [
        "turn 0 of chat-1",
        "turn 1 of chat-1",
    ]
    snapshot = stats.snapshot()
    assert (snapshot["sent"], snapshot["failed"], snapshot["retried"]) == (1, 0, 0)
    done = {"sent": 1, "failed": 0, "retried": 0, "unconfirmed": 0, "dropped": {}}
    message_contents = {"truncated": 0, "redacted": 0, "redaction_failed": 0}
    assert snapshot.get("messages") == {**done, **message_contents}
    assert snapshot.get("ratings") == done


def test_events_alone_keep_the_stats_keys_they_always_had(
    server: EventsApiServer, engines: Engines
) -> None:
    engine, stats = engines.start(server.base_url, server.api_key)
    engine.submit([an_event()])
    assert engine.flush(LONG)
    assert stats.snapshot() == {
        "queued": 0,
        "sent": 1,
        "retried": 0,
        "failed": 0,
        "invalid": 0,
        "dropped": {},
        "unlinked": {},
        "waiting": 0,
        "spool": {},
    }


def test_a_messages_request_whose_answer_is_lost_is_sent_again_and_stored_once(
    server: EventsApiServer, engines: Engines
) -> None:
    server.inject(Fault(lose_response=True), endpoint="messages")
    engine, stats = engines.start(server.base_url, server.api_key)
    engine.submit([a_messages_request(turns=3)])
    assert engine.flush(LONG)

    assert paths(server) == ["messages", "messages"]
    assert server.stored_message_count == 3
    assert server.deduplicated_messages == 3  # the retry: every externalMessageId known
    assert len(server.conversation("chat-1").messages) == 3
    counts = stats.snapshot().get("messages")
    assert counts is not None
    assert (counts["sent"], counts["retried"]) == (1, 1)


def test_a_rejected_messages_request_is_failed_not_retried(
    server: EventsApiServer, engines: Engines
) -> None:
    bad = ApiRequest.messages({"productId": PRODUCT_ID, "messages": []}, "chat")
    engine, stats = engines.start(server.base_url, server.api_key)
    engine.submit([bad])
    assert engine.flush(LONG)
    assert [request.status for request in server.requests] == [422]
    counts = stats.snapshot().get("messages")
    assert counts is not None
    assert (counts["failed"], counts["retried"]) == (1, 0)
    assert stats.snapshot()["failed"] == 0  # events' key: events only


# --------------------------------------------------------------------------- the ratings rule


@pytest.mark.parametrize(
    "fault", [Fault(status=429), Fault(status=503, retry_after="0"), Fault(status=408)]
)
def test_a_rating_the_api_declined_is_sent_again_and_stored_once(
    fault: Fault, server: EventsApiServer, engines: Engines
) -> None:
    status = fault.status
    server.inject(fault, endpoint="ratings")
    engine, stats = engines.start(server.base_url, server.api_key)
    engine.submit([a_rating()])
    assert engine.flush(LONG)

    assert [request.status for request in server.requests] == [status, 200]
    assert len(server.ratings) == 1
    counts = stats.snapshot().get("ratings")
    assert counts is not None
    assert (counts["sent"], counts["retried"], counts["unconfirmed"]) == (1, 1, 0)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_rating_whose_answer_is_lost_is_never_sent_twice(
    client: str, server: EventsApiServer, engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    server.inject(Fault(lose_response=True), endpoint="ratings")
    engine, stats = engines.start(server.base_url, server.api_key, http_client=client)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        engine.submit([a_rating()])
        assert engine.flush(LONG)

    assert paths(server) == ["ratings"]  # one request: the server stored it, said nothing
    assert len(server.ratings) == 1
    counts = stats.snapshot().get("ratings")
    assert counts is not None
    assert (counts["sent"], counts["failed"], counts["unconfirmed"]) == (0, 0, 1)
    lines = [r.getMessage() for r in caplog.records if "may or may not" in r.getMessage()]
    assert len(lines) == 1
    assert "gen_ai.evaluation.result" in lines[0]
    assert "private words" not in lines[0]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=500),
        Fault(status=502),
        Fault(status=503),  # no Retry-After: maybe a proxy's, after forwarding the request
        Fault(status=504),
        Fault(drop=True),
    ],
)
def test_a_rating_after_an_ambiguous_answer_is_unconfirmed_and_not_retried(
    fault: Fault, server: EventsApiServer, engines: Engines
) -> None:
    server.inject(fault, endpoint="ratings")
    engine, stats = engines.start(server.base_url, server.api_key)
    engine.submit([a_rating()])
    assert engine.flush(LONG)

    assert paths(server) == ["ratings"]
    assert server.ratings == []  # this server did not store it; the client cannot know
    counts = stats.snapshot().get("ratings")
    assert counts is not None
    assert (counts["unconfirmed"], counts["retried"]) == (1, 0)


def test_a_rating_that_timed_out_after_it_was_sent_is_stored_once(
    server: EventsApiServer, engines: Engines
) -> None:
    server.inject(Fault(delay_seconds=3.0), endpoint="ratings")  # then stores and answers
    engine, stats = engines.start(server.base_url, server.api_key, timeout=1.0)
    engine.submit([a_rating()])
    assert engine.flush(LONG)  # settled once its request timed out: never attempted again
    assert server.wait_for_ratings(1, LONG)
    # Its request is recorded just after the rating is stored: the one request, answered 200.
    assert wait_until(lambda: any(request.status == 200 for request in server.requests))
    answered = [(request.path.rsplit("/", 1)[-1], request.status) for request in server.requests]
    assert answered == [("ratings", 200)]
    assert len(server.ratings) == 1
    counts = stats.snapshot().get("ratings")
    assert counts is not None
    assert counts["unconfirmed"] == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_a_rating_sent_while_nothing_listens_is_delivered_once_the_api_is_back(
    client: str, engines: Engines
) -> None:
    # Reserved for this test, and nothing listens: connections are refused, nothing leaves.
    port = free_port()
    engine, stats = engines.start(f"http://127.0.0.1:{port}/api/v1", "k", http_client=client)
    engine.submit([a_rating(5)])
    assert wait_until(lambda: stats.snapshot().get("ratings", {}).get("retried", 0) >= 2)
    with EventsApiServer("k", port=port) as server:
        assert engine.flush(LONG)
        assert [rating["rating"] for rating in server.ratings] == [5]
    counts = stats.snapshot().get("ratings")
    assert counts is not None
    assert (counts["sent"], counts["unconfirmed"]) == (1, 0)


def test_a_rating_that_never_reached_the_api_fails_when_its_window_ends(
    engines: Engines,
) -> None:
    probe = EventsApiServer()
    port = probe.port
    probe.stop()
    engine, stats = engines.start(f"http://127.0.0.1:{port}/api/v1", "k", window=1.0)
    engine.submit([a_rating()])
    assert engine.flush(LONG)
    counts = stats.snapshot().get("ratings")
    assert counts is not None
    assert (counts["failed"], counts["unconfirmed"], counts["sent"]) == (1, 0, 0)
    assert counts["retried"] >= 1


def test_the_spool_is_told_a_rating_is_unconfirmed(
    server: EventsApiServer, engines: Engines
) -> None:
    notes: list[tuple[str, str]] = []

    def note(item: DeliveryItem, outcome: str) -> bool:
        notes.append((item.key, outcome))
        return False

    server.inject(Fault(lose_response=True), endpoint="ratings")
    engine, _ = engines.start(server.base_url, server.api_key, on_settled=note)
    rating = a_rating()
    engine.submit([rating])
    assert engine.flush(LONG)
    assert notes == [(rating.key, "unconfirmed")]


def test_a_rating_under_way_at_shutdown_is_unconfirmed_not_kept_for_later(
    server: EventsApiServer,
) -> None:
    notes: list[tuple[str, str]] = []

    def note(item: DeliveryItem, outcome: str) -> bool:
        notes.append((item.endpoint.value, outcome))
        return False

    server.inject(Fault(delay_seconds=6.0), endpoint="ratings")
    server.inject(Fault(delay_seconds=6.0), endpoint="messages")
    engine, stats = Engines().start(server.base_url, server.api_key, on_settled=note)
    engine.submit([a_rating(), a_messages_request()])
    assert wait_until(lambda: server.peak_concurrency >= 2)  # both held by the server
    assert engine.shutdown(0.2) == 1  # the messages request: dropped, the spool keeps it
    assert sorted(notes) == [("messages", "dropped"), ("ratings", "unconfirmed")]
    snapshot = stats.snapshot()
    assert snapshot.get("ratings", {}).get("unconfirmed") == 1
    assert snapshot.get("ratings", {}).get("dropped") == {}
    assert snapshot.get("messages", {}).get("dropped") == {"shutdown": 1}


class _SettlesAfterShutdownAbandons(DeliveryEngine):
    """Holds each answer until shutdown has abandoned its item: the interleaving of an answer
    that arrives just as shutdown gives up on what is left, made certain."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.answered = threading.Event()

    def _settle_outcome(self, attempt: Any, outcome: SendOutcome) -> None:
        self.answered.set()
        assert wait_until(lambda: attempt.settled)  # shutdown's abandon() took it
        super()._settle_outcome(attempt, outcome)


def test_a_rating_answered_as_shutdown_abandons_it_is_unconfirmed_not_dropped(
    server: EventsApiServer,
) -> None:
    notes: list[tuple[str, str]] = []

    def note(item: DeliveryItem, outcome: str) -> bool:
        notes.append((item.endpoint.value, outcome))
        return False

    config = GreenflashConfig.resolve(
        {}, api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
    )
    stats = DeliveryStats()
    engine = _SettlesAfterShutdownAbandons(transport_for(config), stats, on_settled=note)
    engine.submit([a_rating()])
    assert engine.answered.wait(LONG)  # the API stored it; its answer is not settled yet
    assert engine.shutdown(0.0) == 0  # not dropped: the spool must not send it again
    assert notes == [("ratings", "unconfirmed")]
    assert stats.snapshot().get("ratings", {}).get("unconfirmed") == 1
    assert len(server.ratings) == 1


# --------------------------------------------------------------------------- blocking transports


class _EventsOnly:
    """A user's own transport from before messages and ratings: ``send`` only."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        self.bodies.append(body)
        return SendOutcome(200)

    def close(self) -> None:
        return None


def test_a_transport_for_events_only_fails_messages_and_ratings_without_calling_it() -> None:
    transport = _EventsOnly()
    stats = DeliveryStats()
    engine = DeliveryEngine(ThreadedTransport(transport, 2), stats, policy=FAST_RETRIES)
    try:
        engine.submit([an_event(), a_messages_request(), a_rating()])
        assert engine.flush(LONG)
    finally:
        engine.shutdown(5)
    assert len(transport.bodies) == 1
    snapshot = stats.snapshot()
    assert snapshot["sent"] == 1
    for kind in ("messages", "ratings"):
        counts = snapshot.get(kind)
        assert isinstance(counts, dict)
        assert (counts["failed"], counts["retried"], counts["unconfirmed"]) == (1, 0, 0)


def test_the_memory_transport_keeps_messages_and_ratings_apart() -> None:
    transport = MemoryTransport()
    engine = DeliveryEngine(ThreadedTransport(transport, 2), DeliveryStats())
    try:
        engine.submit([an_event(), a_messages_request(), a_rating(2)])
        assert engine.flush(LONG)
    finally:
        engine.shutdown(5)
    assert len(transport.events) == 1
    assert [body["externalConversationId"] for body in transport.messages] == ["chat-1"]
    assert [body["rating"] for body in transport.ratings] == [2]
    assert transport.errors == []


def test_a_rating_of_a_message_waits_for_the_messages_request_carrying_it(
    server: EventsApiServer, engines: Engines
) -> None:
    server.inject(Fault(delay_seconds=1.0), endpoint="messages")  # stored only after a while
    engine, stats = engines.start(server.base_url, server.api_key)
    messages = a_messages_request("chat-9")
    rating = ApiRequest.rating(
        {**a_rating(5).body, "externalConversationId": "chat-9"},
        "gen_ai.evaluation.result",
        after=messages.key,
    )
    engine.submit([messages, rating])
    assert engine.flush(LONG)

    paths = [request.path.rsplit("/", 1)[-1] for request in server.requests]
    assert paths == ["messages", "ratings"]  # the rating after the held request's answer
    assert [rating["rating"] for rating in server.ratings] == [5]
    assert stats.snapshot().get("ratings", {}).get("sent") == 1
