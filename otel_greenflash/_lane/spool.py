"""Durable spool: events persisted (sqlite3, WAL) before their first send, removed when settled.

One database file per process in the spool directory, each with a sidecar lock file held with
``flock`` for the life of the process (see :mod:`.spool_files`). A file whose lock can be
taken belongs to a process that is gone (exited, crashed, SIGKILLed): its events are *adopted*
— moved, with their insertIds, into the adopting process's spool — and delivered first, at
start and by live processes every 30 s or so (see :mod:`.spool_adoption`); only files
written for the same API key and endpoint are adopted (see :mod:`.spool_destination`). The
API deduplicates by insertId, so an event delivered just before a crash and delivered again
after it is kept once.

A spool file is built under a temporary name (``.creating``) and renamed into place once its
schema is committed, so a crash while it is created leaves no half-made ``spool-*.db``; the
next adoption scan removes what such a crash leaves. Only regular files owned by this
process's user are ever adopted (or deleted): a shared directory may hold anyone's files.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import json
import math
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._event import ApiRequest, BusinessEvent, DeliveryItem, Endpoint
from .._logging import logger
from . import spool_destination as _spool_destination
from .spool_adoption import OrphanAdopter
from .spool_destination import Destination, DestinationCheck, shown_endpoint
from .spool_files import CREATED_FORMAT as _CREATED_FORMAT
from .spool_files import CREATING as _CREATING
from .spool_files import PENDING, REJECTED, WAITING, SpoolError, close_lock_file
from .spool_files import UPGRADE_SQL as _UPGRADE_SQL
from .spool_files import connect_read_only as _connect_read_only
from .spool_files import hold_lock as _hold_lock
from .spool_files import open_create_exclusive as _open_create_exclusive
from .spool_files import own_files as _own_files
from .spool_files import remove as _remove
from .spool_files import sidecars as _sidecars
from .spool_files import try_lock as _try_lock
from .spool_files import wal_files as _wal_files
from .spool_files import warn_if_shared as _warn_if_shared

__all__ = ["PENDING", "REJECTED", "WAITING", "Spool", "SpoolError", "SpoolSummary"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    insert_id TEXT NOT NULL UNIQUE,
    span_name TEXT NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'events',
    sending INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS spool_format (version INTEGER NOT NULL);
"""
"""Format 3 (a new file says format 2 until it holds a messages or ratings row). Each row
is one request: ``kind`` is its endpoint (``events``, ``messages``, ``ratings``; files of
formats 1 and 2 hold events only), ``insert_id`` its key (an event's insertId; the key of a
messages or ratings request, see :class:`.._event.ApiRequest`). ``sending`` is 1 on a
ratings row from just before its first request until it settles: a process adopting the file
after a crash counts such a rating unconfirmed and never sends it (it may have been stored).
Format-3 files written before the column existed are adopted as unmarked."""


_SQLITE_FULL = 13
PROBE_BYTES = 64 * 1024
"""Free space a full filesystem must have again before writes to the spool resume."""
_FULL_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT))


