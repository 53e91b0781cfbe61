"""Independent review of the one-pipeline restructure (#13): log records as business events.

Everything runs the way applications deploy it: the real OpenTelemetry SDK (``TracerProvider``,
``LoggerProvider``, ``BatchLogRecordProcessor``, ``LoggingHandler``), real HTTP to a loopback
Events API (``otel_greenflash.testing.EventsApiServer``), real threads, real ``os.fork`` and
real SIGTERM in subprocesses.

Part 1 holds the defects found (each test fails on the reviewed code); part 2 the behaviour
that was checked and holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as context_api
from opentelemetry._logs import Logger
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

import otel_greenflash as gf
from otel_greenflash import (
    BusinessEvent,
    GreenflashLogRecordExporter,
    GreenflashLogRecordProcessor,
    GreenflashSpanExporter,
    GreenflashSpanProcessor,
)
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.processes import clean_env, run, run_script

PRODUCT_ID = "123e4567-e89b-12d3-a456-426614174000"
APPS = Path(__file__).resolve().parent / "log_apps_lifecycle"
EVENT: dict[str, Any] = {
    "greenflash.event.type": "upgrade_purchased",
    "greenflash.event.value": "149.00",
    "greenflash.event.value_type": "currency",
}
CONVERSATION = "greenflash.conversation.external_id"


def settings(server: EventsApiServer, **overrides: Any) -> dict[str, Any]:
    chosen: dict[str, Any] = {
        "api_key": server.api_key,
        "base_url": server.base_url,
        "product_id": PRODUCT_ID,
        "schedule_delay_seconds": 0.05,
    }
    chosen.update(overrides)
    return chosen


@dataclass
class App:
    """An application with both SDK providers and Greenflash on each (one pipeline)."""

    tracer: trace.Tracer
    logger: Logger
    spans: GreenflashSpanProcessor
    logs: GreenflashLogRecordProcessor
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider

    def emit(self, **attributes: Any) -> None:
        self.logger.emit(event_name="greenflash.event", attributes={**EVENT, **attributes})


@contextmanager
def application(
    server: EventsApiServer, sampler: Sampler | None = None, **overrides: Any
) -> Iterator[App]:
    chosen = settings(server, **overrides)
    tracer_provider = TracerProvider(sampler=sampler or ALWAYS_ON, shutdown_on_exit=False)
    spans = GreenflashSpanProcessor(**chosen)
    tracer_provider.add_span_processor(spans)
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logs = GreenflashLogRecordProcessor(**chosen)
    logger_provider.add_log_record_processor(logs)
    assert spans._shared is logs._shared  # same settings: one pipeline
    try:
        yield App(
            tracer_provider.get_tracer("app"),
            logger_provider.get_logger("app"),
            spans,
            logs,
            tracer_provider,
            logger_provider,
        )
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()


@dataclass
class ExporterApp:
    """The zero-code pair ``OTEL_TRACES_EXPORTER=greenflash`` + ``OTEL_LOGS_EXPORTER=greenflash``:
    each exporter behind the SDK's batch processor (an hour's delay: batches leave only when
    the test flushes them), both exporters on one pipeline."""

    tracer: trace.Tracer
    logger: Logger
    span_batches: BatchSpanProcessor
    log_batches: BatchLogRecordProcessor
    exporter: GreenflashLogRecordExporter

    def emit(self, **attributes: Any) -> None:
        self.logger.emit(event_name="greenflash.event", attributes={**EVENT, **attributes})


@contextmanager
def exporters(
    server: EventsApiServer, sampler: Sampler | None = None, **overrides: Any
) -> Iterator[ExporterApp]:
    chosen = settings(server, **overrides)
    tracer_provider = TracerProvider(sampler=sampler or ALWAYS_ON, shutdown_on_exit=False)
    span_batches = BatchSpanProcessor(
        GreenflashSpanExporter(**chosen), schedule_delay_millis=3_600_000
    )
    tracer_provider.add_span_processor(span_batches)
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    exporter = GreenflashLogRecordExporter(**chosen)
    log_batches = BatchLogRecordProcessor(exporter, schedule_delay_millis=3_600_000)
    logger_provider.add_log_record_processor(log_batches)
    try:
        yield ExporterApp(
            tracer_provider.get_tracer("app"),
            logger_provider.get_logger("app"),
            span_batches,
            log_batches,
            exporter,
        )
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()


class DropNamed(Sampler):
    """Samples every root span except those named ``name`` (health checks, background jobs):
    a typical application sampler."""

    def __init__(self, name: str) -> None:
        self._name = name

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if name == self._name:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return f"DropNamed({self._name})"


def wait_until(predicate: Callable[[], bool], timeout_seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until true; False after ``timeout_seconds`` (a bound, not a check)."""
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def by_type(events: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(event["eventType"]): event for event in events}


