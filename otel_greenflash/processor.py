"""``GreenflashSpanProcessor``: picks event spans at on_end and ships them in the background."""

from __future__ import annotations

import logging

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._config import ENV_API_KEY, GreenflashConfig
from ._mapping import has_business_events
from ._pipeline import EventPipeline
from ._stats import StatsSnapshot
from ._worker import BackgroundWorker

logger = logging.getLogger("otel_greenflash")

DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY_SECONDS = 1.0


class GreenflashSpanProcessor(SpanProcessor):
    """Turns spans carrying ``greenflash.event.*`` attributes into Greenflash events.

    Other spans pass through untouched and are never exported. Mapping and HTTP happen on a
    background thread; the application thread only runs a membership test and, for event
    spans, an append to a bounded queue.
    """

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        schedule_delay_seconds: float = DEFAULT_SCHEDULE_DELAY_SECONDS,
    ) -> None:
        self._config = GreenflashConfig.resolve(
            api_key=api_key,
            product_id=product_id,
            base_url=base_url,
            timeout_seconds=timeout_seconds,
        )
        self._pipeline = EventPipeline(self._config)
        self._stats = self._pipeline.stats
        self._enabled = bool(self._config.api_key)
        self._warned_queue_full = False
        if not self._enabled:
            logger.warning(
                "%s is not set: GreenflashSpanProcessor will send no business events", ENV_API_KEY
            )
        self._worker: BackgroundWorker[ReadableSpan] = BackgroundWorker(
            self._export_batch,
            name="otel-greenflash-processor",
            max_queue_size=max_queue_size,
            max_batch_size=max_batch_size,
            schedule_delay_seconds=schedule_delay_seconds,
        )

    @property
    def config(self) -> GreenflashConfig:
        return self._config

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not has_business_events(span):
            return
        if not self._enabled:
            self._stats.add_dropped("no_api_key")
            return
        if self._worker.submit(span):
            self._stats.add_queued()
            return
        self._stats.add_dropped("queue_full")
        if not self._warned_queue_full:
            self._warned_queue_full = True
            logger.warning(
                "otel_greenflash queue is full: new event spans are dropped and counted "
                "in stats()['dropped']['queue_full']"
            )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued so far; return False if the timeout passed first."""
        return self._worker.flush(timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush within the timeout, stop the worker and report what could not be sent."""
        left = self._worker.shutdown(timeout_millis / 1000)
        if left:
            self._stats.add_dropped("shutdown", left)
            logger.warning("otel_greenflash shut down with %d event span(s) not delivered", left)
        if self._worker.stopped:
            self._pipeline.close()

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters."""
        return self._stats.snapshot()

    def _export_batch(self, spans: list[ReadableSpan]) -> None:
        self._pipeline.send(self._pipeline.events_from_spans(spans))
