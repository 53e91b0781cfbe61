"""Values the tests share: the product and conversation ids they send, and the type of the
``make_processor`` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from otel_greenflash import GreenflashSpanProcessor

PRODUCT_ID = "123e4567-e89b-12d3-a456-426614174000"
CONVERSATION_ID = "0b9f3f8e-5a3c-4f7e-9c1d-2a6b8e4d7f10"

MakeProcessor = Callable[..., GreenflashSpanProcessor]
