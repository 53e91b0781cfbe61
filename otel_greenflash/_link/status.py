"""How the last events of each running process were linked, for ``otel-greenflash check``.

Each pipeline keeps the outcome of its last :data:`RECENT` events (linked, or why not: never
a payload, id or key) and its worker writes them, at most every few seconds, to a small JSON
file per process in a private directory of the user's temporary directory. ``check`` reads
the files of processes still alive.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECENT = 100
"""Events per pipeline whose linking is remembered."""

WRITE_INTERVAL_SECONDS = 2.0


def status_dir() -> Path:
    """``<tmp>/otel-greenflash-<uid>``: one directory per user, private to them."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"otel-greenflash-{uid}"


@dataclass
class RecentLinks:
    """The last events' outcomes: None when linked, else the ``stats()["unlinked"]`` reason."""

    outcomes: collections.deque[str | None] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT)
    )
    id_like_keys: list[str] = field(default_factory=list)
    """Keys that looked like conversation ids on the last unlinked event's trace."""
    changed: bool = False

    def add(self, linked: int, unlinked: int, reason: str | None) -> None:
        self.outcomes.extend([None] * linked)
        self.outcomes.extend([reason] * unlinked)
        self.changed = True

    def summary(self) -> dict[str, Any]:
        reasons = collections.Counter(reason for reason in self.outcomes if reason is not None)
        return {
            "events": len(self.outcomes),
            "linked": sum(1 for reason in self.outcomes if reason is None),
            "unlinked": dict(reasons),
            "id_like_keys": list(self.id_like_keys),
        }


class StatusWriter:
    """Writes one pipeline's :class:`RecentLinks` for ``check`` (worker thread only)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._written_at = 0.0
        self._path: Path | None = None
        self._failed = False

    def maybe_write(self, recent: RecentLinks, *, now: float | None = None) -> None:
        """Write when something changed and the interval passed; never raises."""
        now = time.monotonic() if now is None else now
        if not recent.changed or self._failed or now - self._written_at < WRITE_INTERVAL_SECONDS:
            return
        self._written_at = now
        recent.changed = False
        try:
            self._write(recent)
        except OSError:
            self._failed = True  # a read-only or full temporary directory: check shows nothing

    def _write(self, recent: RecentLinks) -> None:
        directory = status_dir()
        directory.mkdir(mode=0o700, exist_ok=True)
        if directory.is_symlink() or directory.stat().st_uid != _uid():
            raise OSError("not our directory")
        pid = os.getpid()
        path = directory / f"{pid}-{self._name}.json"
        temporary = path.with_suffix(".tmp")
        data = {"pid": pid, "written": time.time(), **recent.summary()}
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file)
        os.replace(temporary, path)
        self._path = path

    def remove(self) -> None:
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()


def read_statuses(directory: Path | None = None) -> list[dict[str, Any]]:
    """The statuses of processes still alive, newest first (files of dead ones are removed)."""
    directory = status_dir() if directory is None else directory
    statuses: list[dict[str, Any]] = []
    for path in _json_files(directory):
        try:
            data = json.loads(path.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        statuses.append(data)
    return sorted(statuses, key=lambda data: -float(data.get("written", 0)))


def _json_files(directory: Path) -> Iterable[Path]:
    try:
        return sorted(directory.glob("*.json"))
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0
