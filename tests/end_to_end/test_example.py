"""The README's demo command works the way a new user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support_chat.py"


def test_demo_prints_each_event_from_the_local_server() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GREENFLASH_")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    received = [
        json.loads(line.split("event received:", 1)[1])
        for line in result.stdout.splitlines()
        if "event received:" in line
    ]
    assert sorted(event["eventType"] for event in received) == [
        "cancellation_requested",
        "task_success",
        "task_success",
        "upgrade_purchased",
    ]
    assert "done: 4 sent, 0 failed, 0 invalid" in result.stdout
