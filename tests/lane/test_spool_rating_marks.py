"""A rating's spool row is marked as sending (committed) before its first request: a process
that adopts the file after a crash counts a marked rating unconfirmed and never sends it, since
the Ratings API would store it twice. Real subprocesses killed with SIGKILL, real SQLite files,
real HTTP to the local server."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_greenflash._event import ApiRequest
from otel_greenflash._lane.spool import Spool
from otel_greenflash.testing import EventsApiServer, Fault
from tests.lane.test_spool_kinds import LaneSet, deliver_all
from tests.support.api_requests import a_messages_request, a_rating, an_event
from tests.support.processes import clean_env

LONG = 60.0
HELD_SECONDS = 15.0
"""How long the server holds the rating's request before storing it: the child is killed
meanwhile (as soon as the request arrives)."""

CHILD = """
import sys, time
from otel_greenflash import GreenflashConfig
from otel_greenflash._lane.lanes import Lanes
from otel_greenflash._stats import DeliveryStats
from tests.support.api_requests import a_rating
from tests.support.common import PRODUCT_ID

base_url, spool_dir = sys.argv[1], sys.argv[2]
config = GreenflashConfig.resolve(
    {},
    api_key="gf-local-test-key",
    base_url=base_url,
    product_id=PRODUCT_ID,
    spool_dir=spool_dir,
    timeout_seconds=600,  # the request stays under way until the test kills this process
)
lanes = Lanes(config, DeliveryStats())
lanes.deliver([a_rating(3)])  # spooled, marked, handed to the loop, sent
print("handed over", flush=True)
time.sleep(3600)  # killed with SIGKILL by the test
"""


@pytest.fixture
def server() -> Iterator[EventsApiServer]:
    with EventsApiServer() as running:
        yield running


@pytest.fixture
def lane_set() -> Iterator[LaneSet]:
    made = LaneSet()
    yield made
    for lanes in made.made:
        lanes.shutdown(5)
        lanes.close_spool()


def rating_rows(spool_dir: Path) -> list[tuple[str, int]]:
    """(status, sending) of every ratings row in the directory's spool files."""
    found: list[tuple[str, int]] = []
    for path in sorted(spool_dir.glob("spool-*.db")):
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found += db.execute(
                "SELECT status, sending FROM events WHERE kind = 'ratings' ORDER BY seq"
            ).fetchall()
        finally:
            db.close()
    return found