# =============================================================================================
# Part 1 — defects (each test fails on the reviewed code)
# =============================================================================================

# -- D1. A record whose span no processor will ever see waits linger_seconds (5 min) ---------


def test_a_record_in_a_sampled_out_trace_is_not_held_for_a_root_nobody_will_see(
    server: EventsApiServer,
) -> None:
    """Ratio sampling is the common production setup. A record emitted in a sampled-out
    trace sits in a NonRecordingSpan: no span processor ever sees that trace's root end, so
    waiting for it can only end by linger (5 minutes) or shutdown."""
    with application(server, sampler=ParentBased(TraceIdRatioBased(0.0))) as app:
        with app.tracer.start_as_current_span("request") as span:
            assert not span.get_span_context().trace_flags.sampled  # this trace was not picked
            assert isinstance(span, trace.NonRecordingSpan)
            app.emit()
        assert app.spans.deliver_queued(10_000)
        held = app.spans.stats()["waiting"]
        delivered = len(server.events)
    assert (held, delivered) == (0, 1)


def test_an_exported_record_of_a_sampled_out_trace_is_not_held(server: EventsApiServer) -> None:
    """The same through the zero-code exporters: the sampled-out root never reaches the span
    exporter, so the exported record waits for it."""
    with exporters(server, sampler=ParentBased(TraceIdRatioBased(0.0))) as app:
        with app.tracer.start_as_current_span("request"):
            app.emit()
        assert app.span_batches.force_flush()
        assert app.log_batches.force_flush()
        held = app.exporter.stats()["waiting"]
        delivered = len(server.events)
    assert (held, delivered) == (0, 1)


def test_a_record_from_a_task_outliving_its_span_is_not_held(server: EventsApiServer) -> None:
    """``asyncio.create_task`` inside a child span: the task copies the context and emits
    after that span ended (fire-and-forget analytics). ``log_emitted`` expects the root only
    when the record's span is still open, so the root's end, moments later, is never noted
    and the record waits linger_seconds (5 min) for it. (A 5 s schedule and send delay keep
    the record queued until the request is over, as a busy worker may in production.)"""
    with application(server, schedule_delay_seconds=5.0, send_delay_seconds=5.0) as app:

        async def analytics() -> None:
            await asyncio.sleep(0)
            app.emit()

        async def request() -> None:
            with app.tracer.start_as_current_span("request"):
                with app.tracer.start_as_current_span("tool"):
                    task = asyncio.create_task(analytics())
                await task  # after "tool" ended, before "request" ends

        asyncio.run(request())
        assert app.spans.deliver_queued(10_000)
        held = app.spans.stats()["waiting"]
        delivered = len(server.events)
    assert (held, delivered) == (0, 1)


