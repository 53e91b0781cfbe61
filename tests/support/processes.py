"""Run Python code or the package's commands in a real subprocess, the way users do."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without GREENFLASH_*/OTEL_* variables, plus ``overrides``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GREENFLASH_", "OTEL_"))
    }
    env.update(overrides)
    return env


def command(name: str) -> str:
    """Path of a console script installed next to this interpreter."""
    found = shutil.which(name, path=str(BIN))
    assert found is not None, f"{name} is not installed in {BIN}"
    return found


def run(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def run_script(
    tmp_path: Path, source: str, env: Mapping[str, str], *prefix: str
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to a file and run it with ``prefix`` (e.g. opentelemetry-instrument)."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(source))
    return run([*prefix, sys.executable, str(script)], env, cwd=tmp_path)


class LoggedProcess:
    """A server subprocess whose stdout and stderr go to one temporary file: stop (SIGTERM,
    then SIGKILL if it does not end), kill, and what it wrote. Subclasses start it."""

    STOP_SECONDS = 60.0

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close_log)
        self._final_output = ""

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end. Its exit status (None: never started)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(self.STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        """Everything it wrote so far (all its starts)."""
        if self._log.closed:
            return self._final_output
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close_log(self) -> None:
        """Stop it and keep its output readable after the log file is closed."""
        with contextlib.suppress(OSError):
            self.stop()
        self._final_output = self.output()
        self._log.close()
