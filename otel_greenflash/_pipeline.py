"""Span → event → HTTP, shared by the processor's worker and the exporter."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from ._config import GreenflashConfig
from ._event import BusinessEvent, InvalidAttribute
from ._mapping import has_business_events, map_span
from ._stats import DeliveryStats
from ._transport import EventTransport, SendOutcome

logger = logging.getLogger("otel_greenflash")


class EventPipeline:
    """Maps finished spans to business events and sends them, counting every outcome."""

    def __init__(self, config: GreenflashConfig, stats: DeliveryStats | None = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else DeliveryStats()
        self._transport = EventTransport(config)
        self._auth_error_logged = threading.Event()

    def events_from_spans(
        self,
        spans: Iterable[ReadableSpan],
        linked: Mapping[int, Mapping[str, AttributeValue]] | None = None,
    ) -> list[BusinessEvent]:
        """Map spans to events; log and count the invalid ones.

        ``linked`` maps a span id to ids resolved for it elsewhere in the trace.
        """
        events: list[BusinessEvent] = []
        for span in spans:
            if not has_business_events(span):
                continue
            span_id = span.context.span_id if span.context is not None else 0
            result = map_span(
                span,
                default_product_id=self.config.product_id,
                linked=linked.get(span_id) if linked else None,
            )
            self.report_invalid(result.invalid)
            events.extend(result.events)
        return events

    def report_invalid(self, invalid: Iterable[InvalidAttribute]) -> None:
        """One warning line per rejected event, and the counter."""
        for problem in invalid:
            logger.warning(problem.describe())
            self.stats.add_invalid()

    def send(self, events: Iterable[BusinessEvent]) -> bool:
        """Send events one request each; return True when all were accepted."""
        all_sent = True
        for event in events:
            outcome = self._transport.send(event)
            if outcome.ok:
                self.stats.add_sent()
                continue
            all_sent = False
            self.stats.add_failed()
            self._log_failure(event, outcome)
        return all_sent

    def close(self) -> None:
        self._transport.close()

    def _log_failure(self, event: BusinessEvent, outcome: SendOutcome) -> None:
        if outcome.status in (401, 403):
            if not self._auth_error_logged.is_set():
                self._auth_error_logged.set()
                cause = (
                    "the API key was rejected (check GREENFLASH_API_KEY)"
                    if outcome.status == 401
                    else "the API key's plan does not allow the Events API"
                )
                logger.error("Greenflash answered %s: %s", outcome.status, cause)
            return
        reason = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error
        logger.warning(
            "business event from span %r (insertId %s) not delivered: %s",
            event.span_name,
            event.insert_id,
            reason,
        )