def test_a_record_under_an_extracted_remote_context_is_not_held(
    server: EventsApiServer,
) -> None:
    """A queue consumer attaches the producer's context for log correlation and starts no
    span of its own: the trace's local root will never end here."""
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with application(server) as app:
        token = context_api.attach(propagate.extract(carrier))
        try:
            app.emit()
        finally:
            context_api.detach(token)
        assert app.spans.deliver_queued(10_000)
        held = app.spans.stats()["waiting"]
        delivered = len(server.events)
    assert (held, delivered) == (0, 1)


def test_sampled_out_records_do_not_push_a_waiting_span_event_out_unlinked(
    server: EventsApiServer,
) -> None:
    """Consequence of D1: the records hogging ``max_waiting`` push out a span event that is
    legitimately waiting for its conversation id, which is then sent without it."""
    with application(server, sampler=ParentBased(DropNamed("background")), max_waiting=2) as app:
        root = app.tracer.start_span("chat")
        with app.tracer.start_as_current_span(
            "billing", context=trace.set_span_in_context(root), attributes=EVENT
        ):
            pass  # an event span; its conversation id comes later, on the root
        assert app.spans.deliver_queued(10_000)
        assert app.spans.stats()["waiting"] == 1
        for index in range(3):  # sampled-out background work emitting business events
            with app.tracer.start_as_current_span("background", context=Context()):
                app.logger.emit(
                    event_name="greenflash.event",
                    attributes={
                        "greenflash.event.type": f"job_done_{index}",
                        "greenflash.event.value": 1,
                    },
                )
        assert app.spans.deliver_queued(10_000)
        root.set_attribute(CONVERSATION, "chat-1")
        root.end()
        assert app.spans.force_flush(10_000)
        events = by_type(server.events)
    assert events["upgrade_purchased"].get("externalConversationId") == "chat-1"


# -- D2. The documented log-processor-only setup silently gets none of the trace linking -------


