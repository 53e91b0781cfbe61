"""``GreenflashSpanExporter``: a SpanExporter for the SDK's own span processors."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._config import ENV_API_KEY, GreenflashConfig
from ._delivery import DropCallback, ErrorCallback
from ._logging import logger
from ._pipeline import EventPipeline
from ._stats import StatsSnapshot

DEFAULT_EXPORT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_CONCURRENCY = 16


class GreenflashSpanExporter(SpanExporter):
    """Exports the business events found in a batch of finished spans; ignores other spans.

    Constructible with no arguments (settings from ``GREENFLASH_*`` environment variables),
    so it can run inside ``BatchSpanProcessor`` or be named by ``OTEL_TRACES_EXPORTER``.
    ``export`` sends the batch's events concurrently, with retries, and returns when each is
    delivered or has failed (at most ``export_timeout_seconds``).
    """

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        export_timeout_seconds: float = DEFAULT_EXPORT_TIMEOUT_SECONDS,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
    ) -> None:
        self._config = GreenflashConfig.resolve(
            api_key=api_key,
            product_id=product_id,
            base_url=base_url,
            timeout_seconds=timeout_seconds,
        )
        self._export_timeout = export_timeout_seconds
        self._pipeline = EventPipeline(
            self._config,
            concurrency=max_concurrency,
            deadline_seconds=export_timeout_seconds,
            on_error=on_error,
            on_drop=on_drop,
        )
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
        failed_before = self._pipeline.stats.snapshot()["failed"]
        self._pipeline.engine.submit(events)
        delivered = self._pipeline.engine.flush(self._export_timeout)
        failed = self._pipeline.stats.snapshot()["failed"] > failed_before
        return SpanExportResult.SUCCESS if delivered and not failed else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._pipeline.engine.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        undelivered = self._pipeline.engine.shutdown(self._export_timeout)
        if undelivered:
            logger.warning(
                "otel_greenflash exporter shut down before delivering %d business event(s)",
                undelivered,
            )

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters."""
        return self._pipeline.stats.snapshot()
