"""Orphaned spool files: live processes adopt those of neighbours that die beside them, and
adoption needs no room for a copy of the orphan (rows are moved, the orphan shrinks)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from otel_greenflash import BusinessEvent, GreenflashSpanProcessor
from otel_greenflash._lane import spool_adoption as adoption
from otel_greenflash._lane.spool import Spool
from otel_greenflash._lane.spool_adoption import (
    BATCH_ROWS,
    ENV_SCAN_SECONDS,
    ORPHAN_SCAN_SECONDS,
    STEP_BATCHES,
    ScanSchedule,
    scan_period,
)
from otel_greenflash._lane.spool_destination import Destination
from otel_greenflash._lane.spool_files import try_lock
from otel_greenflash.testing import DEFAULT_API_KEY, EventsApiServer
from tests.support import spool_emitter as app
from tests.support.ports import free_port

SCAN = {ENV_SCAN_SECONDS: "0.3", "GREENFLASH_BSP_EXPORT_TIMEOUT": "500"}
"""Live processes scan every 0.3 s, and try failed events again after 0.5 s (the API is down
while their neighbours die)."""


def event(insert_id: str) -> BusinessEvent:
    body = {"eventType": "t", "productId": app.PRODUCT_ID, "value": "1", "insertId": insert_id}
    return BusinessEvent(body, insert_id, "span")


def test_live_processes_adopt_the_files_of_neighbours_killed_beside_them(tmp_path: Path) -> None:
    spool, port = tmp_path / "spool", free_port()
    base_url = f"http://127.0.0.1:{port}/api/v1"
    live = [app.start(spool, DEFAULT_API_KEY, base_url, "0", "-", "serve", **SCAN) for _ in "ab"]
    neighbours = [
        app.start(spool, DEFAULT_API_KEY, base_url, "500", label, "hang") for label in "xy"
    ]
    try:
        for process in live + neighbours:
            app.wait_ready(process)
        for process in neighbours:  # the API is down: 1,000 events wait in their spools
            app.kill(process)
        with EventsApiServer(port=port) as server:  # no new process starts: only the live ones
            delivered = server.wait_for_events(1000, timeout_seconds=60)
            values = sorted(str(event["value"]) for event in server.events)
        assert delivered, f"{len(values)} of 1000 delivered by the live processes"
        assert values == sorted(f"{label}{i}" for label in "xy" for i in range(500))
    finally:
        errors = []
        for process in live + neighbours:
            if process.poll() is None:
                _, err = process.communicate(input="", timeout=60)
                errors.append(err)
    assert sum("adopted" in err for err in errors) >= 1, errors
    assert list(spool.glob("spool-*.db")) == []  # delivered, and each live one exited clean


def test_adoption_takes_what_fits_under_the_bound_and_leaves_the_rest_in_the_orphan(
    tmp_path: Path,
) -> None:
    dead = Spool(tmp_path)
    dead.add([event(f"o{i}") for i in range(5)])
    dead._db.close()
    dead._lock_file.close()  # its process is gone
    adopter = Spool(tmp_path, max_events=4)
    adopter.add([event("own")])
    assert adopter.adopt_orphans() == 3
    assert [e.key for _, e in adopter.pending_after(0, 10)] == ["own", "o0", "o1", "o2"]
    assert adopter.evicted == 0  # nothing already held made room for them
    assert dead.path.exists()  # the rest waits in its file
    adopter.remove(["own", "o0", "o1", "o2"])  # delivered
    assert adopter.adopt_orphans() == 2
    assert not dead.path.exists()
    adopter.close()


def dead_spool(directory: Path, count: int, destination: Destination | None = None) -> Path:
    """The file of a process that died with ``count`` undelivered events."""
    dead = Spool(directory, destination=destination)
    dead.add([event(f"o{i}") for i in range(count)])
    dead._db.close()
    dead._lock_file.close()  # what the kernel does when a process dies
    return dead.path


def rows_in(path: Path) -> int:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
        (count,) = db.execute("SELECT count(*) FROM events").fetchone()
    db.close()
    return int(count)


def test_a_periodic_scan_moves_a_few_batches_per_call_and_the_rest_in_later_ones(
    tmp_path: Path,
) -> None:
    orphan = dead_spool(tmp_path, 3000)  # small events: 256 rows a batch
    adopter = Spool(tmp_path)
    adopter._adopter.schedule.next_at = 0.0  # the periodic scan is due
    step = STEP_BATCHES * BATCH_ROWS
    first = adopter.adopt_orphans_when_due()
    assert 0 < first <= step  # before: all 3,000 in one call of the worker's chores
    assert rows_in(orphan) == 3000 - first  # the rest waits in the orphan, still locked
    assert try_lock(orphan.with_suffix(".lock")) is None
    moved = [first]
    while adopter.adopting and len(moved) < 100:
        moved.append(adopter.adopt_orphans_when_due())
    assert all(count <= step for count in moved), moved
    assert sum(moved) == 3000
    assert len(moved) >= 3000 // step
    assert not orphan.exists()
    ids = [e.key for _, e in adopter.pending_after(0, 5000)]
    assert ids == [f"o{i}" for i in range(3000)]
    assert adopter.adopt_orphans_when_due() == 0  # the next scan waits for its period
    adopter.close()


def test_a_spool_closed_during_a_scan_leaves_the_rest_for_a_later_one(tmp_path: Path) -> None:
    orphan = dead_spool(tmp_path, 2000)
    adopter = Spool(tmp_path)
    adopter._adopter.schedule.next_at = 0.0
    moved = adopter.adopt_orphans_when_due()
    adopter.close()  # e.g. shutdown between two worker cycles
    assert rows_in(orphan) == 2000 - moved
    later = Spool(tmp_path)  # the orphan's lock was let go of: the next process takes it all
    assert later.adopt_orphans() == 2000  # the rest, and what the closed spool held
    assert list(tmp_path.glob("spool-*.db")) == [later.path]
    later.close()


def test_a_live_pipeline_goes_on_with_a_scan_at_once_not_at_its_next_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SCAN_SECONDS, "0.05")
    base_url = f"http://127.0.0.1:{free_port()}/api/v1"  # the API is down: nothing settles
    processor = GreenflashSpanProcessor(
        api_key=DEFAULT_API_KEY,
        base_url=base_url,
        product_id=app.PRODUCT_ID,
        spool_dir=str(tmp_path),
        schedule_delay_seconds=60,  # no cycle of its own during the test
    )
    try:
        processor.force_flush(300)  # the spool is open; its first scan is done
        orphan = dead_spool(tmp_path, 3000, Destination(base_url + "/events", DEFAULT_API_KEY))
        time.sleep(0.2)  # the next scan is due
        processor.force_flush(300)  # one cycle: the scan's first step
        deadline = time.monotonic() + 30  # a hang guard, not a measure
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not orphan.exists(), f"{rows_in(orphan)} of 3000 left"  # without: 60 s a step
        assert processor.stats()["spool"]["pending"] == 3000
    finally:
        processor.shutdown(1_000)


def test_adoption_counts_only_the_events_it_brings_in(tmp_path: Path) -> None:
    dead_spool(tmp_path, 10)
    adopter = Spool(tmp_path)
    # A crash between the two commits of an earlier move left these in both files.
    adopter.add([event(f"o{i}") for i in range(6)])
    assert adopter.adopt_orphans() == 4  # before: 10, counted as queued by the pipeline
    assert adopter.counts() == (10, 0)
    adopter.close()


def flock_held(path: Path) -> bool:
    """True when some process holds an ``flock`` on ``path`` (from /proc/locks)."""
    status = os.stat(path)
    major, minor, inode = os.major(status.st_dev), os.minor(status.st_dev), status.st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" not in fields:
            continue
        for field in fields:  # MAJ:MIN:INODE, the device in hex: this file, not its inode alone
            parts = field.split(":")
            if len(parts) == 3 and parts[2] == str(inode):
                with contextlib.suppress(ValueError):
                    if (int(parts[0], 16), int(parts[1], 16)) == (major, minor):
                        return True
    return False


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads flock holders from /proc")
def test_a_child_forked_during_an_adoption_does_not_keep_the_orphan_locked(
    tmp_path: Path,
) -> None:
    orphan = dead_spool(tmp_path, 5)
    lock_path = orphan.with_suffix(".lock")
    adopter = Spool(tmp_path, max_events=2)  # the adoption pauses: the rest stays in its file
    adopter._lock.acquire()  # the scan stops at its first look at our spool, the orphan locked
    scan = threading.Thread(target=adopter.adopt_orphans)
    scan.start()
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    try:
        deadline = time.monotonic() + 10
        while not flock_held(lock_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flock_held(lock_path)
        pid = os.fork()
        if pid == 0:  # a prefork worker: lives on after the parent's scan
            try:
                os.write(ready_write, b"x")  # back from fork(): its at-fork handlers have run
                os.close(write_end)
                os.read(read_end, 1)
            finally:
                os._exit(0)
        assert os.read(ready_read, 1) == b"x"
    finally:
        adopter._lock.release()
        os.close(ready_read)
        os.close(ready_write)
    os.close(read_end)
    try:
        scan.join(30)
        assert orphan.exists()
        assert rows_in(orphan) == 3  # paused at the bound
        handle = try_lock(lock_path)
        assert handle is not None  # before: None, the child held the orphan's lock
        handle.close()
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)
        adopter.close()


def test_forked_children_draw_their_own_scan_times() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, repr(adoption._adopters.jitter.random()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        drawn_in_child = float(pipe.read())
    assert drawn_in_child != adoption._adopters.jitter.random()  # before: the same draw


def test_scans_are_spread_around_the_period() -> None:
    schedule = ScanSchedule(30.0, now=100.0)
    assert 124.0 <= schedule.next_at <= 136.0
    assert not schedule.due(123.9)
    waits = set()
    for _ in range(200):
        schedule.scanned(1000.0)
        assert 1024.0 <= schedule.next_at <= 1036.0
        waits.add(round(schedule.next_at, 3))
    assert len(waits) > 10  # processes started together do not scan together


@pytest.mark.parametrize(
    ("value", "period"),
    [("", ORPHAN_SCAN_SECONDS), ("0.3", 0.3), ("zero", ORPHAN_SCAN_SECONDS), ("0", 30.0)],
)
def test_the_scan_period_knob(value: str, period: float) -> None:
    assert scan_period({ENV_SCAN_SECONDS: value}) == period


# -- a nearly full volume ------------------------------------------------------------------------

NEARLY_FULL = """
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[2])
from tests.support import spool_emitter as app
from otel_greenflash.testing import DEFAULT_API_KEY, EventsApiServer

