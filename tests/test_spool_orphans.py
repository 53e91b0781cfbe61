"""Orphaned spool files: live processes adopt those of neighbours that die beside them, and
adoption needs no room for a copy of the orphan (rows are moved, the orphan shrinks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otel_greenflash import BusinessEvent
from otel_greenflash._spool import Spool
from otel_greenflash._spool_adoption import (
    ENV_SCAN_SECONDS,
    ORPHAN_SCAN_SECONDS,
    ScanSchedule,
    scan_period,
)
from otel_greenflash.testing import DEFAULT_API_KEY, EventsApiServer

from . import _spool_emitter as app

SCAN = {ENV_SCAN_SECONDS: "0.3", "GREENFLASH_BSP_EXPORT_TIMEOUT": "500"}
"""Live processes scan every 0.3 s, and try failed events again after 0.5 s (the API is down
while their neighbours die)."""


def event(insert_id: str) -> BusinessEvent:
    body = {"eventType": "t", "productId": app.PRODUCT_ID, "value": "1", "insertId": insert_id}
    return BusinessEvent(body, insert_id, "span")


def free_port() -> int:
    probe = EventsApiServer()
    port = probe.port
    probe.stop()
    return port


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
    assert [e.insert_id for _, e in adopter.pending_after(0, 10)] == ["own", "o0", "o1", "o2"]
    assert adopter.evicted == 0  # nothing already held made room for them
    assert dead.path.exists()  # the rest waits in its file
    adopter.remove(["own", "o0", "o1", "o2"])  # delivered
    assert adopter.adopt_orphans() == 2
    assert not dead.path.exists()
    adopter.close()


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
from tests import _spool_emitter as app
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
    root = str(Path(__file__).resolve().parents[1])
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
