"""The files of a spool directory: locks, ownership checks and what SQLite keeps beside a file.

Each spool file ``spool-<pid>-<random>.db`` has a sidecar ``.lock`` held with ``flock`` for the
life of its process: a lock that can be taken means the process is gone. Nothing here is ever
opened through a symlink, and only regular files of this process's user are adopted or deleted.

An ``flock`` belongs to the open file, which a forked child shares: a child that kept its copy
would hold the lock after the parent let go of it (a paused orphan locked for the child's
lifetime). So every lock file opened here is closed in a forked child, and none is opened while
a fork is under way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import threading
import weakref
from pathlib import Path
from typing import IO

from .._logging import logger

PENDING = "pending"
REJECTED = "rejected"
WAITING = "waiting"
"""Written as known so far while the event waits for its conversation id; replaced by the
final body when it stops waiting, sent as it is by whoever adopts the file after a crash."""

FORMAT_VERSION = 3
"""3: each row records its endpoint (``kind``: events, messages or ratings); 2: the file
records its destination (see :mod:`.spool_destination`); 1 did not. Files of formats 1 and 2
hold events only, and are adopted as such. A version that reads formats 1 and 2 only leaves a
format-3 file in place (it would send messages and ratings to the events endpoint)."""
CREATED_FORMAT = 2
"""A new file is written as format 2 (with the ``kind`` column, which a version reading
formats 1 and 2 ignores: it selects columns by name), so that version still adopts its events
after a rollback. The file becomes format 3 in the transaction that writes its first messages
or ratings row (see :data:`UPGRADE_SQL`)."""
UPGRADE_SQL = "UPDATE spool_format SET version = 3 WHERE version < 3"
"""Run in the transaction that writes a file's first messages or ratings row."""
READABLE_FORMATS = frozenset((1, 2, 3))
SPOOL_TABLES = frozenset(("events", "spool_format", "sqlite_sequence", "destination"))
CREATING = ".creating"
"""Suffix of a spool file while it is created (renamed to ``.db`` when ready)."""

_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
"""Never open a spool directory entry through a symlink, nor leak it to a child process."""
_LOCK_ATTEMPTS = 100


class _LockFiles:
    """This process's lock files, and the lock that keeps a fork out of opening or closing one."""

    def __init__(self) -> None:
        self.opened: weakref.WeakSet[IO[bytes]] = weakref.WeakSet()
        """Every lock file opened here and not yet collected: closed in a forked child."""
        self.opening = threading.Lock()
        """Held while a lock file is opened and noted, and across a fork (none is opened
        unnoted)."""


_lock_files = _LockFiles()


class SpoolError(Exception):
    """The spool directory or a spool file cannot be used."""


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open another process's file without changing it; check it is a spool of a readable
    format."""
    if not path.exists():
        raise SpoolError(f"{path} does not exist")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        row = db.execute("SELECT version FROM spool_format").fetchone()
        if row is None or row[0] not in READABLE_FORMATS:
            raise SpoolError(f"{path.name} is not a spool file of format 1 to {FORMAT_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def open_create_exclusive(path: Path) -> None:
    """Create ``path`` empty (mode 0600), never an existing file or through a symlink."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600))


def open_lock_file(path: Path) -> IO[bytes]:
    """Open (creating it 0600 if needed) a lock file; never through a symlink. A forked child
    closes its copy (it never holds the parent's locks)."""
    with _lock_files.opening:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _OPEN_FLAGS, 0o600)
        try:
            handle = os.fdopen(fd, "ab")
        except BaseException:
            os.close(fd)
            raise
        _lock_files.opened.add(handle)
    return handle


def close_lock_file(handle: IO[bytes]) -> None:
    """Close a lock file with no fork under way: a fork in the middle of a close would leave
    the child a copy it never closes (holding the lock for its life), or a buffered file whose
    lock it waits on for ever."""
    with _lock_files.opening:
        handle.close()


def hold_lock(path: Path) -> IO[bytes]:
    """This process's lock, held for the life of the spool. An adoption scan removes a lock
    file it finds free and alone, which may be ours between its creation and the ``flock``:
    then the lock is on a removed file, and taken again on a new one."""
    for _ in range(_LOCK_ATTEMPTS):
        handle = open_lock_file(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        except BaseException:
            close_lock_file(handle)
            raise
        close_lock_file(handle)
    raise OSError(f"{path.name} keeps being removed while it is locked")


def try_lock(path: Path) -> IO[bytes] | None:
    """The lock when nobody holds it (the owner is gone), else None."""
    handle = open_lock_file(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        close_lock_file(handle)
        return None
    return handle


def try_own_lock(path: Path) -> IO[bytes] | None:
    """:func:`try_lock` for a lock file that is this user's regular file; None otherwise
    (also when it cannot be opened)."""
    if not own_files(path):
        return None
    try:
        return try_lock(path)
    except OSError:
        return None


def wal_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def sidecars(path: Path) -> tuple[Path, Path, Path]:
    """The files SQLite may keep next to a database: WAL, shared memory, rollback journal."""
    return (*wal_files(path), path.with_name(path.name + "-journal"))


def remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def own_files(path: Path) -> bool:
    """True when ``path`` and every file SQLite or the lock keeps beside it are regular files
    owned by this process's user (missing ones are fine). Anything else may hold another
    user's events or be a trap: it is never adopted, sent under this process's key, or
    deleted."""
    uid = os.geteuid()
    for candidate in (path, *sidecars(path), path.with_suffix(".lock")):
        try:
            status = os.lstat(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if not stat.S_ISREG(status.st_mode) or status.st_uid != uid:
            return False
    return True


def abandoned_creation(path: Path) -> bool:
    """True when ``path`` (its lock held by the caller) is a spool file an earlier version
    was killed while creating: empty, or holding no more than this library's tables, all
    empty. Nothing in it was ever an event; anything else is left for a person to look at."""
    try:
        if path.stat().st_size == 0 and not any(
            sidecar.exists() and sidecar.stat().st_size > 0 for sidecar in sidecars(path)
        ):
            return True
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return False
    try:
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables <= SPOOL_TABLES:
            return False
        return not any(
            db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608 - fixed names
            for table in sorted(tables & {"events", "spool_format"})
        )
    except sqlite3.Error:
        return False
    finally:
        db.close()


def warn_if_shared(directory: Path) -> None:
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


def before_fork() -> None:
    """Before a fork: no lock file is being opened or closed (see :mod:`.._lifecycle.fork`)."""
    _lock_files.opening.acquire()


def after_fork_in_parent() -> None:
    _lock_files.opening.release()


def after_fork_in_child() -> None:
    """In a forked child: close the copies of the parent's lock files (never unlock them: the
    lock is the parent's), so a lock the parent lets go of is free."""
    _lock_files.opening = threading.Lock()
    for handle in list(_lock_files.opened):
        with contextlib.suppress(OSError, ValueError):
            handle.close()
    _lock_files.opened.clear()
