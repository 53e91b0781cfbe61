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
:mod:`._spool_destination`); others are reported once and kept for their owner. Scans run when
the spool opens and then about every 30 s (``ORPHAN_SCAN_SECONDS``, ±20 %), so live processes
take over the files of neighbours that died beside them.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from ._logging import logger
from ._spool_destination import DestinationCheck, Match, read, shown_endpoint
from ._spool_files import (
    CREATING,
    PENDING,
    WAITING,
    SpoolError,
    abandoned_creation,
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
_MAX_NAMES_SHOWN = 5
_jitter = random.Random()  # noqa: S311 - spreads scans, not a secret; leaves random's state alone


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
        return now + self.period * _jitter.uniform(0.8, 1.2)


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

    def adopt(self, into: sqlite3.Connection, lock: threading.Lock, max_events: int) -> int:
        """Move the events of every orphaned file written for this destination into ``into``
        (guarded by ``lock``); return how many are pending. Files of other users, or that are
        not regular files, are skipped, never read or deleted; what a crash during a file's
        creation left is removed. Only what fits under ``max_events`` is moved, and a write
        that fails in ``into`` (e.g. the disk is full) ends the scan: the rest stays in its
        file for the next one."""
        self.schedule.scanned(time.monotonic())
        pending = 0
        foreign: list[str] = []
        for path in sorted(self.directory.glob("spool-*.db")):
            if path == self.own_path or self._still_kept(path):
                continue
            if not own_files(path):
                foreign.append(path.name)
                continue
            lock_path = path.with_suffix(".lock")
            try:
                handle = try_lock(lock_path)
            except OSError as error:
                self._report(path, "cannot check %s (%s); skipped", path, error)
                continue
            if handle is None:
                continue  # a live process owns it
            try:
                if path.exists():
                    moved = _Move(self, path, into, lock, max_events)
                    moved.run()
                    pending += moved.pending
                    if moved.stopped:
                        break
                else:  # adopted by another process a moment ago: only our new lock file is left
                    remove(lock_path)
            finally:
                handle.close()
        foreign.extend(self._remove_interrupted_creations())
        self._report_foreign(foreign)
        return pending

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
                handle.close()
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
                handle.close()
        if removed:
            logger.warning(
                "otel_greenflash spool: removed %d spool file(s) whose creation was interrupted "
                "by a crash (they held no events): %s",
                len(removed),
                ", ".join(removed[:_MAX_NAMES_SHOWN]),
            )
        return foreign


class _Move:
    """The adoption of one orphaned file (its lock held by the caller)."""

    def __init__(
        self,
        adopter: OrphanAdopter,
        path: Path,
        into: sqlite3.Connection,
        lock: threading.Lock,
        max_events: int,
    ) -> None:
        self.adopter = adopter
        self.path = path
        self.into = into
        self.lock = lock
        self.max_events = max_events
        self.pending = 0
        self.stopped = False
        """Our spool is full, or a write into it failed: the scan ends here."""
        self._held = 0
        """Rows in our spool counted against the bound (an upper bound: rows only leave it
        meanwhile)."""

    def run(self) -> None:
        match = self._match()
        if match is None:
            return
        try:
            source = sqlite3.connect(self.path, check_same_thread=False)
        except sqlite3.Error as error:
            self.adopter._report(self.path, "cannot open %s (%s); left in place", self.path, error)
            return
        try:
            emptied = self._move_all(source)
        finally:
            source.close()  # the last connection: checkpoints and deletes its WAL
        if emptied:
            remove(self.path, self.path.with_suffix(".lock"), *wal_files(self.path))
        if not self.pending:
            return
        unrecorded = match is Match.UNRECORDED and self.adopter.check.destination is not None
        logger.warning(
            "otel_greenflash spool: adopted %d undelivered event(s) left by an earlier "
            "process (%s)%s",
            self.pending,
            self.path.name,
            ", written by a version that did not record its API key and endpoint: they go "
            "to this process's endpoint"
            if unrecorded
            else "",
        )

    def _match(self) -> Match | None:
        """The file's destination compared with ours; None when it is not adopted (kept for
        another destination, unreadable, or removed as an interrupted creation)."""
        path, adopter = self.path, self.adopter
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
            adopter._report(
                path,
                "%s is not a spool file this version can read (%s); left in place",
                path.name,
                error,
            )
            return None
        try:
            recorded = read(other)
            match = adopter.check.match(recorded)
            if match in (Match.SAME, Match.UNRECORDED):
                return match
            (left,) = other.execute(
                "SELECT count(*) FROM events WHERE status != 'rejected'"
            ).fetchone()
        except sqlite3.Error as error:
            adopter._report(path, "cannot read %s (%s); left in place", path, error)
            return None
        finally:
            other.close()
        assert recorded is not None
        adopter.keep(path)
        where = shown_endpoint(recorded.endpoint)
        own = adopter.check.destination
        if match is Match.OTHER_KEY:
            why = f"for {where} under another API key"
        elif own is not None and shown_endpoint(own.endpoint) == where:
            why = f"for another path on {where}"
        else:
            why = f"for {where}"
        adopter._report(
            path,
            "%s holds %d undelivered event(s) written %s; not adopted, kept for a process "
            "with that key and endpoint",
            path.name,
            left,
            why,
        )
        return None

    def _move_all(self, source: sqlite3.Connection) -> bool:
        """Batch by batch: into our spool, then out of the orphan (which shrinks as it goes
        when its pages can be given back). True once the orphan is empty."""
        try:
            (vacuum,) = source.execute("PRAGMA auto_vacuum").fetchone()
            rows = _next_batch(source)
        except sqlite3.Error as error:
            self._cannot_read(error)
            return False
        with self.lock:
            (held,) = self.into.execute(
                "SELECT count(*) FROM events WHERE status != ?", (WAITING,)
            ).fetchone()
        self._held = int(held)
        while rows:
            try:
                taken = self._insert(rows)
                if taken:
                    with source:
                        source.execute("DELETE FROM events WHERE seq <= ?", (rows[taken - 1][0],))
                if vacuum == 2:  # incremental: the freed pages go back to the filesystem
                    source.executescript("PRAGMA incremental_vacuum;")  # run to its end
                source.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except (sqlite3.Error, OSError) as error:
                self.adopter._report(
                    self.path,
                    "adoption of %s paused (%s); the rest stays in it for the next scan",
                    self.path.name,
                    error,
                )
                self.stopped = True
                return False
            if taken < len(rows):
                self.adopter._report(
                    self.path,
                    "the spool holds its bound of %d events: %s keeps the rest of its events "
                    "until there is room",
                    self.max_events,
                    self.path.name,
                )
                self.stopped = True
                return False
            try:
                rows = _next_batch(source)
            except sqlite3.Error as error:
                self._cannot_read(error)
                return False
        return True

    def _cannot_read(self, error: sqlite3.Error) -> None:
        self.adopter._report(
            self.path, "cannot read %s (%s); what is left stays in place", self.path, error
        )

    def _insert(self, rows: list[tuple[int, str, str, bytes, str, float]]) -> int:
        """Write the first rows that fit under the bound into our spool; return how many
        (nothing already there is evicted for them)."""
        # Their process is gone: events it held back waiting for a conversation id go as known.
        values = [
            (insert_id, span_name, body, PENDING if status == WAITING else status, created)
            for _, insert_id, span_name, body, status, created in rows
        ][: max(0, self.max_events - self._held)]
        if not values:
            return 0
        into = self.into
        with self.lock:
            with into:
                inserted = into.executemany(
                    "INSERT OR IGNORE INTO events (insert_id, span_name, body, status, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    values,
                ).rowcount
            into.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the WAL is reused
        self._held += max(0, inserted)
        self.pending += sum(1 for value in values if value[3] == PENDING)
        return len(values)


def _next_batch(source: sqlite3.Connection) -> list[tuple[int, str, str, bytes, str, float]]:
    rows = source.execute(
        "SELECT seq, insert_id, span_name, body, status, created FROM events ORDER BY seq LIMIT ?",
        (BATCH_ROWS,),
    ).fetchall()
    size = 0
    for index, row in enumerate(rows):
        size += len(row[3])
        if size >= BATCH_BYTES:
            return rows[: index + 1]
    return rows
