"""The durable spool: crash (SIGKILL) during an outage, adoption, bounds, fallbacks, CLI."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import BusinessEvent, GreenflashConfig, GreenflashSpanProcessor
from otel_greenflash._lane.spool import Spool, inspect
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.common import PRODUCT_ID, MakeProcessor
from tests.support.ports import free_port
from tests.support.processes import clean_env, command, run

EMITTER = """
import sys, time
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor

count, label = int(sys.argv[1]), sys.argv[2]
processor = GreenflashSpanProcessor(schedule_delay_seconds=0.05)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("app")
for index in range(count):
    with tracer.start_as_current_span("billing") as span:
        span.set_attributes({
            "greenflash.event.type": "upgrade_purchased",
            "greenflash.event.value": f"{label}{index}",
        })
    time.sleep(0.002)  # a steady stream, not one burst
    while index + 1 - processor.stats()["queued"] > 25:  # however busy the machine: never
        time.sleep(0.002)  # more than half a full queue (50) waits for the worker
deadline = time.monotonic() + 120  # a cap for a busy machine; usually well under 1 s
def accounted():
    stats = processor.stats()
    return stats["spool"].get("pending", 0) + stats["sent"]
while accounted() < count and time.monotonic() < deadline:
    time.sleep(0.02)
print("spooled", processor.stats()["spool"], flush=True)
if sys.argv[3] == "hang":
    time.sleep(3600)  # killed with SIGKILL by the test
