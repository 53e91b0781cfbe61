"""Value objects passed along the pipeline: a mapped event and an invalid attribute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, repr=False)
class BusinessEvent:
    """One Events API request body, ready to send.

    ``body`` holds application data, so ``repr`` shows only where the event came from.
    """

    body: Mapping[str, object]
    insert_id: str
    span_name: str

    @property
    def event_type(self) -> str:
        return str(self.body["eventType"])

    @property
    def loggable_insert_id(self) -> str:
        """The insertId when this library generated it (trace and span ids only); a user's own
        ``greenflash.event.insert_id`` may carry business data, so it is not shown."""
        generated = self.insert_id.startswith(("otel-", "track-", "cli-"))
        return self.insert_id if generated else "<custom>"

    def __repr__(self) -> str:
        return f"BusinessEvent(span_name={self.span_name!r}, insert_id={self.insert_id!r})"


@dataclass(frozen=True, slots=True)
class InvalidAttribute:
    """Why one business event could not be built. Never holds the offending value."""

    span_name: str
    attribute: str
    problem: str
    allowed: str

    def describe(self) -> str:
        return (
            f"business event on span {self.span_name!r} not sent: attribute "
            f"{self.attribute!r} {self.problem}; allowed: {self.allowed}"
        )