def disk_full(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the spool's filesystem has no room left:
    SQLite's ``SQLITE_FULL`` or an ``ENOSPC`` / ``EDQUOT`` from the OS. That passes once space
    is freed; other errors of the file or the disk do not."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)  # Python 3.11+
            if code is not None and code & 0xFF == _SQLITE_FULL:
                return True
            if code is None and "database or disk is full" in str(seen):
                return True
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        seen = seen.__cause__
    return False


@dataclass(frozen=True, slots=True)
class SpoolSummary:
    """What ``otel-greenflash spool inspect`` shows for one file."""

    path: Path
    pending: int
    rejected: int
    oldest_age_seconds: float | None
    owned_by_live_process: bool
    endpoint: str | None = None
    """The scheme, host and port its events go to (None: not recorded, or unreadable)."""


class Spool:
    """This process's spool file. Used from the processor's worker thread only (one lock
    guards the connection anyway, for ``close`` from another thread)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_events: int = 100_000,
        destination: Destination | None = None,
    ) -> None:
        """``destination``: this process's endpoint and key, recorded in the file (only files
        recorded for the same are adopted); None only where no key is in play (tests)."""
        self.directory = Path(directory)
        self.max_events = max_events
        self.evicted = 0
        """Events evicted by the bound (handed-over ones too); messages and ratings requests
        are counted in :attr:`evicted_requests` when they were lost."""
        self.duplicates = 0
        """Events not stored because an event with their insertId is in the spool already."""
        self.duplicate_requests: collections.Counter[Endpoint] = collections.Counter()
        """Messages requests not stored because the same request (its key) is in already."""
        self.evicted_requests: collections.Counter[Endpoint] = collections.Counter()
        """Unsent messages and ratings requests evicted by the bound (``add`` returns events
        only); the feed takes and counts them."""
        self._waiting: set[str] = set()
        self._holds_requests = False
        """The file is format 3 already (it took a messages or ratings row; an adopted one
        makes it so too, see :mod:`.spool_adoption`)."""
        self._lock = threading.Lock()
        try:
            # Event bodies hold application data: readable by this user only.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _warn_if_shared(self.directory)
            name = f"spool-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self.path = self.directory / f"{name}.db"
            self._lock_file = _hold_lock(self.directory / f"{name}.lock")
            try:
                self._db = _create(self.path, destination)
                self._inode = os.stat(self.path).st_ino
            except BaseException:
                _remove(self.path.with_suffix(".lock"))
                close_lock_file(self._lock_file)
                raise
        except (OSError, sqlite3.Error) as error:
            raise SpoolError(f"cannot use spool directory {str(directory)!r}: {error}") from error
        self._adopter = OrphanAdopter(self.directory, self.path, DestinationCheck(destination))

    # -- writes (worker thread) ------------------------------------------------------------

    def hold(self, events: Sequence[BusinessEvent]) -> None:
        """Persist events still waiting for their conversation id (not to be sent from here
        until :meth:`add` replaces them with their final body)."""
        if not events:
            return
        now = time.time()
        rows = [(e.key, e.span_name, _encode(e), WAITING, now, e.endpoint.value) for e in events]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO events (insert_id, span_name, body, status, created, kind) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        self._waiting.update(event.key for event in events)

    def add(self, events: Sequence[DeliveryItem], *, handed_over_up_to: int = 0) -> int:
        """Persist items (one transaction). Over the bound, rows already handed to the senders
        (``seq <= handed_over_up_to``, still held in memory) are evicted first, then the
        oldest others; return how many of those others that were events (now lost) were
        evicted (the others are in :attr:`evicted_requests`)."""
        if not events:
            return 0
        now = time.time()
        runs = [  # consecutive items of one endpoint: one statement each, rows in order
            (kind, [(e.key, e.span_name, _encode(e), now, kind.value) for e in run])
            for kind, run in itertools.groupby(events, key=lambda e: e.endpoint)
        ]
        replaced = [(e.key, WAITING) for e in events if e.key in self._waiting]
        with self._lock:
            inserted: list[int] = []
            with self._db:
                if replaced:  # done waiting: the final body goes in as a new row, in order
                    self._db.executemany(
                        "DELETE FROM events WHERE insert_id = ? AND status = ?", replaced
                    )
                if not self._holds_requests and any(k is not Endpoint.EVENTS for k, _ in runs):
                    self._db.execute(_UPGRADE_SQL)  # with its first messages or ratings row
                for _, rows in runs:
                    inserted.append(
                        self._db.executemany(
                            "INSERT OR IGNORE INTO events "
                            "(insert_id, span_name, body, created, kind) VALUES (?, ?, ?, ?, ?)",
                            rows,
                        ).rowcount
                    )
                lost = self._evict_over_bound(handed_over_up_to)
            self._holds_requests = self._holds_requests or any(
                k is not Endpoint.EVENTS for k, _ in runs
            )
            # A key the spool already holds is the same request for the API: one row.
            for (kind, rows), count in zip(runs, inserted, strict=True):
                repeated = len(rows) - max(0, count)
                if kind is Endpoint.EVENTS:
                    self.duplicates += repeated
                elif repeated:
                    self.duplicate_requests[kind] += repeated
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
        handed_over = "SELECT seq FROM events WHERE seq <= ? AND status != ? ORDER BY seq LIMIT ?"
        (handed_over_events,) = self._db.execute(
            f"SELECT count(*) FROM events WHERE seq IN ({handed_over}) AND kind = ?",  # noqa: S608 - fixed text
            (handed_over_up_to, WAITING, excess, Endpoint.EVENTS.value),
        ).fetchone()
        deleted = self._db.execute(
            f"DELETE FROM events WHERE seq IN ({handed_over})",  # noqa: S608 - fixed text
            (handed_over_up_to, WAITING, excess),
        ).rowcount
        lost = max(0, excess - deleted)
        lost_events = lost
        if lost:
            oldest = "SELECT seq FROM events WHERE status != ? ORDER BY seq LIMIT ?"
            for kind, count in self._db.execute(
                f"SELECT kind, count(*) FROM events WHERE seq IN ({oldest}) GROUP BY kind",  # noqa: S608 - fixed text
                (WAITING, lost),
            ).fetchall():
                endpoint = _endpoint(kind)
                if endpoint is not Endpoint.EVENTS:
                    self.evicted_requests[endpoint] += int(count)
                    lost_events -= int(count)
            self._db.execute(f"DELETE FROM events WHERE seq IN ({oldest})", (WAITING, lost))  # noqa: S608 - fixed text
        self.evicted += int(handed_over_events) + int(lost_events)
        return int(lost_events)

    def holds_waiting(self, insert_id: str) -> bool:
        """True when the event is spooled as waiting (its final body not written yet)."""
        return insert_id in self._waiting

    def remove(self, insert_ids: Iterable[str]) -> None:
        """Forget delivered events."""
        ids = [(insert_id,) for insert_id in insert_ids]
        if ids:
            with self._lock, self._db:
                self._db.executemany("DELETE FROM events WHERE insert_id = ?", ids)
            self._waiting.difference_update(insert_id for (insert_id,) in ids)

    def mark_sending(self, keys: Iterable[str], sending: bool = True) -> None:
        """Persist (committed) that these ratings' requests may go out from now on, or, with
        ``sending=False``, that they surely were not stored and may be sent again."""
        rows = [(int(sending), key) for key in keys]
        if rows:
            with self._lock, self._db:
                self._db.executemany("UPDATE events SET sending = ? WHERE insert_id = ?", rows)

    def take_adopted_unconfirmed(self) -> int:
        """Ratings that adoption found marked as sending (not moved: their process may have
        sent them) since the last call."""
        return self._adopter.take_unconfirmed()

    def set_aside(self, insert_ids: Iterable[str]) -> None:
        """Keep events the API refused for good, out of the delivery path (counted, inspectable)."""
        ids = [(REJECTED, insert_id) for insert_id in insert_ids]
        if ids:
            with self._lock, self._db:
                self._db.executemany("UPDATE events SET status = ? WHERE insert_id = ?", ids)

    def probe_write(self) -> None:
        """Raise what a write raises now (e.g. ``ENOSPC`` while the filesystem is full).

        Rewriting a page of the spool proves little: SQLite writes it into room its files
        already have. So ``PROBE_BYTES`` of fresh data go to a nameless file in the spool's
        directory first (written and synced: the filesystem must find new blocks for them),
        then one write transaction goes to the spool."""
        with tempfile.TemporaryFile(dir=self.directory, prefix=".probe-") as scratch:
            scratch.write(os.urandom(PROBE_BYTES))  # random: nothing to compress
            scratch.flush()
            os.fsync(scratch.fileno())
        with self._lock, self._db:
            self._db.execute("UPDATE spool_format SET version = version")

    # -- reads -------------------------------------------------------------------------------

    def file_present(self) -> bool:
        """False once this process's spool file is gone from its directory (deleted, or the
        directory removed): what is written then is lost with the process."""
        try:
            return os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def pending_after(self, seq: int, limit: int) -> list[tuple[int, DeliveryItem]]:
        """Pending items after ``seq``, oldest first, with their numbers. A row that cannot
        be decoded (e.g. from a damaged adopted file) is set aside, not returned."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, insert_id, span_name, body, kind FROM events "
                "WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?",
                (PENDING, seq, limit),
            ).fetchall()
        events: list[tuple[int, DeliveryItem]] = []
        damaged: list[str] = []
        for number, insert_id, span_name, body, kind in rows:
            try:
                events.append((number, _decode(insert_id, span_name, body, kind)))
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

    def pending_ids_through(self, seq: int) -> list[str]:
        """The insertIds of pending events numbered ``seq`` or lower."""
        with self._lock:
            rows = self._db.execute(
                "SELECT insert_id FROM events WHERE status = ? AND seq <= ?", (PENDING, seq)
            ).fetchall()
        return [insert_id for (insert_id,) in rows]

    def release_after_fork(self) -> None:
        """In a forked child: let go of the parent's file without touching it."""
        with contextlib.suppress(OSError):
            self._lock_file.close()  # drops the child's reference; the parent keeps its lock

    def counts(self) -> tuple[int, int]:
        """Rows of every kind (what the bound counts) not yet delivered (waiting ones
        included), and refused."""
        with self._lock:
            return _counts(self._db)

    def counts_of(self, kind: Endpoint) -> tuple[int, int]:
        """Like :meth:`counts`, for the rows of ``kind`` only."""
        with self._lock:
            return _counts(self._db, kind)

    # -- adoption ----------------------------------------------------------------------------

    def adopt_orphans(self) -> int:
        """Take over the rows of spool files whose process is gone and that were written
        for this spool's destination; return how many pending events came in (messages and
        ratings requests are not counted; see :mod:`.spool_adoption`)."""
        return self._adopter.adopt(self._db, self._lock, self.max_events)

    def adopt_orphans_when_due(self) -> int:
        """One step of the periodic scan (a few batches, see :mod:`.spool_adoption`) while
        one is under way or due (else 0, at once); return how many pending events it moved.
        Never raises: a scan that fails is said and tried again at the next one."""
        adopter = self._adopter
        if not adopter.scanning and not adopter.schedule.due(time.monotonic()):
            return 0
        try:
            return adopter.step(self._db, self._lock, self.max_events)
        except Exception as error:  # a chore of the worker: whatever the disk says, it goes on
            adopter.schedule.scanned(time.monotonic())
            logger.warning("otel_greenflash spool: looking for orphaned files failed: %s", error)
            return 0

    @property
    def adopting(self) -> bool:
        """True while a periodic scan is under way: its next step is due at once."""
        return self._adopter.scanning

    def close(self) -> None:
        """Close; delete the file when nothing is left in it (else the next process adopts it)."""
        self._adopter.close()  # an orphan being moved keeps the rest for a later scan
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
            close_lock_file(self._lock_file)
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
        endpoint = None
        try:
            db = _connect_read_only(path)
            try:
                pending, rejected = _counts(db)
                (oldest,) = db.execute(
                    "SELECT min(created) FROM events WHERE status IN (?, ?)", (PENDING, WAITING)
                ).fetchone()
                recorded = _spool_destination.read(db)
            finally:
                db.close()
            if recorded is not None:
                endpoint = shown_endpoint(recorded.endpoint)
        except (SpoolError, sqlite3.Error, TypeError):
            pending = rejected = -1
            oldest = None
        finally:
            if lock is not None:
                close_lock_file(lock)
        age = time.time() - oldest if oldest is not None else None
        summaries.append(SpoolSummary(path, pending, rejected, age, lock is None, endpoint))
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
            close_lock_file(lock)
    return removed