processor.force_flush(30000)
processor.shutdown(30000)
print("stats", processor.stats(), flush=True)
"""


def emitter(
    tmp_path: Path, spool: Path, port: int, *args: str, **env_extra: str
) -> subprocess.Popen[str]:
    script = tmp_path / "emitter.py"
    script.write_text(textwrap.dedent(EMITTER))
    env = clean_env(
        GREENFLASH_API_KEY="gf-local-test-key",
        GREENFLASH_BASE_URL=f"http://127.0.0.1:{port}/api/v1",
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_SPOOL_DIR=str(spool),
        **env_extra,
    )
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def event(insert_id: str) -> BusinessEvent:
    return BusinessEvent(
        {"eventType": "t", "productId": PRODUCT_ID, "value": "1", "insertId": insert_id},
        insert_id,
        "span",
    )


def test_events_survive_sigkill_during_an_outage_and_arrive_exactly_once(
    tmp_path: Path,
) -> None:
    # More events than the senders may hold (queue 50): the outage outlasts their capacity,
    # so the rest must wait in the spool, not in memory.
    spool, port, count = tmp_path / "spool", free_port(), 200
    first = emitter(
        tmp_path, spool, port, str(count), "k", "hang", GREENFLASH_BSP_MAX_QUEUE_SIZE="50"
    )  # the server is down
    assert first.stdout is not None
    line = first.stdout.readline()
    assert line.startswith("spooled"), first.stderr.read() if first.stderr else line
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    with EventsApiServer(port=port) as server:  # the API is back
        second = emitter(tmp_path, spool, port, "0", "unused", "exit")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        values = sorted(str(e["value"]) for e in server.events)
        assert values == sorted(f"k{index}" for index in range(count))
        assert server.duplicates == 0
    assert list(spool.glob("spool-*.db")) == []  # delivered: nothing left behind


def test_two_processes_share_a_directory(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with EventsApiServer() as server:
        port = server.port
        one = emitter(tmp_path, spool, port, "30", "a", "exit")
        two = emitter(tmp_path, spool, port, "30", "b", "exit")
        for process in (one, two):
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
        values = sorted(str(e["value"]) for e in server.events)
        assert values == sorted([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)])
        assert server.duplicates == 0
    assert list(spool.glob("spool-*.db")) == []


def test_spool_files_of_dead_processes_are_adopted_and_live_ones_left_alone(
    tmp_path: Path,
) -> None:
    dead = Spool(tmp_path)
    dead.add([event("e1"), event("e2")])
    dead._lock_file.close()  # what the kernel does when a process dies
    live = Spool(tmp_path)
    live.add([event("live")])

    adopter = Spool(tmp_path)
    assert adopter.adopt_orphans() == 2
    assert [e.key for _, e in adopter.pending_after(0, 10)] == ["e1", "e2"]
    assert not dead.path.exists()
    assert live.path.exists()
    live.close()
    adopter.close()


def test_corrupt_or_foreign_files_are_reported_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spool-1-bad.db").write_bytes(b"this is not sqlite" * 100)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        spool = Spool(tmp_path)
        assert spool.adopt_orphans() == 0
    assert "spool-1-bad.db" in caplog.text
    assert (tmp_path / "spool-1-bad.db").exists()
    spool.close()


def test_bound_evicts_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=3)
    assert spool.add([event(f"e{i}") for i in range(5)]) == 2
    assert [e.key for _, e in spool.pending_after(0, 10)] == ["e2", "e3", "e4"]
    assert spool.evicted == 2
    spool.close()


def test_refused_events_are_kept_aside_and_the_file_kept(
    server: EventsApiServer, make_processor: MakeProcessor, tmp_path: Path
) -> None:
    server.inject(Fault(status=400))
    processor = make_processor(spool_dir=str(tmp_path))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for index in range(3):
        with provider.get_tracer("app").start_as_current_span("e") as span:
            span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": index})
    assert processor.force_flush(10_000)
    processor.shutdown(5_000)
    [summary] = inspect(tmp_path)
    assert (summary.pending, summary.rejected) == (0, 1)
    assert len(server.events) == 2


def test_unusable_directory_falls_back_to_memory(
    server: EventsApiServer, make_processor: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    # The configuration refuses such a directory at construction; a directory that becomes
    # unusable after it was checked (here: forced past the check) must not stop delivery.
    checked = GreenflashConfig.resolve(
        api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
    )
    processor = make_processor(config=dataclasses.replace(checked, spool_dir="/dev/null/spool"))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.ERROR, logger="otel_greenflash"):
        with provider.get_tracer("app").start_as_current_span("e") as span:
            span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
        assert processor.force_flush(10_000)
    assert "spool disabled" in caplog.text
    assert "Not a directory" in caplog.text
    assert len(server.events) == 1


def test_disk_full_mid_run_falls_back_to_memory_without_touching_the_app(
    server: EventsApiServer,
    make_processor: MakeProcessor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor = make_processor(spool_dir=str(tmp_path))
    assert processor.force_flush(10_000)  # the worker opens the spool on its first cycle
    spool = processor._shared.feed.spool
    assert spool is not None
    (pages,) = spool._db.execute("PRAGMA page_count").fetchone()
    spool._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.ERROR, logger="otel_greenflash"):
        for index in range(50):
            with provider.get_tracer("app").start_as_current_span("e") as span:
                span.set_attributes(
                    {"greenflash.event.type": "t", "greenflash.event.value": "x" * 500 + str(index)}
                )
        assert processor.force_flush(10_000)
    assert "is full" in caplog.text  # a passing state: sent from memory, the spool stays
    assert processor._shared.feed.spool is spool
    assert len(server.events) == 50


def test_cli_inspects_drains_and_purges(tmp_path: Path) -> None:
    orphan = Spool(tmp_path)
    orphan.add([event("cli-1"), event("cli-2")])
    orphan._lock_file.close()
    env = clean_env(GREENFLASH_PRODUCT_ID=PRODUCT_ID)

    result = run([command("otel-greenflash"), "spool", "inspect", str(tmp_path)], env)
    assert result.returncode == 0, result.stderr
    assert "2 pending, 0 rejected" in result.stdout
    assert "orphaned" in result.stdout

    with EventsApiServer() as server:
        env.update(GREENFLASH_API_KEY=server.api_key, GREENFLASH_BASE_URL=server.base_url)
        result = run([command("otel-greenflash"), "spool", "drain", str(tmp_path)], env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(e["insertId"] for e in server.events) == ["cli-1", "cli-2"]
    assert "sent 2" in result.stdout

    leftover = Spool(tmp_path)
    leftover.add([event("old")])
    leftover._lock_file.close()
    result = run([command("otel-greenflash"), "spool", "purge", str(tmp_path)], env)
    assert "deleted 1" in result.stdout
    assert list(tmp_path.glob("spool-*.db")) == []


def test_spool_is_written_before_the_first_send_attempt(
    make_processor: MakeProcessor, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens: every attempt fails
    processor = make_processor(spool_dir=str(tmp_path), base_url=f"http://127.0.0.1:{port}/api/v1")
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    deadline = time.monotonic() + 10
    while processor.stats()["spool"].get("pending", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processor.stats()["spool"]["pending"] == 1
    assert os.path.exists(processor._shared.feed.spool.path)  # type: ignore[union-attr]


def test_without_a_key_orphans_are_left_for_a_process_that_can_deliver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = Spool(tmp_path)
    orphan.add([event("keep-me")])
    orphan._lock_file.close()
    monkeypatch.delenv("GREENFLASH_API_KEY", raising=False)
    processor = GreenflashSpanProcessor(spool_dir=str(tmp_path), product_id=PRODUCT_ID)
    processor.force_flush(5_000)
    processor.shutdown(5_000)
    [summary] = inspect(tmp_path)
    assert summary.pending == 1


def test_a_rejected_key_keeps_events_in_the_spool(
    server: EventsApiServer, make_processor: MakeProcessor, tmp_path: Path
) -> None:
    processor = make_processor(api_key="revoked-key", spool_dir=str(tmp_path))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    # Kept for a later try, so not settled: force_flush says so.
    assert not processor.force_flush(1_000)
    processor.shutdown(5_000)
    [summary] = inspect(tmp_path)
    assert (summary.pending, summary.rejected) == (1, 0)  # for a process with a good key
    assert processor.stats()["failed"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_spool_and_leaves_the_parents_alone(
    server: EventsApiServer, make_processor: MakeProcessor, tmp_path: Path
) -> None:
    processor = make_processor(spool_dir=str(tmp_path))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")

    def emit(label: str) -> None:
        with tracer.start_as_current_span("e") as span:
            span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": label})

    emit("parent-1")
    assert processor.force_flush(10_000)
    parent_file = processor._shared.feed.spool.path  # type: ignore[union-attr]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            emit("child-1")
            ok = processor.force_flush(10_000)
            child_spool = processor._shared.feed.spool  # opened by the child's worker
            ok = ok and child_spool is not None
            child_file = child_spool.path if child_spool else parent_file
            code = 0 if ok and child_file != parent_file else 3
            processor.shutdown(5_000)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    emit("parent-2")
    assert processor.force_flush(10_000)
    assert sorted(str(e["value"]) for e in server.events) == ["child-1", "parent-1", "parent-2"]
    assert server.duplicates == 0
    assert parent_file.exists()  # the child never touched it
    deadline = time.monotonic() + 10  # delivered rows are removed on the worker's next cycle
    while processor.stats()["spool"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processor.stats()["spool"]["pending"] == 0


def test_spool_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.add([event("private")])
    assert directory.stat().st_mode & 0o777 == 0o700
    for path in directory.iterdir():
        if path.suffix != ".lock":
            assert path.stat().st_mode & 0o077 == 0, path.name
    spool.close()
