"""What the Logfire apps share (``logfire_app.py``: Logfire configured first;
``logfire_late_app.py`` and ``logfire_late_spans_app.py``: Greenflash first). Nothing here sets
anything up at import."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

import logfire  # type: ignore[import-not-found,unused-ignore]

from ._common import PRICE, Chat, SpanDump


def chat_baggage(chat: Chat) -> AbstractContextManager[Any]:
    """The chat's ids as baggage, the way Logfire's documentation names a request's user: Logfire
    copies each entry onto every span started inside, as an attribute of the same name."""
    ids = {"gen_ai.conversation.id": chat.conversation, "user.id": chat.user}
    manager: AbstractContextManager[Any] = logfire.set_baggage(**ids)
    return manager


def report_span(chat: Chat, kind: str, influence: str) -> None:
    """A business event as a Logfire user writes it: a ``logfire.span`` with the attributes."""
    attributes = {
        "greenflash.event.type": kind,
        "greenflash.event.value": PRICE,
        "greenflash.event.value_type": "currency",
        "greenflash.event.influence": influence,
        "greenflash.event.properties.chat": chat.conversation,
        "greenflash.event.properties.kind": kind,
    }
    # Not an f-string: Logfire reads an f-string in logfire.span(...) as a message template.
    name = "billing." + kind
    with logfire.span(name, **attributes):
        pass


def report_cancellation(chat: Chat) -> None:
    """The cancellation as a ``logfire.span``."""
    report_span(chat, "cancellation", "negative")


def dump_logfire_spans() -> None:
    """The span dump on Logfire's own provider (its proxy passes it to the SDK provider inside),
    for when that provider is not the global one."""
    path = os.environ.get("STACK_SPAN_DUMP")
    if path:
        logfire.DEFAULT_LOGFIRE_INSTANCE.config.get_tracer_provider().add_span_processor(
            SpanDump(path)
        )
