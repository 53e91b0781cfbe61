"""Hardening of the data path: text the spool cannot store, values checked against their value
type, spool files killed while being created, and spool directories other users can write to.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from otel_greenflash import BusinessEvent
from otel_greenflash import attributes as attr
from otel_greenflash._event import InvalidAttribute
from otel_greenflash._lane.spool import Spool, purge
from otel_greenflash._lane.spool_files import hold_lock
from otel_greenflash._map.rules import MappingResult, map_event_attributes
from otel_greenflash.testing import EventsApiServer, validate_event_body
from tests.support.common import PRODUCT_ID
from tests.support.ports import free_port
from tests.support.processes import clean_env, command, run

REPLACEMENT = "\ufffd"
LOGGER = "otel_greenflash"


def mapped(attributes: Mapping[str, Any], *, source_name: str = "checkout") -> MappingResult:
    return map_event_attributes(
        attributes,
        source_name=source_name,
        insert_id="otel-0-0",
        time_ns=1_777_636_800_000_000_000,
        default_product_id=PRODUCT_ID,
    )


def body_of(attributes: Mapping[str, Any]) -> Mapping[str, object]:
    result = mapped(attributes)
    assert [problem.describe() for problem in result.invalid] == []
    (event,) = result.events
    assert validate_event_body(event.body) == []
    return event.body


def rejection_of(attributes: Mapping[str, Any]) -> InvalidAttribute:
    result = mapped(attributes)
    assert result.events == []
    (problem,) = result.invalid
    return problem


def event_attributes(**extra: Any) -> dict[str, Any]:
    return {attr.EVENT_TYPE: "upgrade", attr.EVENT_VALUE: "pro", **extra}


def stored_everywhere(text: str) -> None:
    """``text`` can go into SQLite and out as JSON any server decodes (no NUL, no surrogate)."""
    text.encode("utf-8")
    assert "\x00" not in text


# --- 1. text that is not valid Unicode ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("plain", "plain"),
        ("lone \udcff low", f"lone {REPLACEMENT} low"),
        ("lone \ud83d high", f"lone {REPLACEMENT} high"),
        ("nul \x00 inside", f"nul {REPLACEMENT} inside"),
        ("pair \ud83d\ude00 joined", "pair \U0001f600 joined"),  # what a JSON parser makes of it
        ("\x00", REPLACEMENT),
    ],
    ids=["clean", "low-surrogate", "high-surrogate", "nul", "surrogate-pair", "only-nul"],
)
def test_text_fields_carry_lone_surrogates_and_nul_as_the_replacement_character(
    raw: str, sent: str
) -> None:
    body = body_of(
        {
            attr.EVENT_TYPE: f"type {raw}",
            attr.EVENT_VALUE: raw,
            attr.CONVERSATION_EXTERNAL_ID: f"chat {raw}",
            attr.USER_EXTERNAL_ID: f"user {raw}",
            attr.ORGANIZATION_EXTERNAL_ID: f"org {raw}",
            attr.EVENT_PROPERTIES_PREFIX + f"key {raw}": f"value {raw}",
            attr.EVENT_PROPERTIES_PREFIX + "list": ("a", raw),
            attr.EVENT_PROPERTIES: json.dumps({f"json {raw}": {"nested": raw}}),
        }
    )
    assert body["eventType"] == f"type {sent}"
    assert body["value"] == sent
    assert body["externalConversationId"] == f"chat {sent}"
    assert body["externalUserId"] == f"user {sent}"
    assert body["externalOrganizationId"] == f"org {sent}"
    assert body["properties"] == {
        f"key {sent}": f"value {sent}",
        "list": ["a", sent],
        f"json {sent}": {"nested": sent},
    }
    stored_everywhere(json.dumps(body, ensure_ascii=False))


@pytest.mark.parametrize(
    "insert_id",
    ["order-" + chr(0xDCFF), "order-" + chr(0xD800), "order-\x00"],  # lone low, lone high, NUL
)
def test_a_custom_insert_id_that_is_not_clean_text_is_invalid_not_altered(insert_id: str) -> None:
    problem = rejection_of(event_attributes(**{attr.EVENT_INSERT_ID: insert_id}))
    assert problem.attribute == attr.EVENT_INSERT_ID
    assert "NUL or an unpaired surrogate" in problem.problem
    assert "order-" not in problem.describe()  # never the value


def test_a_custom_insert_id_with_a_surrogate_pair_is_sent_with_the_pair_joined() -> None:
    body = body_of(event_attributes(**{attr.EVENT_INSERT_ID: "order-\ud83d\ude00"}))
    assert body["insertId"] == "order-\U0001f600"


def test_span_names_are_kept_as_clean_text_in_events_and_problems() -> None:
    event = BusinessEvent({}, "otel-1", "span \udcff \x00")
    assert event.span_name == f"span {REPLACEMENT} {REPLACEMENT}"
    result = mapped({attr.EVENT_TYPE: "t"}, source_name="span \udcff")
    (problem,) = result.invalid
    assert problem.span_name == f"span {REPLACEMENT}"
    stored_everywhere(problem.describe())


EMITTER = r"""
import json, sys, time
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor

