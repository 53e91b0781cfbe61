"""Every path an event can take ends delivered or in a counter: ``track()`` past the SDK's
span event limit and under a provider we are not on, span events the SDK discarded, events
with no conversation id anywhere, and ``configure()`` with a second provider in the trace."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider

from otel_greenflash import track
from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID, MakeProcessor
from tests.support.processes import clean_env, command, run, run_script


def test_track_past_the_sdk_span_event_limit_delivers_every_event(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span("agent-loop") as loop:
        loop.set_attribute("gen_ai.conversation.id", "chat-loop")
        for step in range(200):
            track("tool_call_succeeded", step, value_type="count")
        assert len(loop.events) == 128  # type: ignore[attr-defined]
        assert loop.dropped_events == 0  # type: ignore[attr-defined]
    assert processor.force_flush(10_000)
    assert server.wait_for_events(200, timeout_seconds=10)
    assert sorted(int(event["value"]) for event in server.events) == list(range(200))
    assert {event["externalConversationId"] for event in server.events} == {"chat-loop"}
    stats = processor.stats()
    assert stats["sent"] == 200
    assert stats["dropped"] == {}
    assert stats["unlinked"] == {}


def test_span_events_the_sdk_discarded_are_counted_and_said(
    server: EventsApiServer, make_processor: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make_processor()
    provider = TracerProvider(span_limits=SpanLimits(max_events=10))
    provider.add_span_processor(processor)
    with (
        caplog.at_level(logging.WARNING, logger="otel_greenflash"),
        provider.get_tracer("agent").start_as_current_span("agent-loop") as loop,
    ):
        loop.set_attribute("gen_ai.conversation.id", "chat-loop")
        for step in range(25):  # straight on the span: the SDK keeps the last 10
            loop.add_event(
                "greenflash.event",
                {"greenflash.event.type": "step", "greenflash.event.value": step},
            )
    assert processor.force_flush(10_000)
    assert server.wait_for_events(10, timeout_seconds=10)
    assert processor.stats()["dropped"] == {"span_event_limit": 15}
    assert "discarded 15 event(s) of span 'agent-loop'" in caplog.text
    assert "OTEL_SPAN_EVENT_COUNT_LIMIT" in caplog.text


def test_track_under_a_span_of_a_provider_without_the_processor_is_delivered(
    server: EventsApiServer, make_processor: MakeProcessor
) -> None:
    processor = make_processor()
    ours = TracerProvider()
    ours.add_span_processor(processor)
    theirs = TracerProvider()  # e.g. a library's own provider
    with theirs.get_tracer("lib").start_as_current_span("lib-call") as span:
        span.set_attribute("session.id", "chat-foreign")
        track("upgrade", "149.00", value_type="currency")
        assert span.events == ()  # type: ignore[attr-defined]
    assert processor.force_flush(10_000)
    [event] = server.events
    assert event["externalConversationId"] == "chat-foreign"
    assert event["value"] == "149.00"
    assert event["insertId"].startswith("track-")


def test_an_event_with_no_conversation_id_names_the_keys_that_look_like_one(
    server: EventsApiServer, make_processor: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    with (
        caplog.at_level(logging.WARNING, logger="otel_greenflash"),
        tracer.start_as_current_span("chat") as root,
    ):
        root.set_attribute("app.chat_id", "c-1")
        with tracer.start_as_current_span("billing"):
            track("upgrade", "149.00", value_type="currency")
    assert processor.force_flush(10_000)
    [event] = server.events
    assert "externalConversationId" not in event
    assert processor.stats()["unlinked"] == {"no_conversation_id": 1}
    assert "no conversation id in the trace (span 'billing')" in caplog.text
    assert "app.chat_id" in caplog.text
    assert (
        "GREENFLASH_LINK_EXTRA_ALIASES='app.chat_id=greenflash.conversation.external_id'"
        in caplog.text
    )
    assert "c-1" not in caplog.text  # keys only, never values


def test_extra_aliases_add_to_the_defaults(
    server: EventsApiServer, make_processor: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "GREENFLASH_LINK_EXTRA_ALIASES", "app.chat_id=greenflash.conversation.external_id"
    )
    processor = make_processor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for key in (
        "app.chat_id",
        "gen_ai.conversation.id",
        "traceloop.association.properties.session_id",
    ):
        with tracer.start_as_current_span("chat") as root:
            root.set_attribute(key, f"via-{key}")
            with tracer.start_as_current_span("billing"):
                track("upgrade", "149.00", value_type="currency")
    assert processor.force_flush(10_000)
    assert sorted(event["externalConversationId"] for event in server.events) == [
        "via-app.chat_id",
        "via-gen_ai.conversation.id",
        "via-traceloop.association.properties.session_id",
    ]


SECOND_PROVIDER_APP = """
import json, logging, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
import otel_greenflash
from otel_greenflash import track

