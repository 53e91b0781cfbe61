"""Run Python code or the package's commands in a real subprocess, the way users do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
