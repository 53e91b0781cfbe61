"""The spool carries events, messages and ratings requests (format 3 records each row's
endpoint), still adopts and delivers the events of a file written by the version before it
(format 2), and never sends an unconfirmed rating again. Real SQLite files, real HTTP to the
local server."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_greenflash import GreenflashConfig
from otel_greenflash._event import DeliveryItem, Endpoint
from otel_greenflash._lane import spool_destination
from otel_greenflash._lane.lanes import Lanes
from otel_greenflash._lane.spool import Spool
from otel_greenflash._lane.spool_destination import Destination
from otel_greenflash._lane.spool_files import FORMAT_VERSION
from otel_greenflash._stats import DeliveryStats
from otel_greenflash.testing import EventsApiServer, Fault
from tests.support.api_requests import a_messages_request, a_rating, an_event
from tests.support.common import PRODUCT_ID

FORMAT_2_FILE = Path(__file__).parent / "data" / "spool-format-2.db"
"""Written by the spool of the version before format 3 (commit ec38ce2), as a process killed
before delivering: events ``format2-1`` to ``-3`` pending, ``-4`` waiting for its
conversation id, ``-5`` set aside (refused). Its destination was ``http://127.0.0.1:9``."""
LONG = 60.0


@pytest.fixture
def server() -> Iterator[EventsApiServer]:
    with EventsApiServer() as running:
        yield running


class LaneSet:
    """Lanes with a spool aimed at a server; shut down and closed at the end of the test."""

    def __init__(self) -> None:
        self.made: list[Lanes] = []

    def start(self, server: EventsApiServer, spool_dir: Path, **settings: object) -> Lanes:
        config = GreenflashConfig.resolve(
            {},
            api_key=server.api_key,
            base_url=server.base_url,
            product_id=PRODUCT_ID,
            spool_dir=str(spool_dir),
            **settings,
        )
        lanes = Lanes(config, DeliveryStats())
        self.made.append(lanes)
        return lanes


@pytest.fixture
def lane_set() -> Iterator[LaneSet]:
    made = LaneSet()
    yield made
    for lanes in made.made:
        lanes.shutdown(5)
        lanes.close_spool()


def deliver_all(lanes: Lanes, items: list[DeliveryItem]) -> None:
    """Hand ``items`` to the lanes as the worker does, and wait until each is settled."""

    def worker_round(_: float) -> bool:
        lanes.deliver([])  # the worker's round: notes applied, spooled items handed on
        return True

    lanes.deliver(items)
    assert lanes.flush(LONG, worker_round)


