"""Adoption: taking over the events of spool files whose process is gone.

A file whose lock can be taken belongs to a process that exited, crashed or was SIGKILLed. Its
events are *moved* into the adopting process's spool in bounded batches (insert a batch into
ours and commit, delete it from the orphan and commit, give the orphan's freed pages back to
the filesystem), so adopting never needs the orphan's size again in free space: our file grows
by about what the orphan shrinks. A crash between the two commits leaves an event in both
files; the adopter's spool keeps one row per insertId, and the API deduplicates by insertId.
Only what fits under the adopter's bound is moved (nothing it holds is evicted for it): the rest
waits in its file for a later scan.

Only files written for this process's API key and endpoint are adopted (see
:mod:`.spool_destination`); others are reported once and kept for their owner. A whole scan
runs when the spool opens; then about every 30 s (``ORPHAN_SCAN_SECONDS``, ±20 %) a scan runs
in steps, one per worker cycle (at most ``STEP_BATCHES`` batches, none started after
``STEP_SECONDS``), so live processes take over the files of neighbours that died beside them
while the worker keeps taking the application's records. Between steps the orphan being moved
stays locked; a forked child lets go of it (and draws its own scan times).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from .._logging import logger
from .spool_destination import DestinationCheck, Match, read, shown_endpoint
from .spool_files import (
    CREATING,
    PENDING,
    UPGRADE_SQL,
    WAITING,
    SpoolError,
    abandoned_creation,
    close_lock_file,
    connect_read_only,
    own_files,
    remove,
    sidecars,
    try_lock,
    try_own_lock,
    wal_files,
)

ORPHAN_SCAN_SECONDS = 30.0
"""How often a live process looks for orphaned files (each wait drawn within ±20 %)."""
ENV_SCAN_SECONDS = "_GREENFLASH_SPOOL_ORPHAN_SCAN_SECONDS"
"""Private (for tests): another scan period, in seconds (0.05 to 3600)."""
BATCH_ROWS = 256
BATCH_BYTES = 64 * 1024
"""A batch moves at most this many rows, and stops after the row that passes this many bytes."""
STEP_BATCHES = 4
STEP_SECONDS = 0.05
"""A periodic scan's step (one per worker cycle) moves at most this many batches, and starts
none after this many seconds."""
_MAX_NAMES_SHOWN = 5


class _Adopters:
    """The adopters of this process, and what a forked child keeps of its parent's scans."""

    def __init__(self) -> None:
        self.jitter = random.Random()  # noqa: S311 - spreads scans, not a secret; leaves random's state alone
        self.live: weakref.WeakSet[OrphanAdopter] = weakref.WeakSet()
        self.left_with_parent: list[sqlite3.Connection] = []
        """In a forked child: the parent's connections to orphans it was moving, never used or
        closed here (closing one could write to a file the parent is still changing)."""


_adopters = _Adopters()


def scan_period(environ: Mapping[str, str] | None = None) -> float:
    """The scan period: :data:`ORPHAN_SCAN_SECONDS` unless the private variable sets one."""
    raw = (os.environ if environ is None else environ).get(ENV_SCAN_SECONDS, "")
    try:
        seconds = float(raw)
    except ValueError:
        return ORPHAN_SCAN_SECONDS
    return seconds if 0.05 <= seconds <= 3600 else ORPHAN_SCAN_SECONDS


class ScanSchedule:
    """When the next scan is due: a period, each wait drawn within ±20 % of it (processes
    started together do not scan together)."""

    def __init__(self, period: float, now: float) -> None:
        self.period = period
        self.next_at = self._after(now)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def scanned(self, now: float) -> None:
        self.next_at = self._after(now)

    def _after(self, now: float) -> float:
        return now + self.period * _adopters.jitter.uniform(0.8, 1.2)


class _Budget:
    """What one step of a scan may do: at most ``batches`` batches, none started once
    ``seconds`` have passed (None: no bound). A step always does one thing (opens a file or
    moves a batch), so a scan always gets on."""

    def __init__(self, batches: int | None, seconds: float | None) -> None:
        self.batches = batches
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.spent = 0

    def spend(self) -> None:
        self.spent += 1

    def left(self) -> bool:
        if self.batches is not None and self.spent >= self.batches:
            return False
        return self.deadline is None or time.monotonic() < self.deadline


