"""Each endpoint pauses on its own: a ``Retry-After`` throttle or a ``401``/``403`` from one of
``/events``, ``/messages``, ``/ratings`` holds up the requests to that endpoint only, never the
other two. Real HTTP to the local server, faults injected per endpoint."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from otel_greenflash._deliver.engine import DeliveryEngine
from otel_greenflash._event import DeliveryItem, Endpoint
from otel_greenflash._stats import DeliveryStats
from otel_greenflash.testing import EventsApiServer, Fault
from tests.deliver.test_endpoints import LONG, Engines, wait_until
from tests.support.api_requests import a_messages_request, a_rating, an_event
from tests.support.ports import free_port

MAKERS: dict[Endpoint, Callable[[int], DeliveryItem]] = {
    Endpoint.EVENTS: lambda n: an_event(f"paused-{n}"),
    Endpoint.MESSAGES: lambda n: a_messages_request(f"chat-{n}"),
    Endpoint.RATINGS: lambda n: a_rating(1 + n % 5, f"chat-{n}"),
}
"""A fresh item for each endpoint (a different one for each ``n``)."""


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


def requests_to(server: EventsApiServer, endpoint: Endpoint) -> int:
    return sum(1 for request in server.requests if request.path.endswith(f"/{endpoint}"))


def stored(server: EventsApiServer, endpoint: Endpoint) -> int:
    if endpoint is Endpoint.EVENTS:
        return len(server.events)
    if endpoint is Endpoint.MESSAGES:
        return len(server.messages)
    return len(server.ratings)


def sent_once(stats: DeliveryStats, endpoint: Endpoint) -> bool:
    """Its answer came back and was counted (the server stores the item before it answers)."""
    return counted(stats, endpoint, "sent") == 1


def counted(stats: DeliveryStats, endpoint: Endpoint, outcome: str) -> int:
    snapshot: dict[str, Any] = dict(stats.snapshot())
    if endpoint is Endpoint.EVENTS:
        return int(snapshot[outcome])
    return int(snapshot.get(endpoint.value, {}).get(outcome, 0))


def others(paused: Endpoint) -> list[Endpoint]:
    return [endpoint for endpoint in Endpoint if endpoint is not paused]


def start(engines: Engines, server: EventsApiServer) -> tuple[DeliveryEngine, DeliveryStats]:
    # A window far longer than the test: a paused item waits, it never gives up meanwhile.
    return engines.start(server.base_url, server.api_key, window=3600.0)


@pytest.mark.parametrize("paused", list(Endpoint), ids=str)
@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_from_one_endpoint_leaves_the_others_going(
    paused: Endpoint, status: int, server: EventsApiServer, engines: Engines
) -> None:
    server.inject(Fault(status=status, retry_after="3600"), endpoint=paused.value)
    engine, stats = start(engines, server)
    engine.submit([MAKERS[paused](0)])
    assert wait_until(lambda: counted(stats, paused, "retried") == 1)  # paused from now on

    # The paused endpoint's next item comes first: without a pause of its own it would go.
    engine.submit([MAKERS[paused](1), *(MAKERS[endpoint](1) for endpoint in others(paused))])
    for endpoint in others(paused):
        assert wait_until(functools.partial(sent_once, stats, endpoint)), endpoint
        assert stored(server, endpoint) == 1
    # Only the two of the paused endpoint are left unsettled, still to be sent.
    assert wait_until(lambda: engine.pending == 2)

    assert requests_to(server, paused) == 1  # the throttled one; the next waits for the pause
    assert stored(server, paused) == 0


@pytest.mark.parametrize("refused", list(Endpoint), ids=str)
@pytest.mark.parametrize("status", [401, 403])
def test_a_key_refused_by_one_endpoint_still_sends_to_the_others(
    refused: Endpoint,
    status: int,
    server: EventsApiServer,
    engines: Engines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.inject(Fault(status=status), endpoint=refused.value)
    engine, stats = start(engines, server)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        engine.submit([MAKERS[refused](0)])
        assert engine.flush(LONG)
        engine.submit([MAKERS[refused](1), *(MAKERS[endpoint](1) for endpoint in others(refused))])
        assert engine.flush(LONG)

    for endpoint in others(refused):
        assert stored(server, endpoint) == 1, endpoint
        assert counted(stats, endpoint, "sent") == 1
    # The second item to the refused endpoint failed without a request (the pause).
    assert requests_to(server, refused) == 1
    assert stored(server, refused) == 0
    assert counted(stats, refused, "failed") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    if status == 403 and refused is not Endpoint.EVENTS:
        api = "Messages API" if refused is Endpoint.MESSAGES else "Ratings API"
        assert f"does not allow the {api}" in errors[0]


def test_an_unreachable_endpoint_is_probed_not_retried_per_item_then_all_go_when_it_is_back(
    engines: Engines,
) -> None:
    first = EventsApiServer(port=free_port()).start()  # the port stays reserved
    port = first.port
    first.stop()  # connections refused from now on
    engine, stats = start(engines, first)
    count = 200
    engine.submit([MAKERS[Endpoint.EVENTS](n) for n in range(count)])
    assert wait_until(lambda: counted(stats, Endpoint.EVENTS, "retried") >= 8)
    time.sleep(0.5)  # several backoffs (50 to 200 ms)
    # Each refusal pauses the endpoint for its backoff: a few probes, never a try per item
    # per backoff (which made at least one retry of each of the 200 at once).
    assert counted(stats, Endpoint.EVENTS, "retried") < count
    with EventsApiServer(port=port) as back:
        assert wait_until(lambda: counted(stats, Endpoint.EVENTS, "sent") == count)
        assert len(back.events) == count
