"""Spool files stay with their destination: an orphan is adopted only by a process with the
same API key and events endpoint; others are warned about and kept for their owner."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from otel_greenflash import BusinessEvent
from otel_greenflash._lane.spool import Spool, inspect
from otel_greenflash._lane.spool_destination import Destination, normalized_endpoint
from otel_greenflash.testing import EventsApiServer
from tests.support import spool_emitter as app
from tests.support.gateway_harness import Gateway
from tests.support.independent_receiver import Receiver
from tests.support.ports import free_port
from tests.support.processes import clean_env, command, run

KEY_A = "gf-tenant-a-0123456789abcdef"
KEY_B = "gf-tenant-b-fedcba9876543210"


def event(insert_id: str) -> BusinessEvent:
    body = {"eventType": "t", "productId": app.PRODUCT_ID, "value": "1", "insertId": insert_id}
    return BusinessEvent(body, insert_id, "span")


def orphan(directory: Path, destination: Destination | None, *insert_ids: str) -> Path:
    """A spool file whose process ended with undelivered events in it."""
    spool = Spool(directory, destination=destination)
    spool.add([event(insert_id) for insert_id in insert_ids])
    path = spool.path
    spool._db.close()
    spool._lock_file.close()  # what the kernel does when a process dies
    return path


def test_a_spool_left_by_another_tenant_is_kept_for_it_not_sent_with_our_key(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    port_a = free_port()
    first = app.start(spool, KEY_A, f"http://127.0.0.1:{port_a}/api/v1", "50", "a", "hang")
    app.wait_ready(first)  # tenant A's API is down: its 50 events wait in the spool
    app.kill(first)

    with EventsApiServer(api_key=KEY_B) as tenant_b:  # another key, another endpoint
        other = app.start(spool, KEY_B, tenant_b.base_url, "0", "b", "exit")
        _, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        assert tenant_b.events == []  # before: all 50 of tenant A's events, under key B
    assert f"50 undelivered event(s) written for http://127.0.0.1:{port_a}" in err
    assert KEY_A not in err
    assert KEY_B not in err
    kept = [summary for summary in inspect(spool) if summary.pending == 50]
    assert len(kept) == 1
    assert kept[0].endpoint == f"http://127.0.0.1:{port_a}"
    shown = run([command("otel-greenflash"), "spool", "inspect", str(spool)], clean_env())
    assert "50 pending, 0 rejected, oldest" in shown.stdout
    assert f"for http://127.0.0.1:{port_a}" in shown.stdout

    with EventsApiServer(api_key=KEY_A, port=port_a) as tenant_a:  # its owner comes back
        owner = app.start(spool, KEY_A, tenant_a.base_url, "0", "a", "exit")
        _, err = owner.communicate(timeout=120)
        assert owner.returncode == 0, err
        assert sorted(e["value"] for e in tenant_a.events) == sorted(f"a{i}" for i in range(50)), (
            err
        )
    assert list(spool.glob("spool-*.db")) == []


@pytest.mark.parametrize(
    ("written_for", "why"),
    [
        (Destination("https://api.example.test/v1/events", "key-a"), "under another API key"),
        (Destination("https://staging.example.test/v1/events", "key-b"), "staging"),
        (Destination("https://api.example.test/v2/events", "key-b"), "another path"),
    ],
    ids=["other-key", "other-host", "other-path"],
)
def test_only_the_same_key_and_endpoint_adopt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, written_for: Destination, why: str
) -> None:
    ours = Destination("https://api.example.test/v1/events", "key-b")
    theirs = orphan(tmp_path, written_for, "t1", "t2")
    mine = orphan(tmp_path, Destination("HTTPS://API.example.test:443/v1/events/", "key-b"), "m1")
    adopter = Spool(tmp_path, destination=ours)
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        assert adopter.adopt_orphans() == 1
        assert adopter.adopt_orphans() == 0  # the next scan: nothing new, and not said again
    assert [e.key for _, e in adopter.pending_after(0, 10)] == ["m1"]
    assert theirs.exists()
    assert not mine.exists()
    kept = [r.getMessage() for r in caplog.records if theirs.name in r.getMessage()]
    assert len(kept) == 1, kept
    assert "2 undelivered event(s)" in kept[0]
    assert why in kept[0]
    assert "key-a" not in caplog.text
    assert "key-b" not in caplog.text
    adopter.close()

    owner = Spool(tmp_path, destination=written_for)
    assert owner.adopt_orphans() == 2
    assert not theirs.exists()
    owner.close()


def spool_files(directory: Path) -> list[Path]:
    """Every file of the spool directory: databases, their WAL and shared memory, locks."""
    return sorted(path for path in directory.iterdir() if path.is_file())


def test_the_file_records_no_key_only_a_salted_check(tmp_path: Path) -> None:
    key = "gf-secret-key-0123456789"
    endpoint = "https://api.example.test/v1/events"
    live = Spool(tmp_path, destination=Destination(endpoint, key))
    live.add([event("live")])  # open, with its WAL and shared memory beside it
    seen = spool_files(tmp_path)
    assert any(path.name.endswith("-wal") for path in seen), seen
    for path in seen:
        assert key.encode() not in path.read_bytes(), path.name
    live.close()
    paths = [orphan(tmp_path, Destination(endpoint, key), "e")]
    paths.append(orphan(tmp_path, Destination(endpoint, key), "f"))
    for path in spool_files(tmp_path):
        assert key.encode() not in path.read_bytes(), path.name
    checks = []
    for path in paths:
        with sqlite3.connect(path) as db:
            checks.append(db.execute("SELECT salt, key_check FROM destination").fetchone())
        db.close()
    assert checks[0][0] != checks[1][0]  # a salt per file
    assert checks[0][1] != checks[1][1]  # so the same key gives different checks
    assert "secret" not in repr(Destination("https://x.test/events", key))


def test_the_file_records_no_query_or_user_of_the_endpoint(tmp_path: Path) -> None:
    written = "https://robot:pass-0123@api.example.test/v1/events?token=tok-0123456789"
    spool = Spool(tmp_path, destination=Destination(written, "k"))
    spool.add([event("q")])
    for path in spool_files(tmp_path):  # while open: the database, its WAL, the lock
        content = path.read_bytes()
        assert b"tok-0123456789" not in content, path.name  # before: in the main file
        assert b"pass-0123" not in content, path.name
    with sqlite3.connect(f"{spool.path.as_uri()}?mode=ro", uri=True) as db:
        (stored,) = db.execute("SELECT endpoint FROM destination").fetchone()
    db.close()
    assert stored == "https://api.example.test/v1/events"
    spool._db.close()
    spool._lock_file.close()  # its process is gone
    # The query still tells destinations apart: it is checked with the key, not stored.
    other_query = Spool(tmp_path, destination=Destination(written.replace("tok-", "x-"), "k"))
    assert other_query.adopt_orphans() == 0
    other_query.close()
    same = Spool(tmp_path, destination=Destination(written, "k"))
    assert same.adopt_orphans() == 1
    same.close()


def test_files_written_before_destinations_were_recorded_are_adopted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "spool-1-aaaaaaaaaaaa.db"
    with sqlite3.connect(old) as db:  # what the previous version wrote (format 1)
        db.executescript(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, insert_id TEXT NOT NULL"
            " UNIQUE, span_name TEXT NOT NULL, body BLOB NOT NULL, status TEXT NOT NULL DEFAULT"
            " 'pending', created REAL NOT NULL);"
            "CREATE TABLE spool_format (version INTEGER NOT NULL);"
            "INSERT INTO spool_format VALUES (1);"
        )
        db.execute(
            "INSERT INTO events (insert_id, span_name, body, created) VALUES (?, ?, ?, 0)",
            ("old-1", "span", b'{"eventType":"t","insertId":"old-1"}'),
        )
    db.close()
    adopter = Spool(tmp_path, destination=Destination("https://api.example.test/v1/events", "k"))
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        assert adopter.adopt_orphans() == 1
    assert "did not record its API key and endpoint" in caplog.text
    assert not old.exists()
    adopter.close()


def test_endpoints_compare_as_urls() -> None:
    assert normalized_endpoint("HTTPS://Api.Example.test:443/v1/events/") == (
        "https://api.example.test/v1/events"
    )
    assert normalized_endpoint("http://127.0.0.1:80/v1/events") == "http://127.0.0.1/v1/events"
    assert normalized_endpoint("http://[::1]:8080/v1/events") == "http://[::1]:8080/v1/events"
    assert normalized_endpoint("https://a.test/v1/events") != normalized_endpoint(
        "https://a.test/v2/events"
    )
    assert normalized_endpoint("https://u:p@a.test/v1/events?t=1#f") == ("https://a.test/v1/events")


def test_the_gateway_adopts_only_its_own_tenants_orphans(tmp_path: Path) -> None:
    spool = tmp_path / "gateway-spool"
    with Receiver() as receiver:
        ours = Destination(normalized_endpoint(receiver.events_url), receiver.api_key)
        theirs = orphan(spool, Destination(ours.endpoint, KEY_A), "theirs-1", "theirs-2")
        orphan(spool, ours, "ours-1", "ours-2")
        with Gateway(receiver, spool) as gateway:
            assert receiver.wait_until(lambda: len(receiver.accepted) >= 2, timeout=30)
            gateway.stop()
            output = gateway.output()
        assert sorted(receiver.accepted_insert_ids) == ["ours-1", "ours-2"]
    assert theirs.exists()
    assert "2 undelivered event(s) written for http://127.0.0.1" in output
    assert KEY_A not in output
    assert receiver.api_key not in output
