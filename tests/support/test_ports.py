"""The port helper: a port handed to one process is not handed to another meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support import ports
from tests.support.processes import clean_env

HOLDER = """
import sys
from tests.support import ports
port = int(sys.argv[1])
print(ports._lock(port), flush=True)
sys.stdin.read()  # hold the lock until the test closes stdin
"""


def test_a_port_held_by_another_process_is_refused_until_that_process_ends() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    ports.LOCK_DIR.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "True"
        assert not ports._lock(port)
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert ports._lock(port)


def test_free_port_hands_out_a_bindable_port_once_per_process() -> None:
    handed = {ports.free_port() for _ in range(50)}
    assert len(handed) == 50
    for port in list(handed)[:5]:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
