"""Durable spool: events persisted (sqlite3, WAL) before their first send, removed when settled.

One database file per process in the spool directory, each with a sidecar lock file held with
``flock`` for the life of the process. A file whose lock can be taken belongs to a process that
is gone (exited, crashed, SIGKILLed): its events are *adopted* — copied, with their insertIds,
into the adopting process's spool — and delivered first. The API deduplicates by insertId, so
an event delivered just before a crash and delivered again after it is kept once.

A spool file is built under a temporary name (``.creating``) and renamed into place once its
schema is committed, so a crash while it is created leaves no half-made ``spool-*.db``; the
next adoption scan removes what such a crash leaves. Only regular files owned by this
process's user are ever adopted (or deleted): a shared directory may hold anyone's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import stat
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
_SPOOL_TABLES = frozenset(("events", "spool_format", "sqlite_sequence"))
_CREATING = ".creating"
"""Suffix of a spool file while it is created (renamed to ``.db`` when ready)."""
_MAX_NAMES_SHOWN = 5


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
        self.duplicates = 0
        """Events not stored because an event with their insertId is in the spool already."""
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        try:
            # Event bodies hold application data: readable by this user only.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _warn_if_shared(self.directory)
            name = f"spool-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self.path = self.directory / f"{name}.db"
            self._lock_file = _hold_lock(self.directory / f"{name}.lock")
            try:
                self._db = _create(self.path)
            except BaseException:
                _remove(self.path.with_suffix(".lock"))
                self._lock_file.close()
                raise
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
        with self._lock:
            with self._db:
                if replaced:  # done waiting: the final body goes in as a new row, in order
                    self._db.executemany(
                        "DELETE FROM events WHERE insert_id = ? AND status = ?", replaced
                    )
                inserted = self._db.executemany(
                    "INSERT OR IGNORE INTO events (insert_id, span_name, body, created) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                ).rowcount
                lost = self._evict_over_bound(handed_over_up_to)
            # An insertId the spool already holds is the same event for the API: one row.
            self.duplicates += len(rows) - max(0, inserted)
            # Only once committed: a failed batch keeps its waiting rows for a retry.
            self._waiting.difference_update(insert_id for insert_id, _ in replaced)
        return lost

    def _evict_over_bound(self, handed_over_up_to: int) -> int:
        """Waiting rows are bounded by max_waiting and still held in memory: never evicted."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM events WHERE status != ?", (WAITING,)
        ).fetchone()
        excess = count - self.max_events
        if excess <= 0:
            return 0
        deleted = self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
            "WHERE seq <= ? AND status != ? ORDER BY seq LIMIT ?)",
            (handed_over_up_to, WAITING, excess),
        ).rowcount
        lost = max(0, excess - deleted)
        if lost:
            self._db.execute(
                "DELETE FROM events WHERE seq IN "
                "(SELECT seq FROM events WHERE status != ? ORDER BY seq LIMIT ?)",
                (WAITING, lost),
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
            except (ValueError, TypeError, RecursionError):
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
        """Take over the events of spool files whose process is gone; return how many.

        Files another user owns (or that are not regular files) are skipped, never read or
        deleted; what a crash during a file's creation left behind is removed."""
        adopted = 0
        foreign: list[str] = []
        for path in sorted(self.directory.glob("spool-*.db")):
            if path == self.path:
                continue
            if not _own_files(path):
                foreign.append(path.name)
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
                    _remove(lock_path)
            finally:
                lock.close()
        foreign.extend(self._remove_interrupted_creations())
        if foreign:
            shown = ", ".join(foreign[:_MAX_NAMES_SHOWN])
            more = len(foreign) - _MAX_NAMES_SHOWN
            logger.warning(
                "otel_greenflash spool: %d file(s) in %s not owned by this user (uid %d) or not "
                "regular files were left alone, never adopted: %s%s",
                len(foreign),
                self.directory,
                os.geteuid(),
                shown,
                f" and {more} more" if more > 0 else "",
            )
        return adopted

    def _remove_interrupted_creations(self) -> list[str]:
        """Remove files a crash left while creating a spool file (a ``.creating`` file, or a
        lock file alone) whose process is gone; return the names of foreign ones skipped."""
        foreign: list[str] = []
        removed: list[str] = []
        for path in sorted(self.directory.glob(f"spool-*{_CREATING}")):
            if not _own_files(path):
                foreign.append(path.name)
                continue
            lock = _try_own_lock(path.with_suffix(".lock"))
            if lock is None:
                continue  # being created right now by a live process
            try:
                if path.exists():  # else: renamed into place a moment ago, by its last owner
                    _remove(path, *_sidecars(path), path.with_suffix(".lock"))
                    removed.append(path.name)
            finally:
                lock.close()
        for lock_path in sorted(self.directory.glob("spool-*.lock")):
            if lock_path.with_suffix(".db").exists() or lock_path.with_suffix(_CREATING).exists():
                continue
            lock = _try_own_lock(lock_path)
            if lock is None:
                continue
            try:  # a lock file alone: its process died before creating its file
                if not lock_path.with_suffix(".db").exists():
                    _remove(lock_path)
            finally:
                lock.close()
        if removed:
            logger.warning(
                "otel_greenflash spool: removed %d spool file(s) whose creation was interrupted "
                "by a crash (they held no events): %s",
                len(removed),
                ", ".join(removed[:_MAX_NAMES_SHOWN]),
            )
        return foreign

    def _adopt(self, path: Path) -> int:
        try:
            other = _connect_read_only(path)
        except (SpoolError, sqlite3.Error) as error:
            if _abandoned_creation(path):
                _remove(path, *_sidecars(path), path.with_suffix(".lock"))
                logger.warning(
                    "otel_greenflash spool: removed %s, a spool file whose creation was "
                    "interrupted by a crash (it held no events)",
                    path.name,
                )
                return 0
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
                "SELECT min(created) FROM events WHERE status IN (?, ?)", (PENDING, WAITING)
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
    """Delete spool files no live process owns (files of other users are kept); return how
    many."""
    removed = 0
    for path in sorted(Path(directory).glob("spool-*.db")):
        if not _own_files(path):
            logger.warning("otel_greenflash spool: %s is not this user's file; kept", path)
            continue
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


def _create(path: Path) -> sqlite3.Connection:
    """Create and open this process's own spool file, atomically: the file is made (mode
    0600, never an existing file or a symlink), given its schema and format row, and closed
    under a temporary name, then renamed to ``path``. A crash before the rename leaves only the
    temporary file, which the next adoption scan removes."""
    creating = path.with_suffix(_CREATING)
    os.close(os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600))
    try:
        db = sqlite3.connect(creating)  # its journal and WAL files copy the file's mode
        try:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
            with db:
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO spool_format VALUES (?)", (_FORMAT_VERSION,))
        finally:
            db.close()  # the last connection: checkpoints and deletes the WAL
        os.replace(creating, path)
    except BaseException:
        _remove(creating, *_sidecars(creating))
        raise
    db = sqlite3.connect(path, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
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


_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
"""Never open a spool directory entry through a symlink, nor leak it to a child process."""
_LOCK_ATTEMPTS = 100


def _open_lock_file(path: Path) -> IO[bytes]:
    """Open (creating it 0600 if needed) a lock file; never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _OPEN_FLAGS, 0o600)
    return os.fdopen(fd, "ab")


def _hold_lock(path: Path) -> IO[bytes]:
    """This process's lock, held for the life of the spool. An adoption scan removes a lock
    file it finds free and alone, which may be ours between its creation and the ``flock``:
    then the lock is on a removed file, and taken again on a new one."""
    for _ in range(_LOCK_ATTEMPTS):
        handle = _open_lock_file(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        except BaseException:
            handle.close()
            raise
        handle.close()
    raise OSError(f"{path.name} keeps being removed while it is locked")


def _try_lock(path: Path) -> IO[bytes] | None:
    """The lock when nobody holds it (the owner is gone), else None."""
    handle = _open_lock_file(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _try_own_lock(path: Path) -> IO[bytes] | None:
    """:func:`_try_lock` for a lock file that is this user's regular file; None otherwise
    (also when it cannot be opened)."""
    if not _own_files(path):
        return None
    try:
        return _try_lock(path)
    except OSError:
        return None


def _wal_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _sidecars(path: Path) -> tuple[Path, Path, Path]:
    """The files SQLite may keep next to a database: WAL, shared memory, rollback journal."""
    return (*_wal_files(path), path.with_name(path.name + "-journal"))


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _own_files(path: Path) -> bool:
    """True when ``path`` and every file SQLite or the lock keeps beside it are regular files
    owned by this process's user (missing ones are fine). Anything else may hold another
    user's events or be a trap: it is never adopted, sent under this process's key, or
    deleted."""
    uid = os.geteuid()
    for candidate in (path, *_sidecars(path), path.with_suffix(".lock")):
        try:
            status = os.lstat(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if not stat.S_ISREG(status.st_mode) or status.st_uid != uid:
            return False
    return True


def _abandoned_creation(path: Path) -> bool:
    """True when ``path`` (its lock held by the caller) is a spool file an earlier version
    was killed while creating: empty, or holding no more than this library's tables, all
    empty. Nothing in it was ever an event; anything else is left for a person to look at."""
    try:
        if path.stat().st_size == 0 and not any(
            sidecar.exists() and sidecar.stat().st_size > 0 for sidecar in _sidecars(path)
        ):
            return True
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return False
    try:
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables <= _SPOOL_TABLES:
            return False
        return not any(
            db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608 - fixed names
            for table in sorted(tables & {"events", "spool_format"})
        )
    except sqlite3.Error:
        return False
    finally:
        db.close()


def _warn_if_shared(directory: Path) -> None:
    """One warning when other users can replace or delete files in the spool directory."""
    try:
        status = directory.stat()
    except OSError:
        return
    writable_by_others = status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not status.st_mode & stat.S_ISVTX:
        problem = (
            f"is writable by other users (mode {stat.S_IMODE(status.st_mode):04o}, no sticky bit)"
        )
    elif status.st_uid not in (os.geteuid(), 0):
        problem = f"belongs to another user (uid {status.st_uid})"
    else:
        return
    logger.warning(
        "otel_greenflash spool directory %s %s: they can remove or replace spool files "
        "(files not owned by this user are never adopted); use a directory only this user "
        "can write to, e.g. mode 0700",
        directory,
        problem,
    )


def _encode(event: BusinessEvent) -> bytes:
    return json.dumps(event.body, separators=(",", ":"), allow_nan=False).encode()


def _decode(insert_id: str, span_name: str, body: bytes) -> BusinessEvent:
    return BusinessEvent(json.loads(body), insert_id, span_name)
