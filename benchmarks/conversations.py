"""Scenario 8: conversation capture (``capture_conversations``), in one run.

- **App thread.** An LLM span with OTel GenAI attributes in their JSON form (a few KB of
  ``gen_ai.input.messages`` history, the output, model, usage) timed on a bare
  ``TracerProvider``, on a processor at default settings (capture off) and on one with capture
  on, in interleaved rounds (the order rotated each round). References timed the same way: a
  plain span (with capture off, an LLM span takes the plain span's path: none of its keys is
  marked) and a business event span (taken and queued the way a captured call is). Each span
  is the child of its own open root naming the conversation and the user (started before the
  clocks, ended after them). Throughout, a second application thread emits business events to
  both processors (300 a second each), so both pipelines are delivering to the fast receiver
  (20 ms) while the main thread is timed. Clocks: the main thread's own CPU
  (``time.thread_time``, and the part of it in garbage collections) and the wall clock around
  the loop. An "extra" is the median over rounds of the difference to the bare provider's loop
  of the same round (paired: the machine's drift cancels).
- **Worker.** Chat turns (a root naming the user, an LLM span under it naming its conversation
  in ``gen_ai.conversation.id``: six messages each) on a processor with capture on, delivered
  to the receiver, which answers ``/messages`` and counts the messages in each body. The
  worker thread's CPU clock (``pthread_getcpuclockid``, read from the main thread) over the
  run, divided by the messages the receiver accepted; the baseline is the same run with a
  business event span instead of the LLM span (CPU per delivered event). The process's CPU
  minus the application thread's (worker, delivery loop and the rest) is shown too.
- **Memory.** Conversations whose LLM call ended while their root is open and names neither
  conversation nor user yet: each call waits (slimmed to what linking and mapping read). The
  bytes held are measured with ``tracemalloc`` (capture on minus the same spans with capture
  off, after a garbage collection), for prompts of 2 KB, 32 KB and 256 KB, beside the
  ``waiting_bytes`` estimate the bound uses. Then more calls than the bounds allow
  (``MAX_WAITING_BYTES`` with 256 KB prompts, ``max_waiting`` set to 2048 with 2 KB ones): the
  oldest are released unlinked, skipped and counted (``stats()["messages"]["dropped"]``), and
  what is held stays under the bound. Calls are emitted 32 at a time, each batch taken by the
  worker before the next: the span queue before the worker is bounded in spans
  (``max_queue_size``), not bytes, so it is kept out of the figure.

Each part runs in a fresh interpreter: ``python -m benchmarks.conversations app|worker|memory
BASE_URL API_KEY ...`` prints one JSON line.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._link.rules import MAX_WAITING_BYTES

from ._common import (
    PRODUCT_ID,
    Row,
    cpu_seconds,
    default_processor,
    emit_json,
    fast_receiver,
    now,
    receiver_stats,
    run_child,
)
from .overhead import EVENT, PLAIN, GcClock

LATENCY_MS = 20
FEEDER_EVENTS_PER_SECOND = 300
"""Business events a second the feeder thread gives each processor while spans are timed."""
USER_KEY = "greenflash.user.external_id"
CONVERSATION_KEY = "greenflash.conversation.external_id"
WORDS = [
    "invoice",
    "account",
    "billing",
    "plan",
    "seats",
    "upgrade",
    "refund",
    "period",
    "customer",
    "support",
    "team",
    "the",
    "a",
    "of",
    "to",
    "and",
    "for",
    "with",
    "your",
    "our",
    "please",
    "thanks",
    "order",
    "charge",
    "card",
    "renewal",
    "annual",
    "monthly",
    "export",
    "report",
    "dashboard",
    "error",
    "limit",
    "quota",
    "region",
    "storage",
    "backup",
    "restore",
    "access",
    "token",
    "key",
]


def prose(length: int, seed: int) -> str:
    """``length`` characters of words, the same for the same seed."""
    draw = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < length:
        word = draw.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def _text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def call_attributes(conversation: str | None, seed: int = 0) -> dict[str, AttributeValue]:
    """One chat completion as an OTel GenAI instrumentation records it in the JSON form: a
    five-message history with a tool call and its result (about 3.5 KB), the answer, model and
    usage; ``gen_ai.conversation.id`` names the conversation when one is given."""
    history = [
        _text_message("system", "You are the billing assistant of Acme Cloud. Be brief."),
        _text_message("user", prose(420, seed)),
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "get_invoice",
                    "arguments": {"account": "acct-1042", "period": "2026-11"},
                }
            ],
        },
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "call_1",
                    "response": json.dumps(
                        {
                            "lines": [
                                {"item": prose(60, seed + i), "cents": 1900 + i} for i in range(12)
                            ]
                        }
                    ),
                }
            ],
        },
        _text_message("assistant", prose(900, seed + 100)),
        _text_message("user", prose(280, seed + 200)),
    ]
    output = [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": prose(640, seed + 300)}],
            "finish_reason": "stop",
        }
    ]
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": f"chatcmpl-{seed}",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 912,
        "gen_ai.usage.output_tokens": 161,
        "gen_ai.input.messages": json.dumps(history, separators=(",", ":")),
        "gen_ai.output.messages": json.dumps(output, separators=(",", ":")),
    }
    if conversation is not None:
        attributes["gen_ai.conversation.id"] = conversation
    return attributes


def prompt_attributes(index: int, prompt_bytes: int) -> dict[str, AttributeValue]:
    """An LLM call whose ``gen_ai.input.messages`` is ``prompt_bytes`` long (a new string each
    call, as each call's prompt is), with a short answer and no ids of its own."""
    frame = json.dumps([_text_message("user", "")], separators=(",", ":"))
    head = f"{index:08d} "
    text = head + "x" * max(0, prompt_bytes - len(frame) - len(head))
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": prompt_bytes // 4,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.input.messages": json.dumps([_text_message("user", text)], separators=(",", ":")),
        "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"text","content":"ok"}]}]',
    }


