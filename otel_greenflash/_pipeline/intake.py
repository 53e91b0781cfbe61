"""What every intake shares: its settings, the pipeline it feeds, and its lifecycle.

The public processors and exporters are thin: each turns what the SDK hands it into finished
records for :class:`~.pipeline.EventPipeline` and inherits the rest from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._config import GreenflashConfig
from .._deliver.engine import ErrorCallback
from .._deliver.transport import Transport
from .._intake_kind import IntakeKind
from .._stats import DeliveryStats, DropCallback, StatsSnapshot
from .pipeline import EventPipeline
from .registry import pipeline_for


def resolve_config(
    config: GreenflashConfig | None, settings: Mapping[str, Any]
) -> GreenflashConfig:
    """The intake's settings: ``config`` as given, else each keyword (``None`` = not given),
    then its ``GREENFLASH_*`` variable, then its default."""
    if config is not None:
        return config
    explicit = dict(settings)
    if "max_batch_size" in explicit:
        explicit["max_export_batch_size"] = explicit.pop("max_batch_size")
    return GreenflashConfig.resolve(**explicit)


class PipelineIntake:
    """Base of every intake: joins the shared pipeline for its settings and kind.

    Accepts every keyword of :class:`GreenflashSpanProcessor`; settings not given come from
    the ``GREENFLASH_*`` variables.
    """

    _kind: ClassVar[IntakeKind]
    _pipeline: EventPipeline | None

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        config: GreenflashConfig | None = None,
        transport: Transport | None = None,
        **settings: Any,
    ) -> None:
        config = resolve_config(
            config, dict(settings, api_key=api_key, product_id=product_id, base_url=base_url)
        )
        self._join(config, on_error=on_error, on_drop=on_drop, transport=transport)

    def _join(
        self,
        config: GreenflashConfig,
        *,
        on_error: ErrorCallback | None,
        on_drop: DropCallback | None,
        transport: Transport | None,
    ) -> EventPipeline | None:
        self._config = config
        self._is_shutdown = False
        if not config.enabled:  # GREENFLASH_ENABLED=false or OTEL_SDK_DISABLED=true
            self._is_shutdown = True
            self._pipeline = None
            return None
        self._pipeline = pipeline_for(
            config, self._kind, on_error=on_error, on_drop=on_drop, transport=transport
        )
        return self._pipeline

    @property
    def config(self) -> GreenflashConfig:
        return self._config

    @property
    def _shared(self) -> EventPipeline:
        """The pipeline (for tests and tools; a disabled intake has none)."""
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("a disabled intake has no pipeline")
        return pipeline

    def _deliver_taken(self, pipeline: EventPipeline) -> bool:
        """For exporters: wait for the records just taken, up to ``timeout_seconds`` (as OTLP
        exporters bound an export); True when all were accepted and none failed."""
        failed_before = pipeline.stats_counters.snapshot()["failed"]
        delivered = pipeline.deliver_queued(int(self._config.timeout_seconds * 1000))
        return delivered and pipeline.stats_counters.snapshot()["failed"] == failed_before

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver every event taken before the call, waiting ones included (spooled ones
        too); True only when each is settled (sent, refused, or failed for good)."""
        pipeline = self._pipeline
        return True if pipeline is None else pipeline.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Stop taking records. The last intake of a pipeline delivers what fits in the
        timeout, stops it and reports what was not delivered."""
        if self._is_shutdown:
            return
        self._is_shutdown = True
        if self._pipeline is not None:
            self._pipeline.detach(self._kind, timeout_millis)

    def stats(self) -> StatsSnapshot:
        """A snapshot of the delivery counters of the pipeline this intake feeds (each
        business event ends in exactly one of ``sent``, ``failed``, ``invalid``, ``dropped``)."""
        pipeline = self._pipeline
        return DeliveryStats().snapshot() if pipeline is None else pipeline.stats()
