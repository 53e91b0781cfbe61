"""``GreenflashSpanProcessor``: sees spans start and end, and feeds their business events to
the pipeline; the application thread does dictionary work only."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.trace import SpanProcessor

from ._config import GreenflashConfig, Redactor
from ._deliver.engine import ErrorCallback
from ._deliver.transport import Transport
from ._intake_kind import IntakeKind
from ._link.rules import WaitingEvents
from ._link.span_notes import ParentFinder, SpanNotes
from ._pipeline.intake import PipelineIntake, resolve_config
from ._pipeline.worker import BackgroundWorker
from ._records import EventLog, EventSpan, Record
from ._stats import DropCallback


def _ignore(*args: object, **kwargs: object) -> None:
    return None


class GreenflashSpanProcessor(PipelineIntake, SpanNotes, SpanProcessor):
    """Turns spans carrying ``greenflash.event.*`` attributes into Greenflash events.

    Other spans pass through untouched and are never exported. Each event is linked to its
    conversation through the trace (see docs/linking.md's precedence table). Linking, mapping and
    HTTP happen on background threads, in the pipeline this processor shares with the other
    intakes created with the same settings (e.g. a :class:`GreenflashLogRecordProcessor`).
    """

    _kind = IntakeKind.SPAN_PROCESSOR

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        max_queue_size: int | None = None,
        max_queue_bytes: int | None = None,
        max_batch_size: int | None = None,
        schedule_delay_seconds: float | None = None,
        send_delay_seconds: float | None = None,
        export_timeout_seconds: float | None = None,
        max_concurrency: int | None = None,
        http_client: str | None = None,
        aliases: Mapping[str, str] | None = None,
        extra_aliases: Mapping[str, str] | None = None,
        linger_seconds: float | None = None,
        max_waiting: int | None = None,
        max_traces: int | None = None,
        custom_headers: Mapping[str, str] | None = None,
        spool_dir: str | None = None,
        spool_max_events: int | None = None,
        dry_run: bool | None = None,
        allow_insecure_http: bool | None = None,
        enabled: bool | None = None,
        handle_sigterm: bool | None = None,
        termination_timeout_seconds: float | None = None,
        capture_conversations: bool | None = None,
        capture_message_content: bool | None = None,
        max_message_bytes: int | None = None,
        default_external_user_id: str | None = None,
        redact_message: Redactor | None = None,
        on_error: ErrorCallback | None = None,
        on_drop: DropCallback | None = None,
        config: GreenflashConfig | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Every setting left ``None`` comes from its ``GREENFLASH_*`` variable, then its
        default (see docs/configuration.md); ``config`` replaces them all.
        ``transport`` replaces HTTP delivery (e.g. ``otel_greenflash.testing.MemoryTransport``).
        """
        config = resolve_config(
            config,
            dict(
                api_key=api_key,
                product_id=product_id,
                base_url=base_url,
                timeout_seconds=timeout_seconds,
                max_queue_size=max_queue_size,
                max_queue_bytes=max_queue_bytes,
                max_batch_size=max_batch_size,
                schedule_delay_seconds=schedule_delay_seconds,
                send_delay_seconds=send_delay_seconds,
                export_timeout_seconds=export_timeout_seconds,
                max_concurrency=max_concurrency,
                http_client=http_client,
                aliases=aliases,
                extra_aliases=extra_aliases,
                linger_seconds=linger_seconds,
                max_waiting=max_waiting,
                max_traces=max_traces,
                custom_headers=custom_headers,
                spool_dir=spool_dir,
                spool_max_events=spool_max_events,
                dry_run=dry_run,
                allow_insecure_http=allow_insecure_http,
                enabled=enabled,
                handle_sigterm=handle_sigterm,
                termination_timeout_seconds=termination_timeout_seconds,
                capture_conversations=capture_conversations,
                capture_message_content=capture_message_content,
                max_message_bytes=max_message_bytes,
                default_external_user_id=default_external_user_id,
                redact_message=redact_message,
            ),
        )
        pipeline = self._join(config, on_error=on_error, on_drop=on_drop, transport=transport)
        if pipeline is None:
            self.on_start = _ignore  # type: ignore[method-assign]
            self.on_end = _ignore  # type: ignore[method-assign]
            return
        # on_start and on_end are the link stage's (SpanNotes): spans starting and ending.
        self._note_spans(pipeline.linker, pipeline.span_ended, pipeline.drop)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        self._closed = True  # event spans ending from now on are dropped
        super().shutdown(timeout_millis)

    def _find_unseen_parents(self, parent_of: ParentFinder) -> None:
        """For ``configure()``: spans whose local parent did not start under this processor
        bring that parent's provider under it (see :mod:`otel_greenflash._providers`)."""
        self._parent_of = parent_of

    # -- for tests and tools -----------------------------------------------------------------

    @property
    def _worker(self) -> BackgroundWorker[Record]:
        return self._shared.worker

    @property
    def _waiting(self) -> WaitingEvents[EventSpan | EventLog]:
        return self._shared.linker.waiting

    def deliver_queued(self, timeout_millis: int = 30000) -> bool:
        """Like :meth:`force_flush`, but events waiting for their trace's root keep waiting."""
        pipeline = self._pipeline
        return True if pipeline is None else pipeline.deliver_queued(timeout_millis)
