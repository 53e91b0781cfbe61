"""Celery app on kombu's filesystem broker (``DEPLOY_BROKER_DIR``), run with the prefork pool."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery  # type: ignore[import-untyped]

from ._broker import broker_options
from ._events import emit
from ._setup import setup

setup()

BROKER_DIR = Path(os.environ["DEPLOY_BROKER_DIR"])


app = Celery("deploy", broker="filesystem://", broker_transport_options=broker_options(BROKER_DIR))
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


def work(uid: str, marker_dir: str) -> None:
    """Sleep (so the signal comes while tasks run), emit, then leave a marker: it ran."""
    time.sleep(0.2)
    emit("task_succeeded", uid)
    Path(marker_dir, uid).write_text(str(os.getpid()))


work_task = app.task(name="deploy.work")(work)