class _Scan:
    """A scan under way: the files still to look at, and the one being moved (its lock held)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = deque(paths)
        self.move: _Move | None = None
        self.foreign: list[str] = []


class OrphanAdopter:
    """Finds and adopts the orphaned files of one spool directory for one spool file."""

    def __init__(self, directory: Path, own_path: Path, check: DestinationCheck) -> None:
        self.directory = directory
        self.own_path = own_path
        self.check = check
        self.schedule = ScanSchedule(scan_period(), time.monotonic())
        self._reported: set[str] = set()
        """Names of files already warned about (kept files are said once, not every scan)."""
        self._kept: dict[str, tuple[int, int, int]] = {}
        """Files kept for another destination, by name: (inode, size, mtime) when judged."""
        self._scan: _Scan | None = None
        self._busy = threading.Lock()
        """Held by a step, and by :meth:`close` (which may come from another thread)."""
        self.unconfirmed = 0
        """Pending ratings found marked as sending in orphans (see :meth:`take_unconfirmed`)."""
        _adopters.live.add(self)

    def take_unconfirmed(self) -> int:
        """Ratings found marked as sending since the last call: their process may have sent
        them, so they were dropped from the orphan, not moved (never sent again)."""
        with self._busy:
            found, self.unconfirmed = self.unconfirmed, 0
        return found

    @property
    def scanning(self) -> bool:
        """True while a scan is under way (the next step goes on with it)."""
        return self._scan is not None

    def adopt(self, into: sqlite3.Connection, lock: threading.Lock, max_events: int) -> int:
        """A whole scan (or the rest of the one under way): see :meth:`step`."""
        return self.step(into, lock, max_events, batches=None, seconds=None)

    def step(
        self,
        into: sqlite3.Connection,
        lock: threading.Lock,
        max_events: int,
        *,
        batches: int | None = STEP_BATCHES,
        seconds: float | None = STEP_SECONDS,
    ) -> int:
        """Go on with the scan under way (or start one): move the rows of orphaned files
        written for this destination into ``into`` (guarded by ``lock``), at most ``batches``
        batches, none started after ``seconds``; return how many pending events were moved
        (messages and ratings requests moved are not counted: ``queued`` counts events).
        Files of other users, or that are not regular files, are skipped, never read or
        deleted; what a crash during a file's creation left is removed. Only what fits under
        ``max_events`` is moved, and a write that fails in ``into`` (e.g. the disk is full)
        ends the scan: the rest stays in its file for the next one. Between steps the file
        being moved stays locked."""
        with self._busy:
            scan = self._scan
            if scan is None:
                scan = self._scan = _Scan(sorted(self.directory.glob("spool-*.db")))
            budget = _Budget(batches, seconds)
            pending = 0
            try:
                while True:  # each turn opens the next file or moves batches of the open one
                    move = scan.move
                    if move is None:
                        if not scan.paths:
                            self._finish(scan)
                            break
                        scan.move = self._open(scan, scan.paths.popleft())
                    else:
                        pending += move.step(into, lock, max_events, budget)
                        if move.finished:
                            scan.move = None
                            move.close()
                            if move.stopped:
                                self._finish(scan)
                                break
                    if not budget.left():
                        break
            except BaseException:
                self._end(scan)
                raise
            return pending

    def close(self) -> None:
        """Let go of the file being moved, if any (the rest of it stays for a later scan)."""
        with self._busy:
            if self._scan is not None:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self._end(self._scan)

    def _finish(self, scan: _Scan) -> None:
        scan.foreign.extend(self._remove_interrupted_creations())
        self._report_foreign(scan.foreign)
        self._end(scan)

    def _end(self, scan: _Scan) -> None:
        self._scan = None
        self.schedule.scanned(time.monotonic())
        move, scan.move = scan.move, None
        if move is not None:
            move.close()

    def _abandon_in_child(self) -> None:
        """In a forked child: forget the parent's scan (its lock files are closed by
        :mod:`.spool_files`); its connection is kept, never used or closed."""
        self._busy = threading.Lock()
        scan, self._scan = self._scan, None
        if scan is not None and scan.move is not None:
            _adopters.left_with_parent.append(scan.move.source)

    def _open(self, scan: _Scan, path: Path) -> _Move | None:
        """The move of ``path`` when it is an orphan to adopt (its lock then held), else
        None."""
        if path == self.own_path or self._still_kept(path):
            return None
        if not own_files(path):
            scan.foreign.append(path.name)
            return None
        lock_path = path.with_suffix(".lock")
        try:
            handle = try_lock(lock_path)
        except OSError as error:
            self._report(path, "cannot check %s (%s); skipped", path, error)
            return None
        if handle is None:
            return None  # a live process owns it
        try:
            if not path.exists():  # adopted by another process a moment ago: only our lock
                remove(lock_path)
                close_lock_file(handle)
                return None
            match = self._match(path)
            if match is None:
                close_lock_file(handle)
                return None
            try:
                source = sqlite3.connect(path, check_same_thread=False)
                (vacuum,) = source.execute("PRAGMA auto_vacuum").fetchone()
                kinds = _has_column(source, "kind")
                marks = _has_column(source, "sending")
                # Losing the last deletes to a power cut only sends them again (deduplicated).
                source.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as error:
                self._report(path, "cannot open %s (%s); left in place", path, error)
                close_lock_file(handle)
                return None
        except BaseException:
            close_lock_file(handle)
            raise
        unrecorded = match is Match.UNRECORDED and self.check.destination is not None
        return _Move(
            self,
            path,
            handle,
            source,
            incremental=vacuum == 2,
            unrecorded=unrecorded,
            kinds=kinds,
            marks=marks,
        )

    def _match(self, path: Path) -> Match | None:
        """The file's destination compared with ours; None when it is not adopted (kept for
        another destination, unreadable, or removed as an interrupted creation)."""
        try:
            other = connect_read_only(path)
        except (SpoolError, sqlite3.Error) as error:
            if abandoned_creation(path):
                remove(path, *sidecars(path), path.with_suffix(".lock"))
                logger.warning(
                    "otel_greenflash spool: removed %s, a spool file whose creation was "
                    "interrupted by a crash (it held no events)",
                    path.name,
                )
                return None
            self._report(
                path,
                "%s is not a spool file this version can read (%s); left in place",
                path.name,
                error,
            )
            return None
        try:
            recorded = read(other)
            match = self.check.match(recorded)
            if match in (Match.SAME, Match.UNRECORDED):
                return match
            kind = "kind" if _has_column(other, "kind") else "'events'"
            left = dict(
                other.execute(
                    f"SELECT {kind}, count(*) FROM events WHERE status != 'rejected' "  # noqa: S608 - fixed text
                    f"GROUP BY {kind}"
                ).fetchall()
            )
        except sqlite3.Error as error:
            self._report(path, "cannot read %s (%s); left in place", path, error)
            return None
        finally:
            other.close()
        assert recorded is not None
        self.keep(path)
        where = shown_endpoint(recorded.endpoint)
        own = self.check.destination
        if match is Match.OTHER_KEY:
            why = f"for {where} under another API key"
        elif own is not None and shown_endpoint(own.endpoint) == where:
            why = f"for another path on {where}"
        else:
            why = f"for {where}"
        self._report(
            path,
            "%s holds %s written %s; not adopted, kept for a process with that key and endpoint",
            path.name,
            described(left),
            why,
        )
        return None

    def _still_kept(self, path: Path) -> bool:
        """True for a file kept for another destination that has not changed since."""
        seen = self._kept.get(path.name)
        if seen is None:
            return False
        try:
            status = os.lstat(path)
        except OSError:
            del self._kept[path.name]
            return True
        return seen == (status.st_ino, status.st_size, status.st_mtime_ns)

    def keep(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            status = os.lstat(path)
            self._kept[path.name] = (status.st_ino, status.st_size, status.st_mtime_ns)

    def _report(self, path: Path, message: str, *args: object) -> None:
        """A warning about one file, once per file name."""
        if path.name not in self._reported:
            self._reported.add(path.name)
            logger.warning("otel_greenflash spool: " + message, *args)

    def _report_foreign(self, names: list[str]) -> None:
        new = [name for name in names if name not in self._reported]
        if not new:
            return
        self._reported.update(new)
        shown = ", ".join(new[:_MAX_NAMES_SHOWN])
        more = len(new) - _MAX_NAMES_SHOWN
        logger.warning(
            "otel_greenflash spool: %d file(s) in %s not owned by this user (uid %d) or not "
            "regular files were left alone, never adopted: %s%s",
            len(new),
            self.directory,
            os.geteuid(),
            shown,
            f" and {more} more" if more > 0 else "",
        )

    def _remove_interrupted_creations(self) -> list[str]:
        """Remove files a crash left while creating a spool file (a ``.creating`` file, or a
        lock file alone) whose process is gone; return the names of foreign ones skipped."""
        foreign: list[str] = []
        removed: list[str] = []
        for path in sorted(self.directory.glob(f"spool-*{CREATING}")):
            if not own_files(path):
                foreign.append(path.name)
                continue
            handle = try_own_lock(path.with_suffix(".lock"))
            if handle is None:
                continue  # being created right now by a live process
            try:
                if path.exists():  # else: renamed into place a moment ago, by its last owner
                    remove(path, *sidecars(path), path.with_suffix(".lock"))
                    removed.append(path.name)
            finally:
                close_lock_file(handle)
        for lock_path in sorted(self.directory.glob("spool-*.lock")):
            if lock_path.with_suffix(".db").exists() or lock_path.with_suffix(CREATING).exists():
                continue
            handle = try_own_lock(lock_path)
            if handle is None:
                continue
            try:  # a lock file alone: its process died before creating its file
                if not lock_path.with_suffix(".db").exists():
                    remove(lock_path)
            finally:
                close_lock_file(handle)
        if removed:
            logger.warning(
                "otel_greenflash spool: removed %d spool file(s) whose creation was interrupted "
                "by a crash (they held no events): %s",
                len(removed),
                ", ".join(removed[:_MAX_NAMES_SHOWN]),
            )
        return foreign


_Row = tuple[int, str, str, bytes, str, float, str, int]
"""seq, key (insert_id), span_name, body, status, created, kind, sending."""


class _Move:
    """The adoption of one orphaned file, batch by batch: into our spool, then out of the
    orphan (which shrinks as it goes when its pages can be given back). Its lock and
    connection are held until :meth:`close`."""

    def __init__(
        self,
        adopter: OrphanAdopter,
        path: Path,
        handle: IO[bytes],
        source: sqlite3.Connection,
        *,
        incremental: bool,
        unrecorded: bool,
        kinds: bool,
        marks: bool,
    ) -> None:
        self.adopter = adopter
        self.path = path
        self.handle = handle
        self.source = source
        self.incremental = incremental
        self.unrecorded = unrecorded
        self.kinds = kinds
        """Its rows record their endpoint (format 3); those of older files are events."""
        self.marks = marks
        """Its rows have the ``sending`` mark (format-3 files written before it: none)."""
        self.pending = 0
        """Pending events moved into our spool so far (new rows only)."""
        self.moved: Counter[str] = Counter()
        """Pending rows moved into our spool so far (new rows only), by kind."""
        self.unconfirmed = 0
        """Pending ratings marked as sending found so far (dropped, not moved)."""
        self.finished = False
        """Nothing more is done with this file in this scan."""
        self.emptied = False
        self.stopped = False
        """Our spool is full, or a write into it failed: the scan ends here."""
        self.marked = 0
        """Ratings marked as sending in the batch being moved (dropped, not moved)."""

    def step(
        self, into: sqlite3.Connection, lock: threading.Lock, max_events: int, budget: _Budget
    ) -> int:
        """Move batches (at least one) while ``budget`` lasts; return how many pending events
        came in."""
        before = self.pending
        try:
            with lock:
                (held,) = into.execute(
                    "SELECT count(*) FROM events WHERE status != ?", (WAITING,)
                ).fetchone()
        except sqlite3.Error as error:
            self._pause(error)
            return 0
        room = max_events - int(held)  # rows only leave our spool during the step
        while True:
            try:
                rows = _next_batch(self.source, self.kinds, self.marks)
            except sqlite3.Error as error:
                self.adopter._report(
                    self.path, "cannot read %s (%s); what is left stays in place", self.path, error
                )
                self.finished = True
                break
            if not rows:
                self.finished = self.emptied = True
                break
            taken = rows[: max(0, room)]
            try:
                room -= self._insert(into, lock, taken)
                if taken:
                    with self.source:
                        self.source.execute("DELETE FROM events WHERE seq <= ?", (taken[-1][0],))
                    self.adopter.unconfirmed += self.marked
                    self.unconfirmed += self.marked
                if self.incremental:  # the freed pages go back to the filesystem
                    self.source.executescript("PRAGMA incremental_vacuum;")  # run to its end
                self.source.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except (sqlite3.Error, OSError) as error:
                self._pause(error)
                break
            budget.spend()
            if len(taken) < len(rows):
                self.adopter._report(
                    self.path,
                    "the spool holds its bound of %d events: %s keeps the rest of its events "
                    "until there is room",
                    max_events,
                    self.path.name,
                )
                self.finished = self.stopped = True
                break
            if not budget.left():
                break
        return self.pending - before

    def _pause(self, error: BaseException) -> None:
        self.adopter._report(
            self.path,
            "adoption of %s paused (%s); the rest stays in it for the next scan",
            self.path.name,
            error,
        )
        self.finished = self.stopped = True

    def _insert(self, into: sqlite3.Connection, lock: threading.Lock, rows: list[_Row]) -> int:
        """Write ``rows`` into our spool (one transaction; an insertId already there keeps its
        row); return how many rows are new. Only new pending rows count as moved."""
        if not rows:
            return 0
        # Their process is gone: events it held back waiting for a conversation id go as known.
        # A pending rating marked as sending may have been stored: never sent again.
        values = [
            (insert_id, span_name, body, PENDING if status == WAITING else status, created, kind)
            for _, insert_id, span_name, body, status, created, kind, sending in rows
            if not (sending and status == PENDING)
        ]
        self.marked = len(rows) - len(values)  # counted once deleted from the orphan
        pending: dict[str, list[tuple[str, str, bytes, str, float, str]]] = {}
        for value in values:
            if value[3] == PENDING:
                pending.setdefault(value[5], []).append(value)
        others = [value for value in values if value[3] != PENDING]
        sql = (
            "INSERT OR IGNORE INTO events (insert_id, span_name, body, status, created, kind) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        with lock:
            with into:
                if any(value[5] != "events" for value in values):
                    into.execute(UPGRADE_SQL)  # with its first messages or ratings row
                new_pending = {
                    kind: max(0, into.executemany(sql, rows_of_kind).rowcount)
                    for kind, rows_of_kind in pending.items()
                }
                new_others = max(0, into.executemany(sql, others).rowcount) if others else 0
            into.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the WAL is reused
        self.moved.update(new_pending)
        self.pending += new_pending.get("events", 0)
        return sum(new_pending.values()) + new_others

    def close(self) -> None:
        """Let go of the file: its connection (the last: checkpoints and deletes its WAL), the
        file itself once emptied, then its lock."""
        try:
            self.source.close()
            if self.emptied:
                remove(self.path, self.path.with_suffix(".lock"), *wal_files(self.path))
        finally:
            close_lock_file(self.handle)
        if not sum(self.moved.values()) and not self.unconfirmed:
            return
        logger.warning(
            "otel_greenflash spool: adopted %s left by an earlier process (%s)%s%s",
            described(self.moved),
            self.path.name,
            ", written by a version that did not record its API key and endpoint: they go "
            "to this process's endpoint"
            if self.unrecorded
            else "",
            f"; {self.unconfirmed} rating(s) it was sending were not taken, never to be sent "
            "again (unconfirmed)"
            if self.unconfirmed
            else "",
        )


_NOUNS = (
    ("events", "undelivered event(s)"),
    ("messages", "Messages API request(s)"),
    ("ratings", "rating(s)"),
)


def described(counts: Mapping[str, int]) -> str:
    """Undelivered rows by kind, for a log line: ``3 undelivered event(s)`` when they are
    all events (as always said), else each kind with its count (``0 undelivered event(s), 1
    Messages API request(s) and 2 rating(s)``); rows of an unknown kind by their kind."""
    known = dict(_NOUNS)
    shown = [(kind, noun) for kind, noun in _NOUNS if counts.get(kind) or kind == "events"]
    shown += [(str(kind), f"{kind} row(s)") for kind in counts if kind not in known]
    if len(shown) == 1:
        return f"{counts.get('events', 0)} undelivered event(s)"
    parts = [f"{counts.get(kind, 0)} {noun}" for kind, noun in shown]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def after_fork_in_child() -> None:
    """In a forked child: forget the parent's scans (see :mod:`.._lifecycle.fork`)."""
    _adopters.jitter.seed()  # siblings forked from one parent draw their own waits
    for adopter in list(_adopters.live):
        adopter._abandon_in_child()


def _has_column(source: sqlite3.Connection, name: str) -> bool:
    """True when the file's rows have column ``name`` (``kind``: format 3; ``sending``: the
    mark of ratings under way, in format-3 files written since it exists)."""
    columns = source.execute("PRAGMA table_info(events)").fetchall()
    return any(column[1] == name for column in columns)


def _next_batch(source: sqlite3.Connection, kinds: bool, marks: bool) -> list[_Row]:
    """The next rows of an orphan, oldest first; those of a file before format 3 as events,
    those of a file without the ``sending`` column as unmarked."""
    kind = "kind" if kinds else "'events'"
    sending = "sending" if marks else "0"
    rows: list[_Row] = source.execute(
        f"SELECT seq, insert_id, span_name, body, status, created, {kind}, {sending} "  # noqa: S608 - fixed text
        "FROM events "
        "ORDER BY seq LIMIT ?",
        (BATCH_ROWS,),
    ).fetchall()
    size = 0
    for index, row in enumerate(rows):
        size += len(row[3])
        if size >= BATCH_BYTES:
            return rows[: index + 1]
    return rows