_WAL_BYTES = 1024 * 1024
_WAL_PAGES = _WAL_BYTES // 4096


def _create(path: Path, destination: Destination | None) -> sqlite3.Connection:
    """Create and open this process's own spool file, atomically: the file is made (mode
    0600, never an existing file or a symlink), given its schema, format row and destination
    record, and closed under a temporary name, then renamed to ``path``. A crash before the
    rename leaves only the temporary file, which the next adoption scan removes.

    Its pages can be given back to the filesystem (incremental auto-vacuum), so a process
    adopting it after a crash shrinks it as it moves its events out."""
    recorded = _spool_destination.record(destination) if destination is not None else None
    creating = path.with_suffix(_CREATING)
    _open_create_exclusive(creating)
    try:
        db = sqlite3.connect(creating)  # its journal and WAL files copy the file's mode
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before any table exists
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
            with db:
                db.executescript(_SCHEMA + _spool_destination.SCHEMA)
                db.execute("INSERT INTO spool_format VALUES (?)", (_CREATED_FORMAT,))
                if recorded is not None:
                    _spool_destination.write(db, recorded)
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
        # At most 1 MiB of pages waits in the WAL (and the WAL file is cut back to 1 MiB once
        # written back): what an adopter must write into the file before it can shrink it.
        db.execute(f"PRAGMA wal_autocheckpoint={_WAL_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={_WAL_BYTES}")
    except BaseException:
        db.close()
        raise
    return db


