"""gunicorn settings (``-c python:tests.deployments.gunicorn_conf``): readiness per worker.

With ``DEPLOY_INSTALL_SIGTERM_HANDLER=1``, ``post_worker_init`` also calls
``otel_greenflash.install_sigterm_handler()``: what the docs ask of gunicorn ``--preload``
with uvicorn workers, whose worker resets SIGTERM after the app was imported in the master.
"""

from __future__ import annotations

import os
from typing import Any

from ._setup import mark_ready

graceful_timeout = 20


def post_worker_init(worker: Any) -> None:
    if os.environ.get("DEPLOY_INSTALL_SIGTERM_HANDLER") == "1":
        import otel_greenflash

        otel_greenflash.install_sigterm_handler()
    mark_ready()
