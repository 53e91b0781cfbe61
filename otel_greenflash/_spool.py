"""Durable spool: events persisted (sqlite3, WAL) before their first send, removed when settled.

One database file per process in the spool directory, each with a sidecar lock file held with
``flock`` for the life of the process. A file whose lock can be taken belongs to a process that
is gone (exited, crashed, SIGKILLed): its events are *adopted* — copied, with their insertIds,
into the adopting process's spool — and delivered first. The API deduplicates by insertId, so
an event delivered just before a crash and delivered again after it is kept once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ._event import BusinessEvent
from ._logging import logger

PENDING = "pending"
REJECTED = "rejected"
WAITING = "waiting"
"""Written as known so far while the event waits for its conversation id; replaced by the
final body when it stops waiting, sent as it is by whoever adopts the file after a crash."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    insert_id TEXT NOT NULL UNIQUE,
    span_name TEXT NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_format (version INTEGER NOT NULL);
"""
_FORMAT_VERSION = 1


class SpoolError(Exception):
    """The spool directory or a spool file cannot be used."""


@dataclass(frozen=True, slots=True)
class SpoolSummary:
    """What ``otel-greenflash spool inspect`` shows for one file."""

    path: Path
    pending: int
    rejected: int
    oldest_age_seconds: float | None
    owned_by_live_process: bool


class Spool:
    """This process's spool file. Used from the processor's worker thread only (one lock
    guards the connection anyway, for ``close`` from another thread)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_events: int = 100_000) -> None:
        self.directory = Path(directory)
        self.max_events = max_events
        self.evicted = 0
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        try:
            # Event bodies hold application data: readable by this user only.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            name = f"spool-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self.path = self.directory / f"{name}.db"
            self._lock_file = _hold_lock(self.directory / f"{name}.lock")
            previous_umask = os.umask(0o077)  # the WAL and shared-memory files inherit it
            try:
                self._db = _connect(self.path)
            finally:
                os.umask(previous_umask)
        except (OSError, sqlite3.Error) as error:
            raise SpoolError(f"cannot use spool directory {str(directory)!r}: {error}") from error

    # -- writes (worker thread) ------------------------------------------------------------

    def hold(self, events: Sequence[BusinessEvent]) -> None:
        """Persist events still waiting for their conversation id (not to be sent from here
        until :meth:`add` replaces them with their final body)."""
        if not events:
            return
        now = time.time()
        rows = [(e.insert_id, e.span_name, _encode(e), WAITING, now) for e in events]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO events (insert_id, span_name, body, status, created) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._waiting.update(event.insert_id for event in events)

    def add(self, events: Sequence[BusinessEvent], *, handed_over_up_to: int = 0) -> int:
        """Persist events (one transaction). Over the bound, rows already handed to the senders
        (``seq <= handed_over_up_to``, still held in memory) are evicted first, then the
        oldest others; return how many of those others (events now lost) were evicted."""
        if not events:
            return 0
        now = time.time()
        rows = [(e.insert_id, e.span_name, _encode(e), now) for e in events]
        replaced = [(e.insert_id, WAITING) for e in events if e.insert_id in self._waiting]
        with self._lock, self._db:
            if replaced:  # done waiting: the final body goes in as a new row, in today's order
                self._db.executemany(
                    "DELETE FROM events WHERE insert_id = ? AND status = ?", replaced
                )
                self._waiting.difference_update(insert_id for insert_id, _ in replaced)
            self._db.executemany(
                "INSERT OR IGNORE INTO events (insert_id, span_name, body, created) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            (count,) = self._db.execute("SELECT count(*) FROM events").fetchone()
            excess = count - self.max_events
            if excess <= 0:
                return 0
            deleted = self._db.execute(
                "DELETE FROM events WHERE seq IN "
                "(SELECT seq FROM events WHERE seq <= ? ORDER BY seq LIMIT ?)",
                (handed_over_up_to, excess),
            ).rowcount
            lost = max(0, excess - deleted)
            if lost:
                self._db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                    (lost,),
                )
            self.evicted += excess
            return int(lost)

    def remove(self, insert_ids: Iterable[str]) -> None:
        """Forget delivered events."""
        ids = [(insert_id,) for insert_id in insert_ids]
        if ids:
            with self._lock, self._db:
                self._db.executemany("DELETE FROM events WHERE insert_id = ?", ids)

    def set_aside(self, insert_ids: Iterable[str]) -> None:
        """Keep events the API refused for good, out of the delivery path (counted, inspectable)."""
        ids = [(REJECTED, insert_id) for insert_id in insert_ids]
        if ids:
            with self._lock, self._db:
                self._db.executemany("UPDATE events SET status = ? WHERE insert_id = ?", ids)

    # -- reads -------------------------------------------------------------------------------

    def pending_after(self, seq: int, limit: int) -> list[tuple[int, BusinessEvent]]:
        """Pending events after ``seq``, oldest first, with their numbers. A row that cannot
        be decoded (e.g. from a damaged adopted file) is set aside, not returned."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, insert_id, span_name, body FROM events "
                "WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?",
                (PENDING, seq, limit),
            ).fetchall()
        events: list[tuple[int, BusinessEvent]] = []
        damaged: list[str] = []
        for number, insert_id, span_name, body in rows:
            try:
                events.append((number, _decode(insert_id, span_name, body)))
            except (ValueError, TypeError):
                damaged.append(insert_id)
        if damaged:
            logger.warning("otel_greenflash spool: %d damaged row(s) set aside", len(damaged))
            self.set_aside(damaged)
        return events

    def last_seq(self) -> int:
        """The newest event's number (0 when the spool is empty)."""
        with self._lock:
            (seq,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(seq)

    def first_pending_seq(self) -> float:
        """The oldest pending event's number (infinity when none is pending)."""
        with self._lock:
            (seq,) = self._db.execute(
                "SELECT min(seq) FROM events WHERE status = ?", (PENDING,)
            ).fetchone()
        return math.inf if seq is None else int(seq)

    def release_after_fork(self) -> None:
        """In a forked child: let go of the parent's file without touching it."""
        with contextlib.suppress(OSError):
            self._lock_file.close()  # drops the child's reference; the parent keeps its lock

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return _counts(self._db)

    # -- adoption ----------------------------------------------------------------------------

    def adopt_orphans(self) -> int:
        """Take over the events of spool files whose process is gone; return how many."""
        adopted = 0
        for path in sorted(self.directory.glob("spool-*.db")):
            if path == self.path:
                continue
            lock_path = path.with_suffix(".lock")
            try:
                lock = _try_lock(lock_path)
            except OSError as error:
                logger.warning("otel_greenflash spool: cannot check %s (%s); skipped", path, error)
                continue
            if lock is None:
                continue  # a live process owns it
            try:
                if path.exists():
                    adopted += self._adopt(path)
                else:  # adopted by another process a moment ago: only our new lock file is left
                    with contextlib.suppress(OSError):
                        lock_path.unlink()
            finally:
                lock.close()
        return adopted

    def _adopt(self, path: Path) -> int:
        try:
            other = _connect_read_only(path)
        except (SpoolError, sqlite3.Error) as error:
            logger.warning(
                "otel_greenflash spool: %s is not a spool file this version can read (%s); "
                "left in place",
                path.name,
                error,
            )
            return 0
        try:
            rows = other.execute(
                "SELECT insert_id, span_name, body, status, created FROM events ORDER BY seq"
            ).fetchall()
        except sqlite3.Error as error:
            logger.warning("otel_greenflash spool: cannot read %s (%s); left in place", path, error)
            other.close()
            return 0
        other.close()
        # Their process is gone: events it held back waiting for a conversation id go as known.
        rows = [(*row[:3], PENDING if row[3] == WAITING else row[3], row[4]) for row in rows]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO events (insert_id, span_name, body, status, created) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        for leftover in (path, path.with_suffix(".lock"), *_wal_files(path)):
            with contextlib.suppress(OSError):
                leftover.unlink()
        with self._lock, self._db:  # the bound holds for adopted events too: the oldest go
            (count,) = self._db.execute("SELECT count(*) FROM events").fetchone()
            if count > self.max_events:
                self._db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                    (count - self.max_events,),
                )
                self.evicted += count - self.max_events
        pending = sum(1 for row in rows if row[3] == PENDING)
        if rows:
            logger.warning(
                "otel_greenflash spool: adopted %d undelivered event(s) left by an earlier "
                "process (%s)",
                pending,
                path.name,
            )
        return pending

    def close(self) -> None:
        """Close; delete the file when nothing is left in it (else the next process adopts it)."""
        with self._lock:
            try:
                pending, rejected = _counts(self._db)
                self._db.close()
            except sqlite3.Error:
                pending = rejected = 1
            if not pending and not rejected:
                for leftover in (self.path, *_wal_files(self.path)):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
            self._lock_file.close()
            if not pending and not rejected:
                with contextlib.suppress(OSError):
                    self.path.with_suffix(".lock").unlink()