def _counts(db: sqlite3.Connection, kind: Endpoint | None = None) -> tuple[int, int]:
    """Not yet delivered (waiting ones included), and refused (rows of ``kind``, or all)."""
    if kind is None:
        query = db.execute("SELECT status, count(*) FROM events GROUP BY status")
    else:
        query = db.execute(
            "SELECT status, count(*) FROM events WHERE kind = ? GROUP BY status", (kind.value,)
        )
    rows = dict(query.fetchall())
    return int(rows.get(PENDING, 0)) + int(rows.get(WAITING, 0)), int(rows.get(REJECTED, 0))


def _encode(event: DeliveryItem) -> bytes:
    return json.dumps(event.body, separators=(",", ":"), allow_nan=False).encode()


def _endpoint(kind: object) -> Endpoint:
    """A row's endpoint (raises ValueError for a kind this version does not know)."""
    return Endpoint(kind)


def _decode(key: str, span_name: str, body: bytes, kind: object) -> DeliveryItem:
    endpoint = _endpoint(kind)
    decoded = json.loads(body)
    if not isinstance(decoded, dict):
        raise ValueError("a spooled body is not a JSON object")
    if endpoint is Endpoint.EVENTS:
        return BusinessEvent(decoded, key, span_name)
    return ApiRequest(endpoint, decoded, key, span_name)
