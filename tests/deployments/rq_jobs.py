"""RQ jobs (``tests.deployments.rq_jobs.work``), run by ``rq worker`` in forked work horses."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ._events import emit
from ._setup import setup

setup()


def work(uid: str, marker_dir: str) -> str:
    """Sleep (so the signal can come while busy), emit, then leave a marker: it ran."""
    time.sleep(0.2)
    emit("job_succeeded", uid)
    Path(marker_dir, uid).write_text(str(os.getpid()))
    return uid
