"""Events waiting minutes for their conversation id are in the spool while they wait: a crash
(SIGKILL) then loses nothing, and a normal finish leaves no trace of the wait."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import BusinessEvent, GreenflashSpanProcessor
from otel_greenflash._lane.spool import Spool, inspect
from otel_greenflash.testing import MemoryTransport
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver
from tests.support.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]

WAITER = """
import sys, time
sys.path.insert(0, {root!r})
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import set_span_in_context
from otel_greenflash import GreenflashSpanProcessor

processor = GreenflashSpanProcessor(schedule_delay_seconds=0.05)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("chat")
root = tracer.start_span("chat turn")          # the LLM call is still running
with tracer.start_as_current_span("purchase", context=set_span_in_context(root)) as span:
    span.set_attributes({{"greenflash.event.type": "upgrade_purchased",
                         "greenflash.event.value": "149.00",
                         "greenflash.event.value_type": "currency",
                         "greenflash.user.external_id": "user-42"}})
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not processor.stats()["spool"].get("pending"):
    time.sleep(0.02)
print("waiting", processor.stats()["waiting"], flush=True)
time.sleep(3600)   # SIGKILLed by the test while the event waits for its conversation id
"""


def test_an_event_waiting_for_its_conversation_survives_sigkill(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Receiver() as receiver:
        script = tmp_path / "waiter.py"
        script.write_text(textwrap.dedent(WAITER.format(root=str(ROOT))))
        env = clean_env(
            GREENFLASH_API_KEY=receiver.api_key,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_SPOOL_DIR=str(spool),
        )
        first = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert first.stdout is not None
        line = first.stdout.readline()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert line.strip() == "waiting 1", first.stderr.read() if first.stderr else line
        assert receiver.accepted == []  # it was waiting, not sent

        # The next process adopts the file and sends the event as it was known.
        processor = GreenflashSpanProcessor(
            api_key=receiver.api_key, base_url=receiver.base_url, spool_dir=str(spool)
        )
        assert processor.force_flush(20_000)
        processor.shutdown(5_000)
    adopted = receiver.accepted
    assert len(adopted) == 1
    assert adopted[0]["value"] == "149.00"
    assert adopted[0]["externalUserId"] == "user-42"
    assert "conversationId" not in adopted[0]
    assert receiver.duplicates == 0
    assert [summary.pending for summary in inspect(spool)] in ([], [0])


def test_a_waiting_event_once_linked_goes_once_and_leaves_the_spool_empty(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    conversation = str(uuid.uuid4())
    with Receiver() as receiver:
        processor = GreenflashSpanProcessor(
            api_key=receiver.api_key,
            base_url=receiver.base_url,
            product_id=PRODUCT_ID,
            spool_dir=str(spool),
            schedule_delay_seconds=0.05,
        )
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("chat")
        with tracer.start_as_current_span("chat turn") as root:
            with tracer.start_as_current_span("purchase") as span:
                span.set_attribute("greenflash.event.type", "upgrade_purchased")
                span.set_attribute("greenflash.event.value", "1")
            assert receiver.wait_until(
                lambda: sum(summary.pending for summary in inspect(spool)) == 1, timeout=10
            )  # written while it waits
            assert processor.deliver_queued(5_000)  # waiting events keep waiting
            assert receiver.accepted == []
            root.set_attribute("greenflash.conversation.id", conversation)
        assert processor.force_flush(20_000)
        assert [event.get("conversationId") for event in receiver.accepted] == [conversation]
        assert processor.stats()["spool"]["pending"] == 0
        provider.shutdown()
    assert receiver.duplicates == 0
    assert list(spool.glob("spool-*.db")) == []


def _event(insert_id: str) -> BusinessEvent:
    body = {"eventType": "t", "productId": PRODUCT_ID, "value": "1", "insertId": insert_id}
    return BusinessEvent(body, insert_id, "span")


def test_the_bound_never_evicts_waiting_rows_nor_counts_them_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=10)
    spool.hold([_event(f"w{i}") for i in range(8)])  # waiting, still held in memory
    lost = spool.add([_event(f"e{i}") for i in range(20)])
    assert lost == 10  # the ten oldest linked events, not the waiting ones
    assert spool.add([_event(f"w{i}") for i in range(8)]) == 8  # released: now they count
    pending = [event.key for _, event in spool.pending_after(0, 100)]
    assert pending == [f"e{i}" for i in range(18, 20)] + [f"w{i}" for i in range(8)]
    assert [summary.oldest_age_seconds is not None for summary in inspect(tmp_path)] == [True]
    spool.close()


def test_an_event_sqlite_cannot_store_goes_from_memory_and_the_spool_stays(
    tmp_path: Path,
) -> None:
    transport = MemoryTransport()
    processor = GreenflashSpanProcessor(
        product_id=PRODUCT_ID,
        spool_dir=str(tmp_path),
        transport=transport,
        api_key="k",
        schedule_delay_seconds=0.05,
    )
    pipeline = processor._shared.lanes
    # Mapping never produces such an id (it refuses it); anything else SQLite cannot store
    # (a body over its size limit) takes the same path.
    events = [_event("a"), _event("bad-\udcff"), _event("b")]
    pipeline.deliver(events)
    assert processor.force_flush(10_000)
    assert sorted(str(body["insertId"]) for body in transport.events) == [
        "a",
        "b",
        "bad-\udcff",
    ]
    assert pipeline.feed.spool is not None  # still spooling
    pipeline.deliver([_event("c")])
    assert processor.force_flush(10_000)
    assert processor.stats()["spool"]["pending"] == 0
    processor.shutdown(5_000)