def test_a_log_processor_alone_says_it_cannot_link_through_spans_and_with_a_span_processor_does(
    server: EventsApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A log record processor alone cannot see the span's ancestors or the rest of the trace
    (nothing tracks spans): it says so once, and the documented setup (a span processor with the
    same settings beside it) links the record to the conversation on the request's root."""
    results: list[str | None] = []
    for with_span_processor in (False, True):
        logger_provider = LoggerProvider(shutdown_on_exit=False)
        logs = GreenflashLogRecordProcessor(**settings(server))
        logger_provider.add_log_record_processor(logs)
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        spans = GreenflashSpanProcessor(**settings(server)) if with_span_processor else None
        if spans is not None:
            tracer_provider.add_span_processor(spans)
        tracer = tracer_provider.get_tracer("app")
        logger = logger_provider.get_logger("app")
        server.reset()
        try:
            with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
                with (
                    tracer.start_as_current_span("chat", attributes={CONVERSATION: "chat-1"}),
                    tracer.start_as_current_span("tool"),
                ):
                    logger.emit(event_name="greenflash.event", attributes=EVENT)
                assert logs.force_flush(10_000)
            [event] = server.events
            results.append(event.get("externalConversationId"))
        finally:
            logger_provider.shutdown()
            if spans is not None:
                spans.shutdown()
        warned = [r for r in caplog.records if "no span processor" in r.getMessage()]
        assert len(warned) == (0 if with_span_processor else 1)
        caplog.clear()
    assert results == [None, "chat-1"]


# -- D3. Unrelated start baggage makes records take another conversation's id ----------------


@pytest.mark.parametrize("upstream_baggage", [False, True], ids=["no-baggage", "tenant-baggage"])
def test_each_conversation_block_links_its_own_records_whatever_the_start_baggage(
    server: EventsApiServer, upstream_baggage: bool
) -> None:
    """A batch job walks several conversations inside one span. A record emitted inside
    ``gf.conversation(external_id=...)`` carries that block's baggage in its own context and
    is linked by it — unless the enclosing span was started with *any* baggage (here an
    unrelated ``tenant`` entry from upstream): then the start baggage replaces the record's
    own (``logs.event_log_of``: ``live.baggage.get(span_id) or baggage``), and the trace level
    hands every record the first block's conversation. chat-2's event is sent as chat-1's."""
    with application(server) as app:
        token = (
            context_api.attach(baggage.set_baggage("tenant", "acme")) if upstream_baggage else None
        )
        try:
            with app.tracer.start_as_current_span("nightly-summaries"):
                for chat in ("chat-1", "chat-2"):
                    with gf.conversation(external_id=chat):
                        app.emit(**{"greenflash.event.properties.chat": chat})
        finally:
            if token is not None:
                context_api.detach(token)
        assert app.spans.force_flush(10_000)
        pairs = sorted(
            (str(event["properties"]["chat"]), event.get("externalConversationId"))
            for event in server.events
        )
    assert pairs == [("chat-1", "chat-1"), ("chat-2", "chat-2")]


# -- D4. configure() called again once logging is set up never installs the log processor ----


def test_configure_called_again_installs_on_a_logger_provider_set_since(tmp_path: Path) -> None:
    """Apps call ``configure()`` at import, before their logging setup creates the
    LoggerProvider; calling it again afterwards returns early (idempotent) and business
    events emitted as log records are silently ignored."""
    result = run_script(
        tmp_path,
        f"""
        import json
        import otel_greenflash as gf
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from otel_greenflash.testing import EventsApiServer

        with EventsApiServer() as server:
            settings = dict(api_key=server.api_key, base_url=server.base_url,
                            product_id={PRODUCT_ID!r}, schedule_delay_seconds=0.05)
            gf.configure(**settings)
            provider = LoggerProvider()
            set_logger_provider(provider)
            gf.configure(**settings)
            provider.get_logger("billing").emit(
                event_name="greenflash.event", attributes={EVENT!r})
            provider.force_flush()
            installed = len(provider._multi_log_record_processor._log_record_processors)
            print(json.dumps([installed, len(server.events)]))
            provider.shutdown()
        """,
        clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [1, 1]


# -- D5. Exporter path: a root that ended before the batch is forgotten past max_traces ------


def test_an_exported_record_whose_root_ended_before_its_batch_is_not_held(
    server: EventsApiServer,
) -> None:
    """Zero-code exporters: records reach the pipeline a batch delay after they were emitted,
    roots in span batches. Roots seen lately are kept in ``Linker.recent_roots``, bounded by
    ``max_traces``; once more roots than that ended in between (4096 at the default: a busy
    service within one batch delay) the record waits for a root that is long gone —
    linger_seconds (5 min), then sent as ``linger_expired``. docs/linking.md says an event whose
    trace was pushed out of the store goes out, not that it waits."""
    with exporters(server, max_traces=8) as app:
        with app.tracer.start_as_current_span("chat"), app.tracer.start_as_current_span("tool"):
            app.emit()
        for index in range(20):  # other requests end in the same span batch
            with app.tracer.start_as_current_span(f"request-{index}"):
                pass
        assert app.span_batches.force_flush()
        assert app.log_batches.force_flush()
        held = app.exporter.stats()["waiting"]
        delivered = len(server.events)
    assert (held, delivered) == (0, 1)


# -- D6. The default insertId leaves the body out: distinct records can share one -------------


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_two_records_differing_only_in_their_body_are_two_events(
    server: EventsApiServer, tmp_path: Path, spool: bool
) -> None:
    """An importer replays the billing system's audit log inside one span, giving each record
    the row's time as both timestamps; two upgrades in the same second differ only in the
    body. The digest covers timestamps, event name and attributes, not the body (nor the
    severity), so both records get one insertId and the API keeps one of them. With a
    spool it is worse: the second never reaches any counter (queued 2, sent 1, nothing
    else), against "every event ends in exactly one counter"."""
    moment = 1_767_225_600_000_000_000
    overrides: dict[str, Any] = {"spool_dir": str(tmp_path / "spool")} if spool else {}
    with application(server, **overrides) as app:
        with app.tracer.start_as_current_span("import", attributes={CONVERSATION: "chat-1"}):
            for row in ("invoice 1001 paid by acct 7", "invoice 1002 paid by acct 9"):
                app.logger.emit(
                    event_name="greenflash.event",
                    timestamp=moment,
                    observed_timestamp=moment,
                    body=row,
                    attributes=EVENT,
                )
        assert app.spans.force_flush(10_000)
        stats = app.spans.stats()
        events = len(server.events)
    settled = stats["sent"] + stats["failed"] + stats["invalid"] + sum(stats["dropped"].values())
    assert (stats["queued"], settled, events) == (2, 2, 2)


# =============================================================================================
# Part 2 — verified behaviour
# =============================================================================================


@pytest.mark.parametrize("first", ["log-batch-first", "span-batch-first"])
def test_exporters_link_a_late_conversation_in_either_batch_order(
    server: EventsApiServer, first: str
) -> None:
    """The zero-code exporters: the batch processors clear contexts; the record links through
    trace ids whichever batch comes first, the conversation being set on the root after the
    record."""
    with exporters(server) as app:
        with app.tracer.start_as_current_span("chat") as root:
            with app.tracer.start_as_current_span("tool"):
                app.emit()
            root.set_attribute(CONVERSATION, "chat-1")
        if first == "log-batch-first":
            assert app.log_batches.force_flush()
            assert app.exporter.stats()["waiting"] == 1  # the root has not been seen yet
            assert app.span_batches.force_flush()
        else:
            assert app.span_batches.force_flush()
            assert app.log_batches.force_flush()
        assert app.exporter.force_flush(10_000)
        stats = app.exporter.stats()
    assert [event.get("externalConversationId") for event in server.events] == ["chat-1"]
    assert (stats["sent"], stats["unlinked"], server.duplicates) == (1, {}, 0)


def test_records_of_many_threads_wait_for_their_roots_and_link_exactly_once(
    server: EventsApiServer,
) -> None:
    """8 threads x 40 requests; each record is emitted in a child span before its root
    learns the conversation (late ids); the linker is fed from every thread at once."""
    threads_count, per_thread = 8, 40
    with application(server) as app:
        start = threading.Barrier(threads_count)

        def requests(worker: int) -> None:
            start.wait()
            for index in range(per_thread):
                chat = f"chat-{worker}-{index}"
                with app.tracer.start_as_current_span("chat") as root:
                    with app.tracer.start_as_current_span("tool"):
                        app.emit(**{"greenflash.event.properties.chat": chat})
                    root.set_attribute(CONVERSATION, chat)

        workers = [threading.Thread(target=requests, args=(n,)) for n in range(threads_count)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert app.spans.force_flush(30_000)
        stats = app.spans.stats()
        events = server.events
    total = threads_count * per_thread
    assert len(events) == total
    assert server.duplicates == 0
    assert all(e["properties"]["chat"] == e.get("externalConversationId") for e in events)
    assert (stats["queued"], stats["sent"], stats["unlinked"], stats["dropped"]) == (
        total,
        total,
        {},
        {},
    )


def test_a_record_whose_root_never_ends_goes_out_after_linger(server: EventsApiServer) -> None:
    with application(server, linger_seconds=0.2) as app:
        leaked = app.tracer.start_span("websocket")  # never ended
        with app.tracer.start_as_current_span("tool", context=trace.set_span_in_context(leaked)):
            app.emit()
        assert server.wait_for_events(1, timeout_seconds=15)
        stats = app.spans.stats()
    assert stats["unlinked"] == {"linger_expired": 1}
    assert stats["waiting"] == 0


def test_records_in_record_only_spans_link_like_sampled_ones(server: EventsApiServer) -> None:
    """GreenflashSampler(record_unsampled=True): the trace is sampled out for exporters but its
    spans are recorded, so the span processor sees the root end and the record links to the
    conversation set on it afterwards (no linger)."""
    sampler = gf.GreenflashSampler(ParentBased(TraceIdRatioBased(0.0)), record_unsampled=True)
    with application(server, sampler=sampler) as app:
        with app.tracer.start_as_current_span("chat") as root:
            assert root.is_recording()
            assert not root.get_span_context().trace_flags.sampled
            with app.tracer.start_as_current_span("tool"):
                app.emit()
            root.set_attribute(CONVERSATION, "chat-1")
        assert app.spans.force_flush(10_000)
        stats = app.spans.stats()
    assert [event.get("externalConversationId") for event in server.events] == ["chat-1"]
    assert (stats["sent"], stats["unlinked"]) == (1, {})


@pytest.mark.parametrize("order", ["tracer-provider-first", "logger-provider-first"])
def test_either_provider_shut_down_first_leaves_the_other_delivering(
    server: EventsApiServer, order: str
) -> None:
    """Atexit shuts providers down in reverse creation order; the shared pipeline must
    outlive the first one and deliver what the second still gets."""
    with application(server) as app:
        first = app.tracer_provider if order == "tracer-provider-first" else app.logger_provider
        app.emit(**{"greenflash.event.properties.when": "before"})
        first.shutdown()
        if order == "tracer-provider-first":
            app.emit(**{"greenflash.event.properties.when": "after"})
        else:
            with app.tracer.start_as_current_span("after", attributes=EVENT):
                pass
        remaining = app.logs if order == "tracer-provider-first" else app.spans
        assert remaining.force_flush(10_000)
        stats = remaining.stats()
    assert (stats["sent"], stats["dropped"], server.duplicates) == (2, {}, 0)


def test_a_full_queue_of_log_records_is_counted_once_and_passed_to_on_drop(
    server: EventsApiServer,
) -> None:
    """max_queue_size=1: one record in flight (the API holds its answer), one holding the
    worker (the delivery loop is full), one queued; the next is refused on the caller's
    thread, counted, and mapped for on_drop on the worker."""
    drops: list[tuple[list[BusinessEvent], str]] = []

    def on_drop(events: Sequence[BusinessEvent], reason: str) -> None:
        drops.append((list(events), reason))

    server.inject(Fault(delay_seconds=2.0))
    with application(
        server, max_queue_size=1, max_batch_size=1, max_concurrency=1, on_drop=on_drop
    ) as app:
        for index in range(2):
            app.emit(**{"greenflash.event.properties.index": index})
            taken = index + 1
            assert wait_until(lambda: app.spans.stats()["queued"] == taken)  # noqa: B023
        app.emit(**{"greenflash.event.properties.index": 2})  # queued behind the worker
        app.emit(**{"greenflash.event.properties.index": 3})  # refused
        assert app.spans.stats()["dropped"] == {"queue_full": 1}
        assert app.spans.force_flush(20_000)
        stats = app.spans.stats()
    assert (stats["queued"], stats["sent"], stats["dropped"]) == (3, 3, {"queue_full": 1})
    assert [(len(events), reason) for events, reason in drops] == [(1, "queue_full")]
    assert drops[0][0][0].body["properties"] == {"index": 3}
    assert sorted(e["properties"]["index"] for e in server.events) == [0, 1, 2]


def test_hostile_log_attributes_never_raise_into_emit_and_each_event_ends_once(
    server: EventsApiServer,
) -> None:
    """Values the OTel logs data model allows (bytes, maps, sequences of them, None) and
    values Python code passes through ``logging``'s ``extra``: emit() never raises, and every
    business record ends in exactly one of sent/invalid."""

    class Opaque:
        __slots__ = ()

    hostile: list[dict[str, Any]] = [
        {"greenflash.event.properties.blob": b"\x00\xff"},
        {"greenflash.event.properties.nested": {"a": {"b": [1, 2, {"c": None}]}}},
        {"greenflash.event.properties.mixed": (b"x", "y", 1)},
        {"greenflash.event.properties.none": None},
        {"greenflash.event.properties.big": 2**80},
        {"greenflash.event.properties": {"plan": "pro"}},  # a map, not a JSON string
        {"greenflash.event.value": b"149.00"},
        {"greenflash.event.type": ""},
        {"greenflash.event.insert_id": "\udcff"},
        {"greenflash.event.properties.surrogate": "\ud800x"},
    ]
    with application(server) as app:
        for extra in hostile:
            app.emit(**extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(logger_provider=app.logger_provider)
        billing = logging.getLogger("review.billing")
        billing.propagate = False
        billing.addHandler(handler)
        try:
            billing.warning(
                "purchase",
                extra={**EVENT, "greenflash.event.properties.opaque": Opaque()},
            )
        finally:
            billing.removeHandler(handler)
        assert app.spans.force_flush(10_000)
        stats = app.spans.stats()
    total = len(hostile) + 1
    assert stats["sent"] + stats["invalid"] == total == stats["queued"]
    assert stats["sent"] == len(server.events)
    assert server.duplicates == 0


def test_one_record_seen_by_the_processor_and_the_exporter_is_one_event(
    server: EventsApiServer,
) -> None:
    """The deterministic insertId: a record taken by a log processor and by a log exporter
    (configure() plus OTEL_LOGS_EXPORTER=greenflash) is one event at the API, bytes and maps
    in its attributes included."""
    chosen = settings(server)
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logs = GreenflashLogRecordProcessor(**chosen)
    logger_provider.add_log_record_processor(logs)
    batches = BatchLogRecordProcessor(
        GreenflashLogRecordExporter(**chosen), schedule_delay_millis=3_600_000
    )
    logger_provider.add_log_record_processor(batches)
    try:
        logger_provider.get_logger("app").emit(
            event_name="greenflash.event",
            attributes={
                **EVENT,
                "greenflash.event.properties.tags": ("a", "b"),
                "raw": b"\x01\x02",
                "map": {"k": [1, 2]},
            },
        )
        assert batches.force_flush()
        assert logs.force_flush(10_000)
        ids = [request.insert_id for request in server.requests]
    finally:
        logger_provider.shutdown()
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert len(server.events) == 1
    assert server.duplicates == 1


@pytest.mark.parametrize("mode", ["processor", "exporter"])
def test_sigterm_with_only_a_log_intake_delivers_every_held_record(mode: str) -> None:
    """No span intake at all: the log processor (or the log exporter behind the SDK's batch
    processor, every record still in its queue) still installs the SIGTERM handling."""
    count = 20
    with EventsApiServer() as server:
        env = clean_env(
            GREENFLASH_API_KEY=server.api_key,
            GREENFLASH_BASE_URL=server.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_BSP_SCHEDULE_DELAY="5000",  # nothing leaves by chance
            GREENFLASH_BSP_SEND_DELAY="5000",
        )
        process = subprocess.Popen(
            [sys.executable, str(APPS / "sigterm_logs.py"), mode, str(count)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        values = sorted(int(str(event["value"])) for event in server.events)
        duplicates = server.duplicates
    assert process.returncode == -signal.SIGTERM, err
    assert values == list(range(count))
    assert duplicates == 0


def test_forked_children_deliver_their_own_log_records_once() -> None:
    """Span and log processors share one pipeline; at each fork the parent holds records
    (5 s schedule delay). Each child delivers its own before ``os._exit``; the parent its own;
    nothing twice, every record linked to its late conversation id."""
    result = run([sys.executable, str(APPS / "fork_logs.py")], clean_env(), timeout=90)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["codes"] == [0, 0, 0]
    assert report["flushed"]
    assert report["values"] == dict(Counter(report["expected"]))
    assert report["duplicates"] == 0
    assert report["linked"]
