"""pytest plugin, auto-loaded when otel-greenflash is installed: ``greenflash_server``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import EventsApiServer


@pytest.fixture
def greenflash_server() -> Iterator[EventsApiServer]:
    """A running local Events API server; ``.base_url``/``.api_key`` configure a processor."""
    with EventsApiServer() as server:
        yield server
