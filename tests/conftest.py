"""Shared fixtures: a local Events API server (the plugin's), the independent receiver, and
tracer providers wired to them. Shared constants live here too; helpers in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import EventsApiServer
from tests.support.common import CONVERSATION_ID, PRODUCT_ID, MakeProcessor
from tests.support.independent_receiver import Receiver

__all__ = ["CONVERSATION_ID", "PRODUCT_ID", "MakeProcessor"]  # for imports not yet moved


@pytest.fixture
def server(greenflash_server: EventsApiServer) -> EventsApiServer:
    """The plugin's ``greenflash_server`` fixture, under a short name."""
    return greenflash_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "receiver(**options): the receiver fixture's Receiver options (latency_seconds, …)",
    )


STARTED_FIRST = (
    "tests/stacks/",  # on a fresh machine each stack's virtualenv is built first: minutes
    "tests/deployments/",
    "tests/collector/",  # a real Collector in front of gateway subprocesses
    "tests/deliver/test_delivery_semantics.py",
    "tests/lifecycle/",
    "tests/link/",
    "tests/lane/",
    "tests/gateway/",
    "tests/end_to_end/",
    "tests/deliver/",
    "tests/testing/",
)
"""Where the longest tests are (servers, child processes, fuzzing), longest first: handed out
first, two at a time (pyproject's addopts), the parallel workers do not end the run waiting
on one of them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests under :data:`STARTED_FIRST` first, the rest in their usual order."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next(
            (index for index, prefix in enumerate(STARTED_FIRST) if path.startswith(prefix)),
            len(STARTED_FIRST),
        )

    items.sort(key=rank)


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """The independent Events API receiver (tests/support/independent_receiver.py), built with
    the options of the closest ``receiver`` mark; it must end without errors of its own."""
    mark = request.node.get_closest_marker("receiver")
    with Receiver(**(mark.kwargs if mark is not None else {})) as started:
        yield started
        assert started.errors == []


@pytest.fixture
def make_processor(server: EventsApiServer) -> Iterator[MakeProcessor]:
    """Build processors pointed at the local server; shut them all down afterwards."""
    made: list[GreenflashSpanProcessor] = []

    def make(**overrides: Any) -> GreenflashSpanProcessor:
        options: dict[str, Any] = {
            "api_key": server.api_key,
            "base_url": server.base_url,
            "product_id": PRODUCT_ID,
            "schedule_delay_seconds": 0.05,
        }
        options.update(overrides)
        processor = GreenflashSpanProcessor(**options)
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.shutdown(timeout_millis=2000)


@pytest.fixture
def provider(make_processor: MakeProcessor) -> Iterator[TracerProvider]:
    """A TracerProvider with one GreenflashSpanProcessor aimed at the local server."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(make_processor())
    yield tracer_provider
    tracer_provider.shutdown()
