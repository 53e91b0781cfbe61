"""pytest plugin, auto-loaded when otel-greenflash is installed.

- ``greenflash_server``: a running local Events API server (real HTTP on loopback).
- ``greenflash_events``: business events captured in memory (no network).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._capture import CapturedEvents
from ._server import EventsApiServer


@pytest.fixture
def greenflash_server() -> Iterator[EventsApiServer]:
    """A running local Events API server; ``.base_url``/``.api_key`` configure a processor."""
    with EventsApiServer() as server:
        yield server


@pytest.fixture
def greenflash_events() -> Iterator[CapturedEvents]:
    """Capture business events in memory: use ``.tracer`` or add ``.processor`` to a provider,
    then assert on ``.events`` / ``.of_type(...)`` / ``.one(...)``."""
    captured = CapturedEvents()
    yield captured
    captured.close()