def wait_until(done: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + LONG
    while not done():
        assert time.monotonic() < deadline, f"waited {LONG} s for {what}"
        time.sleep(0.02)


def test_a_rating_under_way_when_its_process_is_killed_is_never_sent_again(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    server.inject(Fault(delay_seconds=HELD_SECONDS), endpoint="ratings")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, str(script), server.base_url, str(spool_dir)],
        env=clean_env(PYTHONPATH=str(repo)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("handed over"), child.stderr.read() if child.stderr else line
        wait_until(lambda: server.peak_concurrency >= 1, "the rating's request to arrive")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=LONG)
    assert rating_rows(spool_dir) == [("pending", 1)]  # still pending, marked as under way

    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        adopter = lane_set.start(server, spool_dir)
        deliver_all(adopter, [an_event("after-the-kill")])
    assert server.wait_for_ratings(1, LONG)  # the held request, answered to nobody

    assert [rating["rating"] for rating in server.ratings] == [3]  # stored once
    assert [r.status for r in server.requests if r.path.endswith("/ratings")] == [200]
    assert [event["insertId"] for event in server.events] == ["after-the-kill"]
    assert adopter.stats.snapshot().get("ratings", {}).get("unconfirmed") == 1
    assert rating_rows(spool_dir) == []
    assert any("being sent when it ended" in r.getMessage() for r in caplog.records)


def test_a_rating_dropped_at_shutdown_before_it_was_sent_goes_with_the_next_process(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    spool_dir = tmp_path / "spool"
    # Declined (surely not stored), to be tried again in an hour: shutdown drops it unsent.
    server.inject(Fault(status=429, retry_after="3600"), endpoint="ratings")
    first = lane_set.start(server, spool_dir)
    first.deliver([a_rating(2)])
    wait_until(lambda: len(server.requests) == 1, "the declined request")
    wait_until(lambda: first.stats.snapshot().get("ratings", {}).get("retried"), "its retry")
    first.shutdown(0.5)
    assert first.close_spool() == 1
    assert rating_rows(spool_dir) == [("pending", 0)]  # kept, and no longer marked

    second = lane_set.start(server, spool_dir)
    deliver_all(second, [])
    assert [rating["rating"] for rating in server.ratings] == [2]
    assert second.stats.snapshot().get("ratings", {}).get("unconfirmed") == 0
    assert rating_rows(spool_dir) == []


def test_a_format_3_file_written_before_the_mark_existed_is_still_adopted(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    spool_dir = tmp_path / "spool"
    dead = Spool(spool_dir)
    dead.add([a_rating(5), an_event("old-1")])
    dead._db.execute("ALTER TABLE events DROP COLUMN sending")
    dead._db.commit()
    dead._lock_file.close()  # what the kernel does when a process dies

    adopter = lane_set.start(server, spool_dir)
    deliver_all(adopter, [])
    assert [rating["rating"] for rating in server.ratings] == [5]
    assert [event["insertId"] for event in server.events] == ["old-1"]
    assert not dead.path.exists()


def test_a_retried_rating_is_unmarked_while_it_waits_and_marked_again_before_it_goes(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    spool_dir = tmp_path / "spool"
    server.inject(Fault(status=429, retry_after="1"), endpoint="ratings")  # surely not stored
    server.inject(Fault(delay_seconds=3.0), endpoint="ratings")  # the retry, held a while
    lanes = lane_set.start(server, spool_dir)
    lanes.deliver([a_rating(4)])
    wait_until(lambda: lanes.stats.snapshot().get("ratings", {}).get("retried"), "its retry")
    lanes.deliver([])  # the worker's next cycle applies the loop's notes
    assert rating_rows(spool_dir) == [("pending", 0)]  # an adopter may send it: not stored

    def retry_marked_and_under_way() -> bool:
        lanes.deliver([])  # the worker's cycles: the mark is written, then the retry goes
        return rating_rows(spool_dir) == [("pending", 1)] and server.peak_concurrency >= 1

    wait_until(retry_marked_and_under_way, "the retry, marked, to be under way")
    assert server.wait_for_ratings(1, LONG)

    def settled() -> bool:
        lanes.deliver([])
        return rating_rows(spool_dir) == []

    wait_until(settled, "the sent rating's row to go")
    assert [rating["rating"] for rating in server.ratings] == [4]
    ratings = lanes.stats.snapshot().get("ratings", {})
    assert (ratings.get("sent"), ratings.get("retried"), ratings.get("unconfirmed")) == (1, 1, 0)


def test_a_rating_queued_behind_a_paused_endpoint_is_not_marked(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    spool_dir = tmp_path / "spool"
    server.inject(Fault(status=429, retry_after="3600"), endpoint="ratings")  # /ratings paused
    lanes = lane_set.start(server, spool_dir)
    lanes.deliver([a_rating(1)])
    wait_until(lambda: lanes.stats.snapshot().get("ratings", {}).get("retried"), "the pause")
    lanes.deliver([a_rating(2)])  # waits behind the pause, never sent
    lanes.deliver([])
    # Neither may have reached the API: a crash now leaves both to an adopter to send.
    assert rating_rows(spool_dir) == [("pending", 0), ("pending", 0)]
    assert [r.status for r in server.requests if r.path.endswith("/ratings")] == [429]


def test_a_spooled_rating_of_a_message_waits_for_the_messages_request(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    server.inject(Fault(status=503, retry_after="0"), times=3, endpoint="messages")
    lanes = lane_set.start(server, tmp_path / "spool")
    messages = a_messages_request("chat-3")
    rating = ApiRequest.rating(a_rating(5, conversation="chat-3").body, "eval", after=messages.key)
    deliver_all(lanes, [messages, rating])
    paths = [r.path.rsplit("/", 1)[-1] for r in server.requests]
    assert paths == ["messages"] * 4 + ["ratings"]  # the rating after the stored messages
    assert [r["rating"] for r in server.ratings] == [5]
