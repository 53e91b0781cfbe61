"""Span → event → delivery, shared by the processor and the exporter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from ._config import GreenflashConfig
from ._delivery import DeliveryEngine, DropCallback, ErrorCallback, SettledCallback
from ._event import BusinessEvent, InvalidAttribute
from ._linking import LinkKeys
from ._logging import logger
from ._mapping import map_span
from ._stats import DeliveryStats
from ._transport import Transport, transport_for


class EventPipeline:
    """Maps finished spans to business events and hands them to a :class:`DeliveryEngine`."""

    def __init__(
        self,
        config: GreenflashConfig,
        *,
        link_keys: LinkKeys | None = None,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        start: bool = True,
        transport: Transport | None = None,
        on_settled: SettledCallback | None = None,
    ) -> None:
        self.config = config
        self.stats = DeliveryStats()
        self.link_keys = link_keys if link_keys is not None else LinkKeys(config.aliases)
        self.on_error = on_error
        self.on_drop = on_drop
        self._transport_override = transport
        self.on_settled = on_settled
        if start:
            self.engine = self._new_engine()

    def _new_engine(self) -> DeliveryEngine:
        config = self.config
        return DeliveryEngine(
            self._transport_override or transport_for(config),
            self.stats,
            concurrency=config.max_concurrency,
            max_pending=config.max_queue_size,
            deadline_seconds=config.export_timeout_seconds,
            on_error=self.on_error,
            on_drop=self.on_drop,
            on_settled=self.on_settled,
        )

    def restart_after_fork(self) -> None:
        """Give a forked child its own engine: fresh threads, connections and counters.

        The parent's client is abandoned, not closed: its sockets still belong to the parent.
        """
        self.stats = DeliveryStats()
        self.engine = self._new_engine()

    def map_span(
        self,
        span: ReadableSpan,
        linked: Mapping[str, AttributeValue] | None = None,
        *,
        report: bool = True,
    ) -> list[BusinessEvent]:
        """Map one event span; invalid events are logged and counted when ``report``."""
        result = map_span(
            span,
            default_product_id=self.config.product_id,
            linked=linked,
            link_keys=self.link_keys,
        )
        if report:
            self.report_invalid(result.invalid)
        return result.events

    def report_invalid(self, invalid: Iterable[InvalidAttribute]) -> None:
        """One warning line per rejected event, and the counter."""
        for problem in invalid:
            logger.warning(problem.describe())
            self.stats.add_invalid()