def capturing_processor(base_url: str, api_key: str, **settings: Any) -> GreenflashSpanProcessor:
    """Default settings (but ``settings``), with conversation capture switched on."""
    return GreenflashSpanProcessor(
        api_key=api_key,
        base_url=base_url,
        product_id=PRODUCT_ID,
        capture_conversations=True,
        **settings,
    )


def thread_cpu_seconds(thread: threading.Thread) -> float:
    """CPU time of another thread of this process so far (Linux, POSIX thread clocks)."""
    ident = thread.ident
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def message_counts(processor: GreenflashSpanProcessor) -> dict[str, Any]:
    counts = processor.stats().get("messages")
    return dict(counts) if counts else {"sent": 0, "failed": 0, "dropped": {}}


# -- the application thread --------------------------------------------------------------------


class Feeder:
    """A thread of the application emitting business event spans to each given provider at a
    steady rate, so every pipeline is delivering while the main thread is timed."""

    def __init__(self, providers: list[TracerProvider], per_second: int) -> None:
        self._tracers = [provider.get_tracer("feeder") for provider in providers]
        self._burst = max(1, per_second // 100)
        self._stop = threading.Event()
        self.emitted = 0
        """Event spans emitted on each provider so far."""
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            for tracer in self._tracers:
                for index in range(self.emitted, self.emitted + self._burst):
                    with tracer.start_as_current_span("task") as span:
                        span.set_attributes(
                            {
                                "greenflash.event.type": "task_success",
                                "greenflash.event.value": index,
                                CONVERSATION_KEY: f"chat-{index}",
                            }
                        )
            self.emitted += self._burst
            tick += 0.01
            self._stop.wait(max(0.0, tick - time.monotonic()))


def app_main(base_url: str, api_key: str, repeats: int, calls: int, plain: int) -> None:
    """Interleaved rounds over the three providers (order rotated each round), with both
    pipelines delivering the feeder's events throughout; prints medians of µs per span."""
    off_processor = default_processor(base_url, api_key)
    on_processor = capturing_processor(base_url, api_key)
    providers = {"bare": TracerProvider(), "off": TracerProvider(), "on": TracerProvider()}
    providers["off"].add_span_processor(off_processor)
    providers["on"].add_span_processor(on_processor)
    tracers = {name: provider.get_tracer("bench") for name, provider in providers.items()}
    conversations = itertools.count()
    gc_clock = GcClock()

    def timed(
        name: str, attribute_sets: list[dict[str, AttributeValue]]
    ) -> tuple[float, float, float]:
        """µs per span (wall, thread CPU, the part of it spent collecting garbage), each span
        under its own open root (a chat turn naming its conversation and user), the roots
        started before the clocks and ended after them."""
        tracer = tracers[name]
        roots = [
            tracer.start_span(
                "chat", attributes={CONVERSATION_KEY: f"c-{next(conversations)}", USER_KEY: "u-1"}
            )
            for _ in attribute_sets
        ]
        contexts = [trace.set_span_in_context(root) for root in roots]
        collected = gc_clock.seconds
        wall, cpu = now(), time.thread_time()
        for attributes, context in zip(attribute_sets, contexts, strict=True):
            with tracer.start_as_current_span(
                "chat gpt-4o-mini", context=context, kind=SpanKind.CLIENT
            ) as span:
                span.set_attributes(attributes)
        wall, cpu = now() - wall, time.thread_time() - cpu
        collecting = gc_clock.seconds - collected
        for root in roots:
            root.end()
        count = len(attribute_sets)
        return wall / count * 1e6, cpu / count * 1e6, collecting / count * 1e6

    def room_for_calls() -> None:
        """Outside the clocks: the capturing pipeline keeps up (its span queue never fills)."""
        worker = on_processor._shared.worker
        wait_for(lambda: len(worker) < 512, "the capturing worker to catch up")

    shapes = [call_attributes(None, index) for index in range(16)]
    for name in providers:  # warm-up: imports, connections, the first mapping
        timed(name, shapes)
    assert on_processor.force_flush(120_000)
    feeder = Feeder([providers["off"], providers["on"]], FEEDER_EVENTS_PER_SECOND)
    sent_before = on_processor.stats()["sent"], off_processor.stats()["sent"]
    messages_before = message_counts(on_processor)["sent"]
    feeder.start()
    started = now()
    results: dict[str, list[float]] = {}
    names = list(providers)
    llm_spans = 0
    event_spans = 0
    for round_number in range(repeats):
        turn = names[round_number % 3 :] + names[: round_number % 3]
        for name in turn:
            llm = [shapes[index % len(shapes)] for index in range(calls)]
            kinds = (("llm", llm), ("event", [EVENT] * calls), ("plain", [PLAIN] * plain))
            for kind, attribute_sets in kinds:
                room_for_calls()
                clocks = timed(name, attribute_sets)
                for clock, value in zip(("wall", "cpu", "gc"), clocks, strict=True):
                    results.setdefault(f"{name}_{kind}_{clock}", []).append(value)
            if name == "on":
                llm_spans += calls
                event_spans += calls  # and as many on the processor with capture off
    feeder.stop()
    seconds = now() - started
    assert on_processor.force_flush(120_000)
    assert off_processor.force_flush(120_000)
    gc_clock.close()
    captured = message_counts(on_processor)
    if captured["sent"] - messages_before != llm_spans or captured["dropped"] or captured["failed"]:
        raise RuntimeError(f"not every LLM call was delivered: {captured}, {llm_spans} spans")
    sent = (
        on_processor.stats()["sent"] - sent_before[0],
        off_processor.stats()["sent"] - sent_before[1],
    )
    expected = feeder.emitted + event_spans
    if sent != (expected, expected):
        raise RuntimeError(f"events were lost: {sent} of {expected} each")
    if "messages" in off_processor.stats():
        raise RuntimeError("capture off sent messages")
    for provider in providers.values():
        provider.shutdown()
    figures = {key: statistics.median(values) for key, values in results.items()}
    for config, kind in (("off", "llm"), ("off", "plain"), ("on", "llm"), ("on", "event")):
        paired = zip(results[f"{config}_{kind}_cpu"], results[f"bare_{kind}_cpu"], strict=True)
        figures[f"{config}_{kind}_extra"] = statistics.median(ours - bare for ours, bare in paired)
    figures["calls_delivered"] = float(llm_spans)
    figures["events_per_second"] = 2 * feeder.emitted / seconds
    figures["attribute_bytes"] = float(
        sum(len(value) for value in shapes[0].values() if isinstance(value, str))
    )
    emit_json(figures)


# -- the worker ----------------------------------------------------------------------------------


def worker_main(base_url: str, api_key: str, kind: str, count: int) -> None:
    """``count`` chat turns (root + LLM span, or root + business event span) on a capturing
    processor; prints the worker thread's and the other threads' CPU per delivered item."""
    processor = capturing_processor(base_url, api_key)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    pipeline = processor._shared
    shapes = [call_attributes(None, index) for index in range(16)]

    def turn(index: int) -> None:
        with tracer.start_as_current_span("chat") as root:
            root.set_attribute(USER_KEY, f"user-{index % 50}")
            if kind == "llm":
                with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
                    span.set_attributes(
                        {**shapes[index % len(shapes)], "gen_ai.conversation.id": f"c-{index}"}
                    )
            else:
                with tracer.start_as_current_span("task") as span:
                    span.set_attributes(
                        {
                            "greenflash.event.type": "task_success",
                            "greenflash.event.value": index,
                            CONVERSATION_KEY: f"c-{index}",
                        }
                    )

    for index in range(64):  # warm-up
        turn(-1 - index)
    assert processor.force_flush(120_000)
    worker_thread = pipeline.worker._thread
    high_water = processor.config.max_queue_size - 512
    received = receiver_stats(base_url)
    worker_cpu = thread_cpu_seconds(worker_thread)
    app_cpu, process_cpu, wall = time.thread_time(), cpu_seconds(), now()
    for index in range(count):
        if index % 128 == 0:
            while len(pipeline.worker) > high_water:  # a full queue would drop spans
                time.sleep(0.002)
        turn(index)
    assert processor.force_flush(300_000)
    wall = now() - wall
    worker_cpu = thread_cpu_seconds(worker_thread) - worker_cpu
    app_cpu = time.thread_time() - app_cpu
    process_cpu = cpu_seconds() - process_cpu
    after = receiver_stats(base_url)
    stats = processor.stats()
    provider.shutdown()
    if kind == "llm":
        delivered = after["messages"] - received["messages"]
        requests = after["messages_requests"] - received["messages_requests"]
    else:
        delivered = requests = after["accepted"] - received["accepted"]
    if requests != count:
        raise RuntimeError(f"{requests} of {count} {kind} requests reached the receiver: {stats}")
    emit_json(
        {
            "worker_us_per_item": worker_cpu / delivered * 1e6,
            "worker_us_per_request": worker_cpu / requests * 1e6,
            "others_us_per_item": (process_cpu - app_cpu) / delivered * 1e6,
            "items_per_request": delivered / requests,
            "seconds": wall,
        }
    )


# -- memory while calls wait ---------------------------------------------------------------------


class Conversations:
    """Chat turns whose LLM call ends while the root is open and names no ids yet."""

    def __init__(self, processor: GreenflashSpanProcessor) -> None:
        self.processor = processor
        self.provider = TracerProvider()
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("bench")
        self.roots: list[trace.Span] = []
        self.pipeline = processor._shared

    def open(self, count: int, prompt_bytes: int) -> None:
        """``count`` conversations, each an open root and an ended LLM call under it; waits
        for the worker to take each chunk, so the span queue never holds many full prompts."""
        for index in range(count):
            root = self.tracer.start_span("chat")
            with (
                trace.use_span(root),
                self.tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span,
            ):
                span.set_attributes(prompt_attributes(len(self.roots), prompt_bytes))
            self.roots.append(root)
            if index % 32 == 31:
                self.settle()
        self.settle()

    def settle(self) -> None:
        """Until the worker has taken and sorted every call queued so far."""
        worker = self.pipeline.worker
        deadline = time.monotonic() + 300
        while not worker.idle:
            worker.wake()
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not take the calls")
            time.sleep(0.002)

    def close(self) -> None:
        """The ids arrive on each root as it ends: the calls still waiting are delivered."""
        for index, root in enumerate(self.roots):
            root.set_attributes({CONVERSATION_KEY: f"late-{index}", USER_KEY: "user-1"})
            root.end()
        self.roots.clear()
        if not self.processor.force_flush(300_000):
            raise RuntimeError("the calls released at the roots' end were not delivered")

    def shutdown(self) -> None:
        self.provider.shutdown()


def held_bytes(
    make: Callable[[], GreenflashSpanProcessor], count: int, prompt_bytes: int
) -> dict[str, float]:
    """Bytes still allocated (``tracemalloc``) once ``count`` conversations' calls ended with
    their roots open, after a collection; with the waiting records' estimate and counts."""
    conversations = Conversations(make())
    conversations.open(4, prompt_bytes)  # warm-up: first-call allocations, caches
    conversations.close()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    sent_before = message_counts(conversations.processor)["sent"]
    conversations.open(count, prompt_bytes)
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    linker = conversations.pipeline.linker
    waiting, estimate = len(linker.waiting), linker.waiting.bytes
    dropped = sum(message_counts(conversations.processor)["dropped"].values())
    conversations.close()
    sent = message_counts(conversations.processor)["sent"] - sent_before
    conversations.shutdown()
    return {
        "held": float(held - before),
        "peak": float(peak - before),
        "estimate": float(estimate),
        "waiting": float(waiting),
        "dropped": float(dropped),
        "sent": float(sent),
        "max_waiting": float(conversations.processor.config.max_waiting),
    }


PROMPT_SIZES = (2 * 1024, 32 * 1024, 256 * 1024)
COUNT_BOUND = 2048
"""``max_waiting`` for the count bound's overrun (its default until scenario 9 raised it)."""


def memory_main(base_url: str, api_key: str, quick: bool) -> None:
    """Per prompt size: bytes held per waiting conversation, capture on minus off; then the
    byte bound (256 KB prompts) and the count bound (2 KB prompts) overrun."""
    tracemalloc.start()

    def on() -> GreenflashSpanProcessor:
        return capturing_processor(base_url, api_key)

    def off() -> GreenflashSpanProcessor:
        return default_processor(base_url, api_key)

    figures: dict[str, float] = {}
    captured: dict[str, float] = {}
    for size in PROMPT_SIZES:
        count = min(100 if quick else 400, MAX_WAITING_BYTES // (2 * size))
        captured, plain = held_bytes(on, count, size), held_bytes(off, count, size)
        if captured["waiting"] != count or captured["sent"] != count or captured["dropped"]:
            raise RuntimeError(f"{count} calls should have waited, then been sent: {captured}")
        figures[f"{size}_count"] = float(count)
        figures[f"{size}_per_call"] = (captured["held"] - plain["held"]) / count
        figures[f"{size}_estimate_per_call"] = captured["estimate"] / count
    # The count bound at its former default: the default (100,000) is past what the byte
    # bound lets wait of these calls, so the byte bound would bind first.
    max_waiting = COUNT_BOUND

    def on_counted() -> GreenflashSpanProcessor:
        return capturing_processor(base_url, api_key, max_waiting=COUNT_BOUND)

    big = PROMPT_SIZES[-1]
    overruns = {
        "bytes": (big, 3 * MAX_WAITING_BYTES // big, on),
        "count": (PROMPT_SIZES[0], max_waiting + (256 if quick else 1024), on_counted),
    }
    for name, (size, count, make) in overruns.items():
        result, plain = held_bytes(make, count, size), held_bytes(off, count, size)
        if result["waiting"] + result["dropped"] != count or result["sent"] != result["waiting"]:
            raise RuntimeError(f"calls were lost past the {name} bound: {result}")
        for key, value in result.items():
            figures[f"over_{name}_{key}"] = value
        figures[f"over_{name}_held"] = result["held"] - plain["held"]
        figures[f"over_{name}_peak"] = result["peak"] - plain["peak"]
        figures[f"over_{name}_calls"] = float(count)
        figures[f"over_{name}_prompt"] = float(size)
    figures["max_waiting"] = float(max_waiting)
    emit_json(figures)


# -- the rows ------------------------------------------------------------------------------------


def run(quick: bool = False) -> list[Row]:
    repeats, calls, plain = (5, 200, 1000) if quick else (25, 300, 1500)
    turns = 1000 if quick else 5000
    with fast_receiver(LATENCY_MS) as receiver:
        base, key = receiver.base_url, receiver.api_key
        app = run_child("conversations", "app", base, key, str(repeats), str(calls), str(plain))
        llm_runs, event_runs = [], []
        for _ in range(1 if quick else 3):  # alternate, then take medians: the machine is noisy
            llm_runs.append(run_child("conversations", "worker", base, key, "llm", str(turns)))
            event_runs.append(run_child("conversations", "worker", base, key, "event", str(turns)))
        memory = run_child("conversations", "memory", base, key, "quick" if quick else "full")
    llm = {key: statistics.median(run[key] for run in llm_runs) for key in llm_runs[0]}
    event = {key: statistics.median(run[key] for run in event_runs) for key in event_runs[0]}
    return app_rows(app) + worker_rows(llm, event, turns) + memory_rows(memory)


def app_rows(app: dict[str, float]) -> list[Row]:
    name = f"8 LLM span ({app['attribute_bytes'] / 1024:.1f} KB attrs), live"
    bare, off, on = (app[f"{config}_llm_cpu"] for config in ("bare", "off", "on"))
    cpu = "µs (thread CPU)"
    return [
        Row(f"{name}: capture off", cpu, off, "bare TracerProvider", bare, "(info)"),
        Row(f"{name}: capture off, extra", cpu, app["off_llm_extra"], "plain span extra (today)",
            app["off_plain_extra"], "(info: ≈ 1)"),
        Row(f"{name}: capture on", cpu, on, "bare TracerProvider", bare, "(info)"),
        Row(f"{name}: capture on", cpu, on, "same span, capture off", off, "(info)"),
        Row(f"{name}: capture on, extra", cpu, app["on_llm_extra"], "event span extra (same proc.)",
            app["on_event_extra"], "(info)"),
        Row(f"{name}: capture on, in GC", cpu, app["on_llm_gc"], "same span, capture off",
            app["off_llm_gc"], "(info)"),
        Row(f"{name}: capture off", "µs (wall)", app["off_llm_wall"], "bare TracerProvider",
            app["bare_llm_wall"], "(info)"),
        Row(f"{name}: capture on", "µs (wall)", app["on_llm_wall"], "same span, capture off",
            app["off_llm_wall"], "(info)"),
        Row("8 plain span, live: capture on", cpu, app["on_plain_cpu"], "same span, capture off",
            app["off_plain_cpu"], "(info)"),
        Row("8 while timing: both pipelines delivering", "events/s", app["events_per_second"],
            "feeder's rate", 2.0 * FEEDER_EVENTS_PER_SECOND, "(info)"),
    ]  # fmt: skip


def worker_rows(llm: dict[str, float], event: dict[str, float], turns: int) -> list[Row]:
    name = f"8 worker, {turns} chat turns @{LATENCY_MS} ms"
    per_call = llm["items_per_request"]
    return [
        Row(
            f"{name}: per message",
            "CPU µs (worker)",
            llm["worker_us_per_item"],
            "per business event",
            event["worker_us_per_item"],
            "(info)",
        ),
        Row(
            f"{name}: per LLM call ({per_call:.0f} msgs)",
            "CPU µs (worker)",
            llm["worker_us_per_request"],
            "per business event",
            event["worker_us_per_item"],
            "(info)",
        ),
        Row(
            f"{name}: per message",
            "CPU µs (non-app)",
            llm["others_us_per_item"],
            "per business event",
            event["others_us_per_item"],
            "(info)",
        ),
    ]


def memory_rows(memory: dict[str, float]) -> list[Row]:
    rows: list[Row] = []
    for size in PROMPT_SIZES:
        count = int(memory[f"{size}_count"])
        held = memory[f"{size}_per_call"]
        rows += [
            Row(
                f"8 waiting call, {size // 1024} KB prompt ({count} calls)",
                "KB held",
                held / 1024,
                "prompt",
                size / 1024,
                "(info)",
            ),
            Row(
                f"8 waiting call, {size // 1024} KB prompt",
                "KB held",
                held / 1024,
                "waiting_bytes estimate",
                memory[f"{size}_estimate_per_call"] / 1024,
                "(info)",
            ),
        ]
    big = memory["over_bytes_calls"]
    prompt_kb = memory["over_bytes_prompt"] / 1024
    rows += [
        Row(
            f"8 {big:.0f} waiting calls × {prompt_kb:.0f} KB: held",
            "MB (tracemalloc)",
            memory["over_bytes_held"] / 2**20,
            "MAX_WAITING_BYTES",
            MAX_WAITING_BYTES / 2**20,
            "bounded",
        ),
        Row(
            f"8 {big:.0f} waiting calls × {prompt_kb:.0f} KB: estimate",
            "MB",
            memory["over_bytes_estimate"] / 2**20,
            "MAX_WAITING_BYTES",
            MAX_WAITING_BYTES / 2**20,
            "≤ 1.00",
        ),
        Row(
            f"8 {big:.0f} waiting calls × {prompt_kb:.0f} KB: peak",
            "MB (tracemalloc)",
            memory["over_bytes_peak"] / 2**20,
            "MAX_WAITING_BYTES",
            MAX_WAITING_BYTES / 2**20,
            "(info)",
        ),
        Row(
            "8 past the byte bound: released, counted",
            "calls",
            memory["over_bytes_dropped"],
            f"{big:.0f} − still waiting",
            big - memory["over_bytes_waiting"],
            "(all counted)",
        ),
    ]
    many = memory["over_count_calls"]
    rows += [
        Row(
            f"8 {many:.0f} waiting calls × 2 KB: waiting",
            "calls",
            memory["over_count_waiting"],
            "max_waiting",
            memory["max_waiting"],
            "≤ 1.00",
        ),
        Row(
            f"8 {many:.0f} waiting calls × 2 KB: held",
            "MB (tracemalloc)",
            memory["over_count_held"] / 2**20,
            "MAX_WAITING_BYTES",
            MAX_WAITING_BYTES / 2**20,
            "bounded",
        ),
        Row(
            "8 past max_waiting: released, counted",
            "calls",
            memory["over_count_dropped"],
            f"{many:.0f} − still waiting",
            many - memory["over_count_waiting"],
            "(all counted)",
        ),
    ]
    return rows


def main() -> None:
    mode, arguments = sys.argv[1:2], sys.argv[2:]
    if mode == ["app"] and len(arguments) == 5:
        app_main(arguments[0], arguments[1], *(int(value) for value in arguments[2:]))
    elif mode == ["worker"] and len(arguments) == 4 and arguments[2] in ("llm", "event"):
        worker_main(arguments[0], arguments[1], arguments[2], int(arguments[3]))
    elif mode == ["memory"] and len(arguments) == 3:
        memory_main(arguments[0], arguments[1], arguments[2] == "quick")
    else:
        print(
            "usage: python -m benchmarks.conversations app BASE_URL API_KEY REPEATS CALLS PLAIN\n"
            "       python -m benchmarks.conversations worker BASE_URL API_KEY llm|event TURNS\n"
            "       python -m benchmarks.conversations memory BASE_URL API_KEY quick|full",
            file=sys.stderr,
        )
        raise SystemExit(2)


if __name__ == "__main__":
    main()
