"""Conversation capture with the durable spool: an application SIGKILLed during an API outage,
with LLM calls, business events and ratings spooled: once the next process adopts its spool,
every event and message arrives once, and every rating once unless its request was under way
at the kill (then it is counted unconfirmed, never sent twice)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._lane.spool import inspect
from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID
from tests.support.ports import free_port
from tests.support.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]
CHATS = 20
TURNS = 3

APP = """
import json, sys, time
sys.path.insert(0, {root!r})
from opentelemetry.sdk.trace import TracerProvider
import otel_greenflash
from otel_greenflash import GreenflashSpanProcessor

chats, turns = int(sys.argv[1]), int(sys.argv[2])
processor = GreenflashSpanProcessor(schedule_delay_seconds=0.05, capture_conversations=True)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("chat")

def text(role, content):
    return {{"role": role, "parts": [{{"type": "text", "content": content}}]}}

for chat in range(chats):
    history = []
    for turn in range(turns):
        with tracer.start_as_current_span("turn") as root:
            root.set_attribute("greenflash.conversation.external_id", f"chat-{{chat}}")
            root.set_attribute("greenflash.user.external_id", f"user-{{chat}}")
            history.append(text("user", f"question {{turn}} of chat {{chat}}"))
            answer = text("assistant", f"answer {{turn}} of chat {{chat}}")
            with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
                llm.set_attributes({{
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.input.messages": json.dumps(history),
                    "gen_ai.output.messages": json.dumps([answer]),
                }})
            history.append(answer)
            root.set_attributes({{"greenflash.event.type": "turn_answered",
                                  "greenflash.event.value": f"{{chat}}-{{turn}}"}})
        if turn == turns - 1:
            with tracer.start_as_current_span("feedback") as span:
                span.set_attribute("greenflash.conversation.external_id", f"chat-{{chat}}")
                otel_greenflash.rate("up", feedback=f"chat {{chat}}")
assert processor._shared.take_in(60)  # everything linked, mapped and in the spool
deadline = time.monotonic() + 60  # each rating refused once, waiting for its retry
while processor.stats().get("ratings", {{}}).get("retried", 0) < chats:
    assert time.monotonic() < deadline, processor.stats()
    time.sleep(0.02)
assert processor._shared.take_in(60)  # and the worker has cleared their sending marks
print("ready", json.dumps(processor.stats()), flush=True)
time.sleep(3600)   # SIGKILLed by the test while the API is still down
"""


def test_sigkill_during_an_outage_loses_and_doubles_nothing(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP.format(root=str(ROOT))))
    first_server = EventsApiServer(port=free_port()).start()  # the port stays reserved
    port, key = first_server.port, first_server.api_key
    first_server.stop()  # the outage: connections refused
    base_url = f"http://127.0.0.1:{port}/api/v1"
    env = clean_env(
        GREENFLASH_API_KEY=key,
        GREENFLASH_BASE_URL=base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_SPOOL_DIR=str(spool),
    )
    first = subprocess.Popen(
        [sys.executable, str(script), str(CHATS), str(TURNS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None
    line = first.stdout.readline()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert line.startswith("ready"), first.stderr.read() if first.stderr else line
    before = json.loads(line.split(" ", 1)[1])
    assert before["sent"] == 0
    assert before.get("messages", {}).get("sent", 0) == 0
    assert sum(summary.pending for summary in inspect(spool)) >= CHATS * TURNS

    # The API is back; the next process adopts the spool and sends it all.
    with EventsApiServer(key, port=port) as server:
        processor = GreenflashSpanProcessor(
            api_key=key,
            base_url=base_url,
            product_id=PRODUCT_ID,
            spool_dir=str(spool),
        )
        assert processor.force_flush(60_000)
        processor.shutdown(10_000)
        # A rating whose request was under way at the kill (marked sending: its connection
        # attempt not yet refused) may have been stored: the adopter never sends it again.
        unconfirmed = processor.stats().get("ratings", {}).get("unconfirmed", 0)

        events = server.events
        assert sorted(event["value"] for event in events) == sorted(
            f"{chat}-{turn}" for chat in range(CHATS) for turn in range(TURNS)
        )
        assert server.duplicates == 0
        for chat in range(CHATS):
            stored = server.conversation(f"chat-{chat}").messages
            assert [message.content for message in stored] == [
                f"{kind} {turn} of chat {chat}"
                for turn in range(TURNS)
                for kind in ("question", "answer")
            ]
        assert server.stored_message_count == CHATS * TURNS * 2
        feedback = [str(rating.get("feedback")) for rating in server.ratings]
        assert len(set(feedback)) == len(feedback)  # no rating stored twice
        assert set(feedback) <= {f"chat {chat}" for chat in range(CHATS)}
        assert len(feedback) + unconfirmed == CHATS  # each stored once, or counted unconfirmed
        print(
            f"sigkill-outage: events {len(events)}/{CHATS * TURNS}, messages "
            f"{server.stored_message_count}/{CHATS * TURNS * 2} "
            f"(deduplicated {server.deduplicated_messages}), ratings "
            f"{len(server.ratings)}/{CHATS} (unconfirmed {unconfirmed})"
        )
    assert [summary.pending for summary in inspect(spool)] in ([], [0])