processor = GreenflashSpanProcessor(schedule_delay_seconds=0.05)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("app")
if sys.argv[1] == "emit":
    cases = [
        ("name \udcff \x00", {"greenflash.event.value": "v1"}),
        ("billing", {"greenflash.event.value": "v2 \udcff\x00"}),
        ("billing", {"greenflash.event.value": "v3", "greenflash.event.type": "type \x00"}),
        ("billing", {
            "greenflash.event.value": "v4",
            "greenflash.event.properties.key \udcff": "p \x00",
            "greenflash.event.properties": '{"json \\udcff": "\\u0000 x"}',
        }),
        ("billing", {
            "greenflash.event.value": "v5", "greenflash.conversation.external_id": "chat \udcff",
        }),
        ("\udcff", {"greenflash.event.value": "v6", "greenflash.event.insert_id": "order-\udcff"}),
        ("billing", {"greenflash.event.value": "v7", "greenflash.event.insert_id": "order-\x00"}),
        ("\udcff", {"greenflash.event.value": "v8", "greenflash.event.insert_id": "order-8"}),
    ]
    for name, attributes in cases:
        with tracer.start_as_current_span(name) as span:
            span.set_attributes({"greenflash.event.type": "upgrade", **attributes})
    with tracer.start_as_current_span("events \ud800") as span:
        span.add_event("greenflash.event", {
            "greenflash.event.type": "step", "greenflash.event.value": "v9 \ud800",
        })
    for index in range(50):  # after the bad ones: still spooled
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes({
                "greenflash.event.type": "upgrade", "greenflash.event.value": f"p{index}",
            })
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = processor.stats()
        if stats["spool"].get("pending", 0) + stats["sent"] + stats["invalid"] >= 59:
            break
        time.sleep(0.02)
    print(json.dumps(processor.stats()), flush=True)
    time.sleep(3600)  # killed with SIGKILL by the test
