"""pytest plugin, auto-loaded when otel-greenflash is installed.

- ``greenflash_server``: a running local Greenflash API server (real HTTP on loopback):
  events, messages and ratings.
- ``greenflash_events``: business events captured in memory (no network).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._capture import CapturedEvents
from ._server import EventsApiServer


@pytest.fixture
def greenflash_server() -> Iterator[EventsApiServer]:
    """A running local Greenflash API server (events, messages, ratings); ``.base_url`` and
    ``.api_key`` configure a processor."""
    with EventsApiServer() as server:
        yield server


@pytest.fixture
def greenflash_events() -> Iterator[CapturedEvents]:
    """Capture business events in memory: use ``.tracer`` or add ``.processor`` to a provider,
    then assert on ``.events`` / ``.of_type(...)`` / ``.one(...)``."""
    captured = CapturedEvents()
    yield captured
    captured.close()
