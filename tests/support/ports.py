"""Free loopback ports that no other test process on this machine is handed at the same time.

A port found by binding port 0 and closing is free at that moment only: two processes (pytest
workers, CI's matrix rows side by side) can both be handed it before either server binds it.
CI saw it once: hypercorn's test started its server on a port uvicorn's test had been handed
too, found uvicorn answering ``/health`` there, and drove uvicorn's server with its requests.

Every port handed out here is also locked (``flock``) in a file of a machine-wide directory,
held by the process that was handed it for ``HELD_SECONDS``: another process that is handed the
same port by the kernel sees the lock and asks again. Locks end with their process, so a test
run that dies leaves nothing held.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

# Fixed, not tempfile.gettempdir(): CI's matrix rows each run with their own TMPDIR.
LOCK_DIR = Path("/tmp/otel-greenflash-test-ports")
HELD_SECONDS = 600.0  # longer than any test keeps a port it was handed before binding it
ATTEMPTS = 1000

_held: dict[int, tuple[int, float]] = {}  # port -> (lock file descriptor, when it was handed out)


def free_port() -> int:
    """A loopback TCP port that is free now and handed to no other process for a while."""
    _release_old()
    LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(ATTEMPTS):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _held and _lock(port):
            return port
    raise RuntimeError(
        f"no free port among {ATTEMPTS} the kernel offered that another was not using"
    )


def _lock(port: int) -> bool:
    fd = os.open(LOCK_DIR / str(port), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held[port] = (fd, time.monotonic())
    return True


def _release_old() -> None:
    now = time.monotonic()
    for port, (fd, since) in list(_held.items()):
        if now - since > HELD_SECONDS:
            os.close(fd)
            del _held[port]
