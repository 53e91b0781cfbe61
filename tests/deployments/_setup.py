"""What every deployment app does at import: ``otel_greenflash.configure()``.

Environment:

* ``DEPLOY_SETUP``: ``configure`` (default) or ``none`` (zero-code, or the server alone).
* ``DEPLOY_STATE_DIR``: when set, one ``import-<pid>.txt`` file per importing process records
  the SIGTERM disposition before and after setup, to show whether the server installed its
  handler before or after importing the app.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def describe(handler: object) -> str:
    """``SIG_DFL``, ``SIG_IGN``, ``None`` or the handler's qualified name."""
    if handler is signal.SIG_DFL:
        return "SIG_DFL"
    if handler is signal.SIG_IGN:
        return "SIG_IGN"
    if handler is None:
        return "None"
    module = getattr(handler, "__module__", None) or "?"
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{name}"


def setup() -> None:
    before = describe(signal.getsignal(signal.SIGTERM))
    if os.environ.get("DEPLOY_SETUP", "configure") == "configure":
        import otel_greenflash

        otel_greenflash.configure()
    after = describe(signal.getsignal(signal.SIGTERM))
    state = os.environ.get("DEPLOY_STATE_DIR")
    if state:
        Path(state, f"import-{os.getpid()}.txt").write_text(
            f"pid={os.getpid()} ppid={os.getppid()} sigterm_before={before} sigterm_after={after}\n"
        )


def mark_ready() -> None:
    """Tell the test this process serves (one ``ready-<pid>`` file per process)."""
    state = os.environ.get("DEPLOY_STATE_DIR")
    if state:
        Path(state, f"ready-{os.getpid()}").touch()
