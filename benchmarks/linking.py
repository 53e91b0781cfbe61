"""Scenario 5: what linking costs on deep traces and on many concurrent open traces."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from ._common import Row, now
from .overhead import providers


def make() -> dict[str, tuple[TracerProvider, Callable[[], object]]]:
    configs = providers(200_000, max_batch_size=4096, max_waiting=200_000, max_traces=200_000)
    names = {"no processor": "none", "SDK BatchSpanProcessor+noop": "bsp"}
    return {names.get(name, "ours"): config for name, config in configs.items()}


def deep_trace(tracer: trace.Tracer, depth: int) -> None:
    """A chat root with the conversation id, ``depth`` nested spans, an event at the bottom."""

    def nest(level: int) -> None:
        if level == depth:
            with tracer.start_as_current_span("billing") as span:
                span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
            return
        with tracer.start_as_current_span(f"step{level}"):
            nest(level + 1)

    with tracer.start_as_current_span("chat") as root:
        root.set_attribute("greenflash.conversation.external_id", "chat-1")
        nest(1)


def concurrent_traces(tracer: trace.Tracer, count: int) -> None:
    """``count`` traces open at once, each with an event whose conversation id arrives last."""
    roots = [tracer.start_span("chat") for _ in range(count)]
    for root in roots:
        with trace.use_span(root), tracer.start_as_current_span("billing") as span:
            span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    for root in roots:
        root.set_attribute("greenflash.conversation.external_id", "late")
        root.end()


def run(quick: bool = False) -> list[Row]:
    configs = make()
    repeats = 5 if quick else 9
    deep: dict[str, list[float]] = {name: [] for name in configs}
    wide: dict[str, list[float]] = {name: [] for name in configs}
    traces = 200 if quick else 500
    for _ in range(repeats):
        for name, (provider, settle) in configs.items():
            tracer = provider.get_tracer("bench")
            start = now()
            for _ in range(traces):
                deep_trace(tracer, 20)
            deep[name].append((now() - start) / traces * 1e6)
            start = now()
            concurrent_traces(tracer, 1000)
            wide[name].append((now() - start) / 1000 * 1e6)
            settle()
    median = {name: statistics.median(values) for name, values in deep.items()}
    median_wide = {name: statistics.median(values) for name, values in wide.items()}
    rows = [
        Row(
            "5 linking: depth-20 trace (22 spans)",
            "µs/trace",
            median["ours"],
            "no processor",
            median["none"],
            "(info)",
        ),
        Row(
            "5 linking: depth-20 trace (22 spans)",
            "µs/trace",
            median["ours"],
            "BatchSpanProcessor+noop",
            median["bsp"],
            "(info)",
        ),
        Row(
            "5 linking: 1000 open traces, late id",
            "µs/trace",
            median_wide["ours"],
            "no processor",
            median_wide["none"],
            "(info)",
        ),
        Row(
            "5 linking: 1000 open traces, late id",
            "µs/trace",
            median_wide["ours"],
            "BatchSpanProcessor+noop",
            median_wide["bsp"],
            "(info)",
        ),
    ]
    for provider, _ in configs.values():
        provider.shutdown()
    return rows