logging.basicConfig(level=logging.INFO)
order = os.environ["ORDER"]
if order in ("ours-first", "twice"):
    processor = otel_greenflash.configure()
second = TracerProvider()  # another SDK provider, as Logfire swaps in at each configure()
if order == "second-first":
    processor = otel_greenflash.configure()
if order == "second-only":  # nothing of the trace comes from the global provider
    processor = otel_greenflash.configure()
    second = TracerProvider()  # created after configure(), as Logfire configured later does
ours = trace.get_tracer("app") if order != "second-only" else second.get_tracer("app")
theirs = second.get_tracer("web")
if order == "twice":  # the application also adds a processor by hand, with the same settings
    second.add_span_processor(otel_greenflash.GreenflashSpanProcessor())
for n in range(20):
    # the root comes from the second provider, the event span from the global one
    with theirs.start_as_current_span("POST /chat") as root:
        root.set_attribute("gen_ai.conversation.id", f"chat-{n}")
        with ours.start_as_current_span("upgrade") as span:
            span.set_attributes({"greenflash.event.type": "upgrade",
                                 "greenflash.event.value": "149.00",
                                 "greenflash.event.value_type": "currency"})
        if order == "second-only":
            with theirs.start_as_current_span("cancel") as cancel:
                cancel.set_attributes({"greenflash.event.type": "cancellation",
                                       "greenflash.event.value": "true",
                                       "greenflash.event.value_type": "boolean"})
        else:
            with theirs.start_as_current_span("cancel"):
                track("cancellation", "true", value_type="boolean")
assert processor.force_flush(10_000)
print(json.dumps(processor.stats()))
"""


@pytest.mark.parametrize("order", ["ours-first", "second-first", "second-only", "twice"])
def test_configure_reaches_a_second_provider_in_the_trace(
    server: EventsApiServer, tmp_path: Path, order: str
) -> None:
    env = clean_env(
        ORDER=order,
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_SCHEDULE_DELAY="50",
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
    )
    result = run_script(tmp_path, SECOND_PROVIDER_APP, env)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert server.wait_for_events(40, timeout_seconds=10)
    # "twice": the cancellations are the hand-installed processor's (its own pipeline), and
    # configure()'s hooks on that provider stepped aside: no event is taken twice.
    assert stats["queued"] == stats["sent"] == (20 if order == "twice" else 40), stats
    assert stats["unlinked"] == {}, stats
    assert stats["dropped"] == {}, stats
    by_type: dict[str, set[str]] = {}
    for event in server.events:
        by_type.setdefault(event["eventType"], set()).add(event["externalConversationId"])
    expected = {f"chat-{n}" for n in range(20)}
    assert by_type == {"upgrade": expected, "cancellation": expected}
    assert server.duplicates == 0
    if order == "second-first":  # found through the trace, not created after configure()
        assert "installed GreenflashSpanProcessor on a second TracerProvider" in result.stderr


LINKING_APP = """
import sys, time
from opentelemetry import trace
import otel_greenflash
from otel_greenflash import track

processor = otel_greenflash.configure()
tracer = trace.get_tracer("app")
for n in range(4):
    with tracer.start_as_current_span("chat") as root:
        if n:  # the first chat sets no conversation id
            root.set_attribute("gen_ai.conversation.id", f"chat-{n}")
        else:
            root.set_attribute("app.thread_id", "t-0")
        with tracer.start_as_current_span("billing"):
            track("upgrade", "149.00", value_type="currency")
assert processor.force_flush(10_000)
time.sleep(2.5)  # the worker writes its status at most every 2 s
processor.force_flush(10_000)
print("ready", flush=True)
sys.stdin.readline()  # stay alive while `otel-greenflash check` runs
"""


def test_check_says_how_many_of_the_last_events_were_linked(
    server: EventsApiServer, tmp_path: Path
) -> None:
    env = clean_env(
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_SCHEDULE_DELAY="50",
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        TMPDIR=str(tmp_path),
    )
    script = tmp_path / "app.py"
    script.write_text(LINKING_APP)
    with subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as app:
        assert app.stdout is not None
        assert app.stdin is not None
        assert app.stdout.readline().strip() == "ready"
        result = run([command("otel-greenflash"), "check"], env)
        app.stdin.write("\n")
        app.stdin.flush()
    assert f"process {app.pid}: 3 of its last 4 events linked" in result.stdout, result.stdout
    assert "1 no conversation id in the trace" in result.stdout
    assert "keys that look like one: app.thread_id" in result.stdout
    assert result.returncode == 0, result.stdout  # said, not a failure of the check itself
    assert "t-0" not in result.stdout
    assert "chat-1" not in result.stdout
