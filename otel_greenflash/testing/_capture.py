"""In-memory capture of business events, for users' own tests (no network, no server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .._deliver.transport import SendOutcome
from ..processor import GreenflashSpanProcessor
from ._contract import validate_event_body, validate_messages_body, validate_rating_body

TEST_PRODUCT_ID = "00000000-0000-4000-8000-000000000001"
"""Product id used by :class:`CapturedEvents` when none is configured."""


class MemoryTransport:
    """A transport that keeps each body in memory; bodies breaking the contract get a 422.
    Messages and ratings bodies are kept apart (:attr:`messages`, :attr:`ratings`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._others: dict[str, list[dict[str, Any]]] = {"messages": [], "ratings": []}
        self.errors: list[list[str]] = []
        """Contract violations of rejected bodies (should stay empty)."""

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        event = json.loads(body)
        errors = validate_event_body(event)
        with self._lock:
            if errors:
                self.errors.append(errors)
                return SendOutcome(422)
            self._events.append(event)
        return SendOutcome(200)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``POST /messages`` bodies taken, one per request."""
        with self._lock:
            return list(self._others["messages"])

    @property
    def ratings(self) -> list[dict[str, Any]]:
        """The ``POST /ratings`` bodies taken."""
        with self._lock:
            return list(self._others["ratings"])

    def send_to(
        self, endpoint: str, body: bytes, timeout_seconds: float | None = None
    ) -> SendOutcome:
        """A ``/messages`` or ``/ratings`` body, checked against its contract."""
        validate = validate_messages_body if endpoint == "messages" else validate_rating_body
        if endpoint not in self._others:
            return SendOutcome(404)
        request = json.loads(body)
        errors = validate(request)
        with self._lock:
            if errors:
                self.errors.append(errors)
                return SendOutcome(422)
            self._others[endpoint].append(request)
        return SendOutcome(200)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            for kept in self._others.values():
                kept.clear()
            self.errors.clear()

    def close(self) -> None:
        return None


class CapturedEvents:
    """A processor that delivers into memory, plus a tracer provider that uses it.

    Use ``captured.tracer`` (or add ``captured.processor`` to your own provider), run the code
    under test, then read ``captured.events`` (it flushes first).
    """

    def __init__(self, product_id: str = TEST_PRODUCT_ID, **settings: Any) -> None:
        self.transport = MemoryTransport()
        settings.setdefault("schedule_delay_seconds", 0.05)
        self.processor = GreenflashSpanProcessor(
            product_id=product_id, transport=self.transport, **settings
        )
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("otel_greenflash.testing")

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event delivered so far (waits for queued and waiting ones first)."""
        self.processor.force_flush(10_000)
        return self.transport.events

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["eventType"] == event_type]

    def one(self, event_type: str, **fields: Any) -> Mapping[str, Any]:
        """The single event of ``event_type`` whose fields equal ``fields``; AssertionError else."""
        captured = self.events
        found = [
            event
            for event in captured
            if event["eventType"] == event_type
            and all(event.get(name) == value for name, value in fields.items())
        ]
        if len(found) != 1:
            raise AssertionError(self._mismatch(event_type, fields, len(found), captured))
        return found[0]

    def _mismatch(
        self,
        event_type: str,
        fields: Mapping[str, Any],
        matching: int,
        captured: list[dict[str, Any]],
    ) -> str:
        wanted = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        lines = [
            f"expected one {event_type!r} event{' with ' + wanted if wanted else ''}, "
            f"found {matching}; captured {len(captured)} event(s):"
        ]
        lines += [f"  {json.dumps(event, sort_keys=True, default=str)}" for event in captured]
        stats = self.processor.stats()
        if stats["invalid"]:
            lines.append(
                f"  and {stats['invalid']} invalid event(s) not captured (their attributes "
                "broke the convention; the otel_greenflash log says which)"
            )
        if self.transport.errors:
            lines.append(f"  and {len(self.transport.errors)} refused by the contract check")
        return "\n".join(lines)

    def clear(self) -> None:
        self.processor.force_flush(10_000)
        self.transport.clear()

    def close(self) -> None:
        self.provider.shutdown()