def rows(path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT kind, insert_id, status FROM events ORDER BY seq").fetchall()
    finally:
        db.close()


# --------------------------------------------------------------------------- the file


def test_items_of_every_kind_come_back_from_the_spool_as_they_went_in(tmp_path: Path) -> None:
    items: list[DeliveryItem] = [a_messages_request(), an_event("e-1"), a_rating(3)]
    spool = Spool(tmp_path)
    try:
        spool.add(items)
        back = [item for _, item in spool.pending_after(0, 10)]
        assert [(item.endpoint, item.key, dict(item.body)) for item in back] == [
            (item.endpoint, item.key, dict(item.body)) for item in items
        ]
        assert [item.span_name for item in back] == [item.span_name for item in items]
        assert [kind for kind, _, _ in rows(spool.path)] == ["messages", "events", "ratings"]
        (version,) = spool._db.execute("SELECT version FROM spool_format").fetchone()
        assert version == FORMAT_VERSION == 3
    finally:
        spool.close()


def test_the_same_messages_request_is_spooled_once_and_counted_under_messages(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    try:
        spool.add([a_messages_request(), a_rating(), a_rating()])
        spool.add([a_messages_request()])  # the same ids: the same request
        assert spool.duplicate_requests == {Endpoint.MESSAGES: 1}
        assert spool.duplicates == 0  # events only
        assert len(spool.pending_after(0, 10)) == 3  # two equal ratings are two ratings
    finally:
        spool.close()


def test_evicted_requests_are_counted_under_their_endpoint(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=2)
    try:
        lost = spool.add([a_rating(1), an_event("e-1"), a_messages_request(), a_rating(2)])
        assert lost == 1  # the event
        assert spool.evicted_requests == {Endpoint.RATINGS: 1}
        assert [kind for kind, _, _ in rows(spool.path)] == ["messages", "ratings"]
    finally:
        spool.close()


def test_a_row_of_a_kind_this_version_does_not_know_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        spool.add([an_event("e-1"), an_event("e-2")])
        with spool._db:
            spool._db.execute("UPDATE events SET kind = 'surveys' WHERE insert_id = 'e-1'")
        assert [item.key for _, item in spool.pending_after(0, 10)] == ["e-2"]
        assert spool.counts() == (1, 1)
    finally:
        spool.close()


# --------------------------------------------------------------------------- through the lanes


def test_events_messages_and_ratings_go_through_the_spool_to_their_endpoints(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    lanes = lane_set.start(server, tmp_path / "spool")
    deliver_all(lanes, [an_event("e-1"), a_messages_request(), a_rating(4)])

    assert [event["insertId"] for event in server.events] == ["e-1"]
    assert len(server.conversation("chat-1").messages) == 2
    assert [rating["rating"] for rating in server.ratings] == [4]
    assert lanes.spool_counts() == {"pending": 0, "rejected": 0, "evicted": 0}
    snapshot = lanes.stats.snapshot()
    assert snapshot["sent"] == 1
    assert snapshot.get("messages", {}).get("sent") == 1
    assert snapshot.get("ratings", {}).get("sent") == 1


def test_an_unconfirmed_rating_leaves_the_spool_and_is_never_sent_again(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    server.inject(Fault(lose_response=True), endpoint="ratings")
    # Failed items are tried again after 0.5 s: an unconfirmed rating must not be among them.
    lanes = lane_set.start(server, tmp_path / "spool", export_timeout_seconds=0.5)
    deliver_all(lanes, [a_rating(2)])
    time.sleep(1.0)
    lanes.deliver([])  # a round of the worker: anything left pending would go out again
    assert lanes.flush(LONG, lambda _: True)

    assert [rating["rating"] for rating in server.ratings] == [2]
    assert len(server.requests) == 1
    assert lanes.spool_counts() == {"pending": 0, "rejected": 0, "evicted": 0}
    assert lanes.stats.snapshot().get("ratings", {}).get("unconfirmed") == 1


def test_a_rating_the_api_declined_stays_spooled_until_it_is_stored_once(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    server.inject(Fault(status=503, retry_after="0"), times=3, endpoint="ratings")
    lanes = lane_set.start(server, tmp_path / "spool")
    deliver_all(lanes, [a_rating(5), an_event("e-1")])
    assert [rating["rating"] for rating in server.ratings] == [5]
    assert [r.status for r in server.requests if r.path.endswith("ratings")] == [503] * 3 + [200]
    assert lanes.spool_counts() == {"pending": 0, "rejected": 0, "evicted": 0}


# --------------------------------------------------------------------------- the format before


def test_a_spool_file_of_the_version_before_still_delivers_its_events(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    orphan = spool_dir / "spool-4242-0123456789ab.db"
    shutil.copyfile(FORMAT_2_FILE, orphan)
    orphan.chmod(0o600)
    db = sqlite3.connect(orphan)  # written for another port: recorded again for this server
    with db:
        (version,) = db.execute("SELECT version FROM spool_format").fetchone()
        assert version == 2
        columns = [column[1] for column in db.execute("PRAGMA table_info(events)")]
        assert "kind" not in columns
        db.execute("DELETE FROM destination")
        config = GreenflashConfig.resolve(
            {}, api_key=server.api_key, base_url=server.base_url, product_id=PRODUCT_ID
        )
        spool_destination.write(db, spool_destination.record(Destination.of(config)))
    db.close()

    lanes = lane_set.start(server, spool_dir)
    deliver_all(lanes, [an_event("new-1")])

    sent = sorted(event["insertId"] for event in server.events)
    assert sent == ["format2-1", "format2-2", "format2-3", "format2-4", "new-1"]
    assert all(request.path.endswith("/events") for request in server.requests)
    assert not orphan.exists()  # emptied into ours
    assert lanes.spool_counts() == {"pending": 0, "rejected": 1, "evicted": 0}
    own = lanes.feed.spool
    assert own is not None
    assert rows(own.path) == [("events", "format2-5", "rejected")]


# --------------------------------------------------------------------------- rolling back


def format_of(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (version,) = db.execute("SELECT version FROM spool_format").fetchone()
        return int(version)
    finally:
        db.close()


def columns_of(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {column[1] for column in db.execute("PRAGMA table_info(events)")}
    finally:
        db.close()


def test_a_file_holding_events_only_stays_readable_by_the_version_before(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        spool.add([an_event("e-1")])
        spool.hold([an_event("e-2")])
        assert format_of(spool.path) == 2  # the version before adopts it
        # Extra columns only (the version before selects columns by name).
        assert columns_of(spool.path) == columns_of(FORMAT_2_FILE) | {"kind", "sending"}
    finally:
        spool.close()


def test_a_file_becomes_format_3_with_its_first_messages_or_ratings_row(tmp_path: Path) -> None:
    for first in (a_rating(1), a_messages_request()):
        spool = Spool(tmp_path / first.endpoint.value)
        try:
            spool.add([an_event("e-1")])
            assert format_of(spool.path) == 2
            spool.add([an_event("e-2"), first])
            assert format_of(spool.path) == FORMAT_VERSION == 3
            spool.add([an_event("e-3")])
            assert format_of(spool.path) == 3
        finally:
            spool.close()


def test_adopting_a_rating_makes_the_adopter_file_format_3(tmp_path: Path) -> None:
    dead = Spool(tmp_path)
    dead.add([a_rating(1)])
    dead._db.close()
    dead._lock_file.close()  # its process is gone
    adopter = Spool(tmp_path)
    try:
        assert format_of(adopter.path) == 2
        adopter.adopt_orphans()
        assert not dead.path.exists()
        assert [kind for kind, _, _ in rows(adopter.path)] == ["ratings"]
        assert format_of(adopter.path) == 3
    finally:
        adopter.close()


# --------------------------------------------------------------------------- stats()["spool"]


def test_the_spool_stats_count_events_only(
    tmp_path: Path, server: EventsApiServer, lane_set: LaneSet
) -> None:
    # Declined for an hour: the rating stays pending in the spool while the event is sent.
    server.inject(Fault(status=429, retry_after="3600"), endpoint="ratings")
    lanes = lane_set.start(server, tmp_path / "spool")
    lanes.deliver([a_rating(1), an_event("e-1"), a_messages_request()])
    spool = lanes.feed.spool
    assert spool is not None
    deadline = time.monotonic() + LONG
    while [kind for kind, _, _ in rows(spool.path)] != ["ratings"]:  # the others are sent
        assert time.monotonic() < deadline, rows(spool.path)
        lanes.deliver([])  # the worker's round: notes applied
        time.sleep(0.02)

    assert lanes.spool_counts() == {"pending": 0, "rejected": 0, "evicted": 0}
    assert spool.counts() == (1, 0)  # the rating, pending


def test_evictions_of_messages_and_ratings_are_not_counted_as_evicted_events(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, max_events=1)
    try:
        spool.add([a_rating(1), an_event("e-1")])  # the rating is evicted, unsent
        assert spool.evicted == 0
        spool.add([a_messages_request()], handed_over_up_to=spool.last_seq())  # the event goes
        assert spool.evicted == 1
        assert spool.evicted_requests == {Endpoint.RATINGS: 1}
        assert spool.counts_of(Endpoint.EVENTS) == (0, 0)
        assert spool.counts() == (1, 0)  # the bound counts rows of every kind
    finally:
        spool.close()


# --------------------------------------------------------------------------- the adoption log


def test_the_adoption_log_names_the_kinds_it_adopted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Spool(tmp_path)
    dead.add([an_event("e-1"), a_rating(1), an_event("e-2"), a_messages_request(), a_rating(2)])
    dead._db.close()
    dead._lock_file.close()  # its process is gone
    adopter = Spool(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            assert adopter.adopt_orphans() == 2  # events: what stats()["queued"] counts
        adopted = [r.getMessage() for r in caplog.records if "adopted" in r.getMessage()]
        assert len(adopted) == 1
        assert (
            "adopted 2 undelivered event(s), 1 Messages API request(s) and 2 rating(s) left by "
            "an earlier process" in adopted[0]
        )
    finally:
        adopter.close()


def test_the_adoption_log_says_which_ratings_it_did_not_take(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Spool(tmp_path)
    sending, waiting = a_rating(1), a_rating(2)
    dead.add([sending, waiting])
    dead.mark_sending([sending.key])  # handed to its loop: it may have been sent
    dead._db.close()
    dead._lock_file.close()
    adopter = Spool(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
            assert adopter.adopt_orphans() == 0
        assert adopter.take_adopted_unconfirmed() == 1
        assert adopter.take_adopted_unconfirmed() == 0  # counted once
        assert [key for _, key, _ in rows(adopter.path)] == [waiting.key]
        adopted = [r.getMessage() for r in caplog.records if "adopted" in r.getMessage()]
        assert len(adopted) == 1
        assert "adopted 0 undelivered event(s) and 1 rating(s) left by" in adopted[0]
        assert "1 rating(s) it was sending were not taken" in adopted[0]
    finally:
        adopter.close()