processor.force_flush(30000)
processor.shutdown(30000)
print(json.dumps(processor.stats()), flush=True)
"""


def start_emitter(tmp_path: Path, spool: Path, port: int, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "emitter.py"
    script.write_text(textwrap.dedent(EMITTER))
    env = clean_env(
        GREENFLASH_API_KEY="gf-local-test-key",
        GREENFLASH_BASE_URL=f"http://127.0.0.1:{port}/api/v1",
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_SPOOL_DIR=str(spool),
    )
    return subprocess.Popen(
        [sys.executable, str(script), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_text_the_spool_cannot_store_is_spooled_cleaned_and_survives_sigkill(
    tmp_path: Path,
) -> None:
    spool, port = tmp_path / "spool", free_port()
    first = start_emitter(tmp_path, spool, port, "emit")  # the API is down: all stay spooled
    assert first.stdout is not None
    assert first.stderr is not None
    line = first.stdout.readline()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    errors = first.stderr.read()
    assert line, errors
    stats = json.loads(line)
    assert stats["invalid"] == 2, errors  # the two insertIds that are not clean text
    assert stats["spool"] == {"pending": 57, "rejected": 0, "evicted": 0}, errors
    assert "spool failed" not in errors
    assert "spool disabled" not in errors
    assert attr.EVENT_INSERT_ID in errors  # said why those two were not sent
    (orphan,) = spool.glob("spool-*.db")
    with sqlite3.connect(f"{orphan.as_uri()}?mode=ro", uri=True) as db:
        names = {name for (name,) in db.execute("SELECT span_name FROM events")}
    assert names == {f"name {REPLACEMENT} {REPLACEMENT}", "billing", REPLACEMENT, "events \ufffd"}

    with EventsApiServer(port=port) as server:  # the API is back; the next process adopts
        second = start_emitter(tmp_path, spool, port, "deliver")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        events = {str(event["value"]): event for event in server.events}
        assert server.duplicates == 0
    sent = f"{REPLACEMENT}"
    assert sorted(events) == sorted(
        ["v1", f"v2 {sent}{sent}", "v3", "v4", "v5", "v8", f"v9 {sent}"]
        + [f"p{index}" for index in range(50)]
    )
    assert events["v3"]["eventType"] == f"type {sent}"
    assert events["v4"]["properties"] == {f"key {sent}": f"p {sent}", f"json {sent}": f"{sent} x"}
    assert events["v5"]["externalConversationId"] == f"chat {sent}"
    assert events["v8"]["insertId"] == "order-8"
    assert list(spool.glob("spool-*")) == []


# --- 2. values checked against their value type ---------------------------------------------

INVALID = None


@pytest.mark.parametrize(
    ("value_type", "value", "sent"),
    [
        ("currency", 149, "149.00"),
        ("currency", "149", "149.00"),
        ("currency", "149.5", "149.50"),
        ("currency", " 149.50 ", "149.50"),
        ("currency", "+3", "3.00"),
        ("currency", "-12.25", "-12.25"),
        ("currency", "12.345", "12.35"),
        ("currency", ".5", "0.50"),
        ("currency", "007", "7.00"),
        ("currency", 149.5, "149.50"),
        ("currency", -0.001, "0.00"),
        ("currency", "1" * 30, "1" * 30 + ".00"),
        ("currency", "1,000", INVALID),
        ("currency", "abc", INVALID),
        ("currency", "-", INVALID),
        ("currency", "", INVALID),
        ("currency", "NaN", INVALID),
        ("currency", "1e3", INVALID),
        ("currency", "1_000", INVALID),
        ("currency", "\u0661\u0664\u0669", INVALID),  # Arabic-Indic digits
        ("currency", float("nan"), INVALID),
        ("currency", float("inf"), INVALID),
        ("currency", True, INVALID),
        ("currency", ("1",), INVALID),
        ("numeric", 5, "5"),
        ("numeric", 2.5, "2.5"),
        ("numeric", "42", "42"),
        ("numeric", " -3.5 ", "-3.5"),
        ("numeric", "+5", "5"),
        ("numeric", ".5", "0.5"),
        ("numeric", "5.", "5"),
        ("numeric", "007", "7"),
        ("numeric", "1E6", "1e6"),
        ("numeric", "2.50e-3", "2.50e-3"),
        ("numeric", "abc", INVALID),
        ("numeric", "1,000", INVALID),
        ("numeric", "NaN", INVALID),
        ("numeric", "inf", INVALID),
        ("numeric", "0x10", INVALID),
        ("numeric", ".", INVALID),
        ("numeric", "e5", INVALID),
        ("numeric", "", INVALID),
        ("numeric", True, INVALID),
        ("numeric", float("-inf"), INVALID),
        ("count", 3, "3"),
        ("count", 0, "0"),
        ("count", "42", "42"),
        ("count", " +7 ", "7"),
        ("count", "007", "7"),
        ("count", -1, INVALID),
        ("count", "-1", INVALID),
        ("count", "1.5", INVALID),
        ("count", 1.5, INVALID),
        ("count", True, INVALID),
        ("count", "abc", INVALID),
        ("boolean", True, "true"),
        ("boolean", False, "false"),
        ("boolean", "TRUE", "true"),
        ("boolean", " False ", "false"),
        ("boolean", "yes", INVALID),
        ("boolean", "1", INVALID),
        ("boolean", 1, INVALID),
        ("boolean", 0, INVALID),
        ("boolean", "", INVALID),
        ("text", "premium plan", "premium plan"),
        ("text", "", ""),
        ("text", 5, "5"),
        ("text", True, "true"),
        ("text", 2.5, "2.5"),
        ("text", float("nan"), INVALID),
    ],
)
def test_value_is_checked_against_its_value_type_and_sent_in_one_form(
    value_type: str, value: object, sent: str | None
) -> None:
    attributes = {attr.EVENT_TYPE: "e", attr.EVENT_VALUE: value, attr.EVENT_VALUE_TYPE: value_type}
    if sent is INVALID:
        problem = rejection_of(attributes)
        assert problem.attribute == attr.EVENT_VALUE
        described = problem.describe()
        assert f"for value type {value_type}" in described  # what is allowed for that type
        if isinstance(value, str) and len(value.strip()) >= 3:
            assert value.strip() not in described  # never the value
    else:
        body = body_of(attributes)
        assert body["value"] == sent
        assert body["valueType"] == ("numeric" if value_type == "count" else value_type)


def test_a_mismatch_is_described_by_kind_never_by_value() -> None:
    problem = rejection_of(
        {attr.EVENT_TYPE: "e", attr.EVENT_VALUE: "1,234", attr.EVENT_VALUE_TYPE: "Currency"}
    )
    assert problem.problem == "is a string that is not a decimal amount"
    assert problem.allowed.startswith("for value type currency: a number, or a decimal string")
    negative = rejection_of(
        {attr.EVENT_TYPE: "e", attr.EVENT_VALUE: -2, attr.EVENT_VALUE_TYPE: "count"}
    )
    assert negative.problem == "is a negative number for value type count"


def test_cli_send_writes_currency_with_two_decimals_and_refuses_a_malformed_amount() -> None:
    env = clean_env(GREENFLASH_PRODUCT_ID=PRODUCT_ID)
    send = [command("otel-greenflash"), "send", "upgrade_purchased"]
    result = run([*send, "149", "--value-type", "currency", "--dry-run"], env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["value"], body["valueType"]) == ("149.00", "currency")

    refused = run([*send, "1,000", "--value-type", "currency", "--dry-run"], env)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "invalid:" in refused.stderr
    assert attr.EVENT_VALUE in refused.stderr
    assert "1,000" not in refused.stderr


# --- 3. a spool file killed while it was being created --------------------------------------

KILLED_WHILE_CREATING = """
import os, signal, sqlite3, sys
target = sys.argv[2]
connect = sqlite3.connect


