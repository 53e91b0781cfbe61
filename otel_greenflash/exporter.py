"""``GreenflashSpanExporter``: a SpanExporter for the SDK's own span processors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._config import GreenflashConfig
from ._delivery import DropCallback, ErrorCallback
from ._stats import StatsSnapshot
from .processor import GreenflashSpanProcessor


class GreenflashSpanExporter(SpanExporter):
    """Exports the business events found in batches of finished spans; ignores other spans.

    Constructible with no arguments (settings from ``GREENFLASH_*`` environment variables),
    so it can run inside ``BatchSpanProcessor`` or be named by ``OTEL_TRACES_EXPORTER``.

    An exporter never sees spans start, so it links events through the spans it has been
    given: ids found on any span of the trace (same batch or an earlier one), and — for an
    event whose conversation is still unknown — a wait for the trace's local root span to
    arrive in a later batch (bounded like the processor's). ``export`` returns once the batch's
    events are delivered or have failed (within ``export_timeout_seconds``), except events
    still waiting for their root span; ``force_flush`` and ``shutdown`` send those too.
    Accepts every keyword of :class:`GreenflashSpanProcessor`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        **settings: Any,
    ) -> None:
        self._core = GreenflashSpanProcessor(
            api_key, product_id, base_url, on_error=on_error, on_drop=on_drop, **settings
        )
        self._shutdown = False

    @property
    def config(self) -> GreenflashConfig:
        return self._core.config

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        on_end = self._core.on_end
        for span in spans:
            on_end(span)
        failed_before = self._core.stats()["failed"]
        delivered = self._core.deliver_queued(int(self._core.config.export_timeout_seconds * 1000))
        if delivered and self._core.stats()["failed"] == failed_before:
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._core.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: int | None = None) -> None:
        """Send what is left (waiting events included) within ``timeout_millis`` (default:
        the export timeout), then stop."""
        if self._shutdown:
            return
        self._shutdown = True
        if timeout_millis is None:
            timeout_millis = int(self._core.config.export_timeout_seconds * 1000)
        self._core.shutdown(timeout_millis)

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters."""
        return self._core.stats()
