"""What the delivery fault tests share (tests/deliver/test_delivery_semantics.py for spans,
test_log_faults.py for log records): a lab that starts receivers and fault proxies and stops
them in the right order, an ``on_error`` recorder, and readers of what a receiver accepted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from otel_greenflash import BusinessEvent
from tests.support.independent_receiver import FaultProxy, Receiver, RequestRecord

CLIENTS = ("aiohttp", "httpx")

ErrorCallback = Callable[[Exception, Sequence[BusinessEvent]], None]
DropCallback = Callable[[Sequence[BusinessEvent], str], None]


class ServerLab:
    """Starts receivers and proxies; :meth:`close_servers` stops them, last started first,
    and checks they had no errors of their own. Subclasses add the intakes aimed at them."""

    def __init__(self) -> None:
        self.servers: list[Receiver | FaultProxy] = []

    def receiver(self, **options: Any) -> Receiver:
        receiver = Receiver(**options).start()
        self.servers.append(receiver)
        return receiver

    def proxy(self, receiver: Receiver) -> FaultProxy:
        proxy = FaultProxy.in_front_of(receiver).start()
        self.servers.append(proxy)
        return proxy

    def close_servers(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        for server in self.servers:
            assert server.errors == []


class ErrorLog:
    """An ``on_error`` callback recording each error with the values of its events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[Exception, list[str]]] = []

    def __call__(self, error: Exception, events: Sequence[BusinessEvent]) -> None:
        with self._lock:
            self._items.append((error, [str(event.body.get("value")) for event in events]))

    @property
    def items(self) -> list[tuple[Exception, list[str]]]:
        with self._lock:
            return list(self._items)

    @property
    def values(self) -> list[str]:
        return sorted(value for _, values in self.items for value in values)


def accepted_values(receiver: Receiver) -> list[str]:
    return sorted(str(event["value"]) for event in receiver.accepted)


def value_of(receiver: Receiver) -> dict[str, str]:
    """insertId -> value, for every accepted event."""
    return {str(event["insertId"]): str(event["value"]) for event in receiver.accepted}


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def retries_of(requests: Sequence[RequestRecord]) -> list[RequestRecord]:
    """Requests repeating an insertId seen in an earlier request."""
    seen: set[str | None] = set()
    repeats = []
    for request in requests:
        if request.insert_id in seen:
            repeats.append(request)
        seen.add(request.insert_id)
    return repeats
