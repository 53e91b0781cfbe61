"""Testing tools: a local Greenflash API server (events, messages, ratings) and pytest fixtures.

>>> from otel_greenflash.testing import EventsApiServer
>>> with EventsApiServer() as server:  # doctest: +SKIP
...     processor = GreenflashSpanProcessor(api_key=server.api_key, base_url=server.base_url)
"""

from ._capture import TEST_PRODUCT_ID, CapturedEvents, MemoryTransport
from ._contract import validate_event_body, validate_messages_body, validate_rating_body
from ._server import (
    DEFAULT_API_KEY,
    EventsApiServer,
    Fault,
    RecordedRequest,
    StoredConversation,
    StoredMessage,
)

__all__ = [
    "DEFAULT_API_KEY",
    "TEST_PRODUCT_ID",
    "CapturedEvents",
    "EventsApiServer",
    "Fault",
    "MemoryTransport",
    "RecordedRequest",
    "StoredConversation",
    "StoredMessage",
    "validate_event_body",
    "validate_messages_body",
    "validate_rating_body",
]
