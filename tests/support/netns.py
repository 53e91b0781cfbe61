"""A host name that resolves to several loopback addresses for one process only.

The process runs in its own mount namespace (``unshare --mount``, private propagation) where a
file of ours is bind-mounted over ``/etc/hosts``; the machine's ``/etc/hosts`` and network are
untouched, so the gateways it reaches listen on the host's loopback (all of 127.0.0.0/8).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.collector import REQUIRED


def resolving_launcher(directory: Path, name: str, addresses: Sequence[str]) -> list[str]:
    """A command prefix that runs a program (by exec) with ``name`` resolving to ``addresses``.

    Skips the test when mount namespaces are not permitted here (they need root)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        missing = "the DNS resolver test needs unshare(1) to give the Collector its own hosts"
        if os.environ.get(REQUIRED):
            pytest.fail(missing)
        pytest.skip(missing)
    hosts = directory / "hosts"
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", *(f"{address} {name}" for address in addresses)]
    hosts.write_text("\n".join(lines) + "\n")
    command = [unshare, "--mount", "--", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"']
    probe = subprocess.run(
        [*command, str(hosts), "getent", "hosts", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        message = f"no mount namespace with its own /etc/hosts here: {probe.stderr.strip()}"
        if os.environ.get(REQUIRED):
            pytest.fail(message)
        pytest.skip(message)
    return [*command, str(hosts)]