volume = sys.argv[1]
spool = os.path.join(volume, "spool")
probe = EventsApiServer(); port = probe.port; probe.stop()
base_url = f"http://127.0.0.1:{port}/api/v1"

def usage():
    files = {name: os.path.getsize(os.path.join(spool, name)) for name in os.listdir(spool)}
    stat = os.statvfs(volume)
    return sum(files.values()), stat.f_bavail * stat.f_frsize

# A process killed during an outage leaves its spool (events of about 1 KiB each).
first = app.start(
    spool, DEFAULT_API_KEY, base_url, sys.argv[3], "v", "hang", "1000",
    GREENFLASH_BSP_MAX_QUEUE_SIZE="8192",  # all of them, however fast they come
)
app.wait_ready(first)
app.kill(first)
orphan, _ = usage()
# Other data fills the volume until less than the orphan's size is free.
with open(os.path.join(volume, "other-data"), "wb") as other:
    other.write(b"x" * max(0, usage()[1] - 1024 * 1024))  # 1 MiB free
_, free = usage()

with EventsApiServer(port=port) as server:  # the API is back; the process restarts
    second = app.start(spool, DEFAULT_API_KEY, base_url, "0", "-", "exit")
    _, err = second.communicate(timeout=120)
    delivered = len({event["value"] for event in server.events})
print(json.dumps({"orphan": orphan, "free": free, "delivered": delivered, "left": usage()[0],
                  "code": second.returncode, "err": err[-2000:]}))
"""


def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs user namespaces to mount a tmpfs")
def test_a_restart_on_a_nearly_full_volume_adopts_without_room_for_a_copy(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    script = tmp_path / "nearly_full.py"
    script.write_text(textwrap.dedent(NEARLY_FULL))
    root = str(Path(__file__).resolve().parents[2])
    command = 'mount -t tmpfs -o size=12m tmpfs "$1" && exec "$2" "$3" "$1" "$4" 3000'
    started = time.monotonic()
    result = subprocess.run(
        [
            "unshare",
            "-Urm",
            "sh",
            "-c",
            command,
            "sh",
            str(volume),
            sys.executable,
            str(script),
            root,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["free"] < outcome["orphan"], outcome  # no room for a copy of the orphan
    assert outcome["code"] == 0, outcome["err"]
    assert outcome["delivered"] == 3000, outcome["err"]  # before: 0, the spool was switched off
    assert outcome["left"] == 0, outcome
    assert time.monotonic() - started < 200  # a hang guard, not a measure
