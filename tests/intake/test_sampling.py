"""Business events survive trace sampling at ratio 0."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased

from otel_greenflash import GreenflashSampler, GreenflashSpanProcessor, track
from otel_greenflash.testing import EventsApiServer
from tests.support.common import MakeProcessor

EVENT = {"greenflash.event.type": "upgrade_purchased", "greenflash.event.value": "149.00"}


def provider_with(
    sampler: object, processor: GreenflashSpanProcessor
) -> tuple[TracerProvider, InMemorySpanExporter]:
    other = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(other))
    provider.add_span_processor(processor)
    return provider, other


def test_without_help_ratio_zero_loses_the_event(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider, _ = provider_with(TraceIdRatioBased(0.0), processor)
    with provider.get_tracer("app").start_as_current_span("billing", attributes=EVENT):
        pass
    assert processor.force_flush(5000)
    assert server.events == []  # the problem GreenflashSampler solves


def test_event_attributes_at_start_are_kept_and_others_still_sampled_out(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider, other = provider_with(GreenflashSampler(TraceIdRatioBased(0.0)), processor)
    tracer = provider.get_tracer("app")
    with (
        tracer.start_as_current_span("chat"),
        tracer.start_as_current_span("billing", attributes=EVENT),
    ):
        pass
    assert processor.force_flush(5000)
    assert len(server.events) == 1
    assert other.get_finished_spans() == ()  # not sampled: other exporters see nothing


def test_record_unsampled_keeps_attributes_set_after_start_and_links_them(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    sampler = GreenflashSampler(ParentBased(TraceIdRatioBased(0.0)), record_unsampled=True)
    provider, other = provider_with(sampler, processor)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "chat-9")
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes(EVENT)
            track("task_success", True)
    assert processor.force_flush(5000)
    assert sorted(event["eventType"] for event in server.events) == [
        "task_success",
        "upgrade_purchased",
    ]
    assert {event["externalConversationId"] for event in server.events} == {"chat-9"}
    assert other.get_finished_spans() == ()


def test_sampled_spans_keep_the_inner_decision() -> None:
    sampler = GreenflashSampler(TraceIdRatioBased(1.0))
    result = sampler.should_sample(None, 1, "span")
    assert result.decision is Decision.RECORD_AND_SAMPLE
    assert "TraceIdRatioBased" in sampler.get_description()