def inspect(directory: str | os.PathLike[str]) -> list[SpoolSummary]:
    """Summaries of every spool file in ``directory`` (for the CLI)."""
    summaries = []
    for path in sorted(Path(directory).glob("spool-*.db")):
        lock = None
        with contextlib.suppress(OSError):
            lock = _try_lock(path.with_suffix(".lock"))
        try:
            db = _connect_read_only(path)
            pending, rejected = _counts(db)
            (oldest,) = db.execute(
                "SELECT min(created) FROM events WHERE status = ?", (PENDING,)
            ).fetchone()
            db.close()
        except (SpoolError, sqlite3.Error, TypeError):
            pending = rejected = -1
            oldest = None
        finally:
            if lock is not None:
                lock.close()
        age = time.time() - oldest if oldest is not None else None
        summaries.append(SpoolSummary(path, pending, rejected, age, lock is None))
    return summaries


def purge(directory: str | os.PathLike[str]) -> int:
    """Delete spool files no live process owns; return how many."""
    removed = 0
    for path in sorted(Path(directory).glob("spool-*.db")):
        try:
            lock = _try_lock(path.with_suffix(".lock"))
        except OSError as error:
            logger.warning("otel_greenflash spool: cannot check %s (%s); kept", path, error)
            continue
        if lock is None:
            continue
        try:
            for leftover in (path, *_wal_files(path), path.with_suffix(".lock")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            removed += 1
        finally:
            lock.close()
    return removed


def _connect(path: Path) -> sqlite3.Connection:
    """Create and open this process's own spool file."""
    db = sqlite3.connect(path, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO spool_format VALUES (?)", (_FORMAT_VERSION,))
        db.commit()
    except BaseException:
        db.close()
        raise
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open another process's file without changing it; check it is a spool of this format."""
    if not path.exists():
        raise SpoolError(f"{path} does not exist")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        row = db.execute("SELECT version FROM spool_format").fetchone()
        if row is None or row[0] != _FORMAT_VERSION:
            raise SpoolError(f"{path.name} is not a spool file of format {_FORMAT_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def _counts(db: sqlite3.Connection) -> tuple[int, int]:
    """Not yet delivered (waiting ones included), and refused."""
    rows = dict(db.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall())
    return int(rows.get(PENDING, 0)) + int(rows.get(WAITING, 0)), int(rows.get(REJECTED, 0))


def _hold_lock(path: Path) -> IO[bytes]:
    handle = open(path, "ab")  # noqa: SIM115 - held open for the life of the spool
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def _try_lock(path: Path) -> IO[bytes] | None:
    """The lock when nobody holds it (the owner is gone), else None."""
    handle = open(path, "ab")  # noqa: SIM115 - returned to the caller, who closes it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _wal_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _encode(event: BusinessEvent) -> bytes:
    return json.dumps(event.body, separators=(",", ":"), allow_nan=False).encode()


def _decode(insert_id: str, span_name: str, body: bytes) -> BusinessEvent:
    return BusinessEvent(json.loads(body), insert_id, span_name)
