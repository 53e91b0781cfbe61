"""``GreenflashSpanProcessor``: sees spans start and end, and feeds their business events to
the pipeline; the application thread does dictionary work only."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._config import GreenflashConfig
from ._deliver.engine import DropCallback, ErrorCallback
from ._deliver.transport import Transport
from ._link.rules import WaitingEvents, forget_oldest_share
from ._pipeline.intake import PipelineIntake, resolve_config
from ._pipeline.worker import BackgroundWorker
from ._providers import ProviderFinder
from ._records import EventLog, EventSpan, Record, has_business_events

# The API's baggage key: reading it directly avoids baggage.get_all()'s copy on every span start.
_BAGGAGE_KEY = baggage_api._BAGGAGE_KEY
# The current context, read straight from the SDK's ContextVar when it is the runtime context
# (saves two Python calls per span start); any other runtime context goes through the API.
_runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
_current_context: Callable[[], Context] = getattr(
    getattr(_runtime, "_current_context", None), "get", context_api.get_current
)
_getpid = os.getpid
_weak = weakref.ref


def _ignore(*args: object, **kwargs: object) -> None:
    return None


class GreenflashSpanProcessor(PipelineIntake, SpanProcessor):
    """Turns spans carrying ``greenflash.event.*`` attributes into Greenflash events.

    Other spans pass through untouched and are never exported. Each event is linked to its
    conversation through the trace (see docs/linking.md's precedence table). Linking, mapping and
    HTTP happen on background threads, in the pipeline this processor shares with the other
    intakes created with the same settings (e.g. a :class:`GreenflashLogRecordProcessor`).
    """

    _kind = "span_processor"

    def __init__(
        self,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        max_queue_size: int | None = None,
        max_batch_size: int | None = None,
        schedule_delay_seconds: float | None = None,
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
                max_batch_size=max_batch_size,
                schedule_delay_seconds=schedule_delay_seconds,
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
            ),
        )
        self._provider_finder: ProviderFinder | None = None
        """Set by configure(): spans whose local parent was not seen start bring their
        parent's provider under this processor (see :mod:`._providers`)."""
        pipeline = self._join(config, on_error=on_error, on_drop=on_drop, transport=transport)
        if pipeline is None:
            self.on_start = _ignore  # type: ignore[method-assign]
            self.on_end = _ignore  # type: ignore[method-assign]
            return
        # The hooks use the linker's structures directly: they are cleared in place after a
        # fork, never replaced.
        linker = pipeline.linker
        self._linker = linker
        self._live = linker.live
        self._live_spans = linker.live.spans
        self._live_baggage: dict[int, object] = linker.live.baggage  # type: ignore[assignment]
        self._max_live_spans = linker.live.max_spans
        self._trace_ids = linker.trace_ids
        self._event_traces = linker.event_traces
        self._open_roots = linker.open_roots
        self._no_marked_keys_in = linker.no_marked_keys_in
        self._span_ended = pipeline.span_ended

    # -- application thread ------------------------------------------------------------------
    # Both hooks run for every span of the application, so they read the SDK's private fields
    # (the public properties copy) and do only dictionary work. SpanContext is a tuple
    # (trace_id, span_id, is_remote, ...); its properties cost a Python call each.

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span._context
        if context is None:
            return
        span_id = context[1]
        spans = self._live_spans
        if len(spans) >= self._max_live_spans:  # spans that never end: forget the oldest
            self._live.evict_oldest_share()
        spans[span_id] = _weak(span)
        parent = span._parent
        if parent is None or parent[2]:  # a local root: log records of its trace may wait
            roots = self._open_roots
            trace_id = context[0]
            roots[trace_id] = roots.get(trace_id, 0) + 1
            if len(roots) > self._max_live_spans:  # roots that never end
                forget_oldest_share(roots)
        elif parent[1] not in spans and self._provider_finder is not None:
            self._parent_not_seen(parent[1], parent_context)
        start_baggage = (parent_context if parent_context is not None else _current_context()).get(
            _BAGGAGE_KEY
        )
        if start_baggage:
            self._live_baggage[span_id] = start_baggage

    def _parent_not_seen(self, parent_id: int, parent_context: Context | None) -> None:
        """A span whose local parent did not start under this processor (another provider's,
        or started before configure()): that provider gets the processor's hooks, and the
        parent is noted as live (and as an open root) so its trace links as usual."""
        finder = self._provider_finder
        if finder is None:
            return
        parent = finder.parent_of(
            parent_context if parent_context is not None else _current_context()
        )
        if parent is None or parent._context is None or parent._context[1] != parent_id:
            return
        if self._live_spans.setdefault(parent_id, _weak(parent))() is not parent:
            return  # noted meanwhile by another thread
        grandparent = parent._parent
        if grandparent is None or grandparent[2]:
            roots = self._open_roots
            trace_id = parent._context[0]
            roots[trace_id] = roots.get(trace_id, 0) + 1

    def on_end(self, span: ReadableSpan) -> None:
        context = span._context
        if context is None:
            return
        span_id = context[1]
        self._live_spans.pop(span_id, None)
        live_baggage = self._live_baggage
        start_baggage = live_baggage.pop(span_id, None) if live_baggage else None
        parent = span._parent
        root = parent is None or parent[2]
        if root:
            roots = self._open_roots
            still_open = roots.pop(context[0], 1) - 1
            if still_open > 0:
                roots[context[0]] = still_open
        attributes = span._attributes
        attributes = getattr(attributes, "_dict", attributes)
        events = span._events
        # The common case, in one C-level pass over the keys: no id, no event type, no span
        # event, and nothing in this trace concerns us.
        if (
            (not attributes or self._no_marked_keys_in(attributes))
            and not getattr(events, "_dq", events)
            and context[0] not in self._event_traces
            and context[0] not in self._trace_ids
            and not ((root or start_baggage) and self._linker.notes_every_root)
        ):
            return
        if self._is_shutdown:
            if self._pipeline is not None and has_business_events(span):
                self._pipeline.drops.drop(span, "shutdown")
            return
        self._span_ended(span, start_baggage, live=True)  # type: ignore[arg-type]

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
