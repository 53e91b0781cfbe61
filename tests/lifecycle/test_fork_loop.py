"""Real ``os.fork`` while the parent's delivery loop is busy, including its very first requests.

Each run is a fresh interpreter, so the first fork lands while the loop thread may still be
importing and connecting for the first time; every child must deliver its own events and
the parent its own, each exactly once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.processes import clean_env, run

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys, time
sys.path.insert(0, {root!r})
from tests.support.independent_receiver import Receiver
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor

with Receiver(latency_seconds=0.01) as receiver:
    processor = GreenflashSpanProcessor(
        api_key=receiver.api_key,
        base_url=receiver.base_url,
        product_id="123e4567-e89b-12d3-a456-426614174000",
        schedule_delay_seconds=0.01,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")

    def emit(label, count):
        for index in range(count):
            with tracer.start_as_current_span("e") as span:
                span.set_attribute("greenflash.event.type", "t")
                span.set_attribute("greenflash.event.value", f"{{label}}-{{index}}")

    children = []
    for child in range(6):
        emit(f"p{{child}}", 30)
        time.sleep(0.003 * child)  # fork at different moments of the parent's deliveries
        pid = os.fork()
        if pid == 0:
            emit(f"c{{child}}", 10)
            os._exit(0 if processor.force_flush(15_000) else 7)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    flushed = processor.force_flush(20_000)
    expected = {{f"p{{c}}-{{i}}" for c in range(6) for i in range(30)}}
    expected |= {{f"c{{c}}-{{i}}" for c in range(6) for i in range(10)}}
    got = sorted(str(event["value"]) for event in receiver.accepted)
    print("codes", codes, "flushed", flushed, "missing", sorted(expected - set(got)),
          "duplicates", receiver.duplicates, "extra", len(got) - len(expected))
    provider.shutdown()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("run_number", range(3))
def test_children_forked_during_deliveries_deliver_their_own_events(
    run_number: int, tmp_path: Path
) -> None:
    script = tmp_path / "fork_app.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    result = run([sys.executable, str(script)], clean_env(), timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "codes [0, 0, 0, 0, 0, 0] flushed True missing [] duplicates 0 extra 0" in result.stdout
    ), result.stdout + result.stderr[-3000:]


C_FORK_SCRIPT = """
import ctypes, json, os, sys, time
from otel_greenflash import GreenflashSpanProcessor, track
from otel_greenflash._deliver.transport import SendOutcome

class FileTransport:
    def send(self, body, timeout_seconds=None):
        with open({log!r}, "a") as log:
            log.write(f"{{os.getpid()}} {{json.loads(body)['eventType']}}\\n")
        return SendOutcome(200)

    def close(self):
        return None

processor = GreenflashSpanProcessor(
    transport=FileTransport(), product_id="123e4567-e89b-12d3-a456-426614174000"
)
track("parent_event", 1)
assert processor.force_flush(5000)
libc = ctypes.PyDLL(None)  # fork from C, as uWSGI does: Python's at-fork hooks do not run
# From an idle parent, as uWSGI's master forks its workers. A C fork while another thread is
# inside CPython's GIL hand-over leaves the child's GIL mutex locked forever (no
# PyOS_AfterFork_Child): a CPython hazard no library can undo, seen as occasional hangs when
# this script forked right after the flush.
time.sleep(0.5)
pid = libc.fork()
if pid == 0:
    track("child_event", 1)  # no span: straight to the processor, which must notice the fork
    ok = processor.force_flush(5000)
    processor.shutdown(2000)
    os._exit(0 if ok else 7)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
processor.shutdown(2000)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_from_c_is_noticed_by_track_flush_and_shutdown(tmp_path: Path) -> None:
    log = tmp_path / "sent.log"
    script = tmp_path / "c_fork_app.py"
    script.write_text(C_FORK_SCRIPT.format(log=str(log)))
    result = run([sys.executable, str(script)], clean_env(), timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "child 0" in result.stdout, result.stdout + result.stderr[-2000:]
    lines = [line.split() for line in log.read_text().splitlines()]
    events = sorted(event for _, event in lines)
    assert events == ["child_event", "parent_event"]
    assert len({pid for pid, _ in lines}) == 2  # each sent by its own process


FIFTY_FORKS_SCRIPT = """
import os, sys, time
sys.path.insert(0, {root!r})
from tests.support.independent_receiver import Receiver
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor

with Receiver(latency_seconds=0.02) as receiver:
    processor = GreenflashSpanProcessor(
        api_key=receiver.api_key,
        base_url=receiver.base_url,
        product_id="123e4567-e89b-12d3-a456-426614174000",
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")

    def emit(label, count):
        for index in range(count):
            with tracer.start_as_current_span("e") as span:
                span.set_attribute("greenflash.event.type", "t")
                span.set_attribute("greenflash.event.value", f"{{label}}-{{index}}")

    children = []
    started = time.monotonic()
    for child in range(50):
        emit(f"p{{child}}", 2)
        processor.deliver_queued(0)  # hand events to the loop now: forks land mid-delivery
        time.sleep(0.0005 * (child % 10))
        pid = os.fork()
        if pid == 0:
            emit(f"c{{child}}", 4)
            os._exit(0)  # no flush, no atexit: the child's os._exit delivers first
        children.append(pid)
    forks_took = time.monotonic() - started
    codes = {{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children}}
    flushed = processor.force_flush(30_000)
    expected = {{f"p{{c}}-{{i}}" for c in range(50) for i in range(2)}}
    expected |= {{f"c{{c}}-{{i}}" for c in range(50) for i in range(4)}}
    got = sorted(str(event["value"]) for event in receiver.accepted)
    print("50 forks took %.2f s" % forks_took, file=sys.stderr)
    print("codes", sorted(codes), "flushed", flushed, "missing", sorted(expected - set(got)),
          "duplicates", receiver.duplicates, "extra", len(got) - len(expected))
    provider.shutdown()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fifty_forks_across_the_first_deliveries_each_deliver_their_own(tmp_path: Path) -> None:
    script = tmp_path / "fifty_forks.py"
    script.write_text(FIFTY_FORKS_SCRIPT.format(root=str(ROOT)))
    result = run([sys.executable, str(script)], clean_env(), timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "codes [0] flushed True missing [] duplicates 0 extra 0" in result.stdout, (
        result.stdout + result.stderr[-3000:]
    )
