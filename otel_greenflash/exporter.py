"""``GreenflashSpanExporter``: a SpanExporter for the SDK's own span processors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import _record_only, _termination
from ._config import GreenflashConfig
from ._delivery import DropCallback, ErrorCallback
from ._stats import StatsSnapshot
from .processor import GreenflashSpanProcessor, active_processors


class GreenflashSpanExporter(SpanExporter):
    """Exports the business events found in batches of finished spans; ignores other spans.

    Constructible with no arguments (settings from ``GREENFLASH_*`` environment variables),
    so it can run inside ``BatchSpanProcessor`` or be named by ``OTEL_TRACES_EXPORTER``.

    An exporter never sees spans start, so it links events through the spans it has been
    given: ids found on any span of the trace (same batch or an earlier one), and — for an
    event whose conversation is still unknown — a wait for the trace's local root span to
    arrive in a later batch (bounded like the processor's). ``export`` waits for the batch's
    events up to ``timeout_seconds`` (like OTLP exporters' export timeout) and returns
    ``SUCCESS`` when all were accepted; past that it returns ``FAILURE`` while their delivery
    goes on in the background (retried within the retry window, counted as always). Events
    still waiting for their root span are not waited for; ``force_flush`` and ``shutdown``
    send those too.
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
        config = self._core.config
        if config.enabled:
            # Record-only spans (GreenflashSampler) never reach a batch processor's exporter.
            _record_only.add_exporter(self, self._core, self._core.on_end)
            # At SIGTERM the SDK's batch processor may still hold spans meant for this exporter.
            _termination.watch(
                active_processors,
                handle_sigterm=config.handle_sigterm,
                budget_seconds=config.termination_timeout_seconds,
                fed_by_sdk_batches=True,
            )

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
        delivered = self._core.deliver_queued(int(self._core.config.timeout_seconds * 1000))
        if delivered and self._core.stats()["failed"] == failed_before:
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._core.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Send what is left (waiting events included) within ``timeout_millis``, then stop."""
        if self._shutdown:
            return
        self._shutdown = True
        _record_only.remove_exporter(self)
        self._core.shutdown(timeout_millis)

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters."""
        return self._core.stats()