def killing_connect(*args, **kwargs):
    db = connect(*args, **kwargs)
    def trace(statement):
        if target in statement:
            os.kill(os.getpid(), signal.SIGKILL)
    db.set_trace_callback(trace)
    return db


sqlite3.connect = killing_connect
from otel_greenflash._lane.spool import Spool
Spool(sys.argv[1])
"""


@pytest.fixture
def spool_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        yield caplog


def start_and_stop(directory: Path) -> int:
    """What a process does with the spool directory at start (then it exits cleanly)."""
    spool = Spool(directory)
    adopted = spool.adopt_orphans()
    spool.close()
    return adopted


@pytest.mark.parametrize(
    "statement",
    ["PRAGMA journal_mode", "CREATE TABLE IF NOT EXISTS events", "INSERT INTO spool_format"],
    ids=["empty-file", "half-schema", "no-format-row"],
)
def test_a_spool_file_killed_while_being_created_is_removed_at_the_next_start_only(
    tmp_path: Path, statement: str, spool_warnings: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED_WHILE_CREATING))
    killed = run([sys.executable, str(script), str(directory), statement], clean_env())
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = sorted(path.name for path in directory.iterdir())
    assert any(name.endswith(".lock") for name in leftovers)
    assert len(leftovers) >= 2, leftovers  # the lock and the file being created

    assert start_and_stop(directory) == 0
    assert list(directory.iterdir()) == []  # file, lock, journal/WAL files: all gone
    first_start = [record.getMessage() for record in spool_warnings.records]
    assert len(first_start) == 1, first_start
    assert "creation was interrupted" in first_start[0]

    spool_warnings.clear()
    assert start_and_stop(directory) == 0
    assert spool_warnings.records == []  # said once, not at every start


def test_an_interrupted_creation_by_an_earlier_version_is_removed_too(
    tmp_path: Path, spool_warnings: pytest.LogCaptureFixture
) -> None:
    """What the version before the atomic creation left when killed: the spool file itself,
    empty or holding the schema without its format row."""
    (tmp_path / "spool-1-aaaaaaaaaaaa.db").write_bytes(b"")
    (tmp_path / "spool-1-aaaaaaaaaaaa.lock").write_bytes(b"")
    with sqlite3.connect(tmp_path / "spool-2-bbbbbbbbbbbb.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, x TEXT)")
        db.execute("CREATE TABLE spool_format (version INTEGER NOT NULL)")
    db.close()
    assert start_and_stop(tmp_path) == 0
    assert list(tmp_path.iterdir()) == []
    assert sum("creation was interrupted" in r.getMessage() for r in spool_warnings.records) == 2


def test_a_file_that_is_not_an_abandoned_creation_is_still_left_in_place(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "spool-3-cccccccccccc.db") as db:
        db.execute("CREATE TABLE orders (id INTEGER)")  # someone else's database
    db.close()
    (tmp_path / "spool-4-dddddddddddd.db").write_bytes(b"this is not sqlite" * 100)
    start_and_stop(tmp_path)
    assert (tmp_path / "spool-3-cccccccccccc.db").exists()
    assert (tmp_path / "spool-4-dddddddddddd.db").exists()


# --- 4. spool directory trust ---------------------------------------------------------------

OTHER_UID = 12345


def spool_event(insert_id: str) -> BusinessEvent:
    body = {"eventType": "t", "productId": PRODUCT_ID, "value": "1", "insertId": insert_id}
    return BusinessEvent(body, insert_id, "span")


def dead_spool(directory: Path, insert_id: str) -> Spool:
    """A spool file whose process died with one undelivered event in it (left in its WAL:
    keep the object referenced, or closing its connection checkpoints and removes the WAL)."""
    dead = Spool(directory)
    dead.add([spool_event(insert_id)])
    dead._lock_file.close()  # what the kernel does when a process dies
    return dead


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
@pytest.mark.parametrize("foreign", [".db", ".db-wal", ".lock"])
def test_files_of_another_user_are_never_adopted_nor_deleted(
    tmp_path: Path, foreign: str, spool_warnings: pytest.LogCaptureFixture
) -> None:
    theirs = dead_spool(tmp_path, "theirs")
    path = theirs.path
    owned_by_other = path.with_name(path.stem + foreign)
    os.chown(owned_by_other, OTHER_UID, OTHER_UID)
    mine = dead_spool(tmp_path, "mine").path

    adopter = Spool(tmp_path)
    assert adopter.adopt_orphans() == 1
    assert [event.key for _, event in adopter.pending_after(0, 10)] == ["mine"]
    adopter.close()
    assert path.exists()
    assert owned_by_other.exists()
    assert not mine.exists()
    warnings = [r.getMessage() for r in spool_warnings.records if "not owned" in r.getMessage()]
    assert len(warnings) == 1
    assert path.name in warnings[0]

    purge(tmp_path)  # the CLI's purge keeps them too
    assert path.exists()
    assert owned_by_other.exists()
    theirs._db.close()


def test_a_symlink_in_the_spool_directory_is_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    target = dead_spool(elsewhere, "elsewhere").path
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    (directory / target.name).symlink_to(target)
    adopter = Spool(directory)
    assert adopter.adopt_orphans() == 0
    adopter.close()
    assert target.exists()


def test_lock_spool_and_wal_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: new files would be 0644
    try:
        spool = Spool(tmp_path / "spool")
        spool.add([spool_event("private")])
        modes = {
            path.name[len(spool.path.stem) :]: path.stat().st_mode & 0o777
            for path in (tmp_path / "spool").iterdir()
        }
        spool.close()
    finally:
        os.umask(previous)
    assert modes == {".db": 0o600, ".db-wal": 0o600, ".db-shm": 0o600, ".lock": 0o600}


@pytest.mark.parametrize(("mode", "warned"), [(0o777, True), (0o1777, False), (0o700, False)])
def test_a_directory_other_users_can_write_to_is_warned_about(
    tmp_path: Path, mode: int, warned: bool, spool_warnings: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    Spool(directory).close()
    messages = [
        r.getMessage() for r in spool_warnings.records if "writable by other" in r.getMessage()
    ]
    assert len(messages) == (1 if warned else 0)


def test_a_lock_file_left_alone_by_a_crash_is_removed(tmp_path: Path) -> None:
    (tmp_path / "spool-5-eeeeeeeeeeee.lock").write_bytes(b"")
    start_and_stop(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_file_being_created_by_a_live_process_is_left_alone(tmp_path: Path) -> None:
    held = hold_lock(tmp_path / "spool-6-ffffffffffff.lock")  # a live process's lock
    creating = tmp_path / "spool-6-ffffffffffff.creating"
    creating.write_bytes(b"")
    start_and_stop(tmp_path)
    assert creating.exists()
    assert creating.with_suffix(".lock").exists()
    held.close()  # that process died
    start_and_stop(tmp_path)
    assert list(tmp_path.iterdir()) == []
