"""``GreenflashSpanExporter``: a SpanExporter for the SDK's own span processors."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._config import ENV_API_KEY, GreenflashConfig
from ._pipeline import EventPipeline
from ._stats import StatsSnapshot

logger = logging.getLogger("otel_greenflash")


class GreenflashSpanExporter(SpanExporter):
    """Exports the business events found in a batch of finished spans; ignores other spans.

    Constructible with no arguments (settings from ``GREENFLASH_*`` environment variables),
    so it can run inside ``BatchSpanProcessor`` or be named by ``OTEL_TRACES_EXPORTER``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
    ) -> None:
        self._config = GreenflashConfig.resolve(
            api_key=api_key,
            product_id=product_id,
            base_url=base_url,
            timeout_seconds=timeout_seconds,
        )
        self._pipeline = EventPipeline(self._config)
        self._shutdown = False
        if not self._config.api_key:
            logger.warning(
                "%s is not set: GreenflashSpanExporter will send no business events", ENV_API_KEY
            )

    @property
    def config(self) -> GreenflashConfig:
        return self._config

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        events = self._pipeline.events_from_spans(spans)
        if not events:
            return SpanExportResult.SUCCESS
        if not self._config.api_key:
            self._pipeline.stats.add_dropped("no_api_key", len(events))
            return SpanExportResult.SUCCESS
        sent = self._pipeline.send(events)
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown = True
        self._pipeline.close()

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters."""
        return self._pipeline.stats.snapshot()
