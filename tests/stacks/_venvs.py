"""One isolated virtualenv per GenAI stack, built on demand and reused while its inputs match.

Stacks pin OpenTelemetry versions that conflict with each other and with the test venv, so each
stack runs from ``<repo>/.venv-stacks/<stack>/``: ``python -m venv`` and then
``pip install -e <repo> -r tests/stacks/requirements/<stack>.txt`` (every package pinned with
``==``). The venv is reused while a stamp file in it holds the digest of the requirements file,
what ``pyproject.toml`` says about installing the package (build system, ``[project]``, hatch)
and the Python version; otherwise it is built again from scratch. pip's own
cache makes a rebuild cheap. A file lock keeps two pytest processes from building one venv at
the same time.

When pip fails, :func:`stack_python` raises :class:`StackVenvError` with pip's last lines, for
the test to skip with (CI output then shows why the stack did not run).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENVS = REPO / ".venv-stacks"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
STAMP = ".greenflash-stack-stamp"
INSTALL_TIMEOUT = 900.0
TAIL_LINES = 12


class StackVenvError(Exception):
    """The stack's venv could not be built; the message says why (pip's last lines)."""


def requirements_file(stack: str) -> Path:
    return REQUIREMENTS / f"{stack}.txt"


def _install_inputs() -> bytes:
    """What ``pip install -e <repo>`` reads from ``pyproject.toml``: the build system, the
    project table (dependencies, entry points; not the extras, which it does not install) and
    hatch's settings. Edits elsewhere in the file (the test extra, linters, pytest, mypy) do not
    force a rebuild. Without ``tomllib`` (Python 3.10): the file."""
    text = (REPO / "pyproject.toml").read_bytes()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return text
    data = tomllib.loads(text.decode())
    kept = {key: data.get(key) for key in ("build-system", "project")}
    if isinstance(kept["project"], dict):  # the extras are not installed into a stack's venv
        kept["project"] = {k: v for k, v in kept["project"].items() if k != "optional-dependencies"}
    kept["hatch"] = data.get("tool", {}).get("hatch")
    return json.dumps(kept, sort_keys=True).encode()


def digest(requirements: Path) -> str:
    """What the venv is built from: the requirements, pyproject.toml's install inputs and this
    Python."""
    sha = hashlib.sha256()
    sha.update(requirements.read_bytes())
    sha.update(b"\0")
    sha.update(_install_inputs())
    sha.update(b"\0")
    sha.update(f"{sys.version_info[0]}.{sys.version_info[1]} {sys.platform}".encode())
    return sha.hexdigest()


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(line if len(line) <= 300 else line[:300] + " …" for line in kept[-lines:])


def _run(args: list[str], what: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
            env=env,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackVenvError(f"{what} took longer than {INSTALL_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise StackVenvError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        raise StackVenvError(
            f"{what} failed (exit {done.returncode}):\n{_tail(done.stderr or done.stdout)}"
        )


def _base_python() -> str:
    """The interpreter to make venvs from: this one's base installation when it has one."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base) if base.exists() else sys.executable


def stack_python(
    stack: str, *, requirements: Path | None = None, venvs: Path = VENVS
) -> tuple[Path, float]:
    """The stack venv's python, building the venv when needed; and the seconds spent building
    (0 when reused). Raises :class:`StackVenvError` when it cannot be built.

    ``requirements`` defaults to ``tests/stacks/requirements/<stack>.txt``."""
    requirements = requirements or requirements_file(stack)
    if not requirements.is_file():
        raise StackVenvError(f"no requirements file {requirements}")
    venv = venvs / stack
    python = venv / "bin" / "python"
    wanted = digest(requirements)
    venvs.mkdir(exist_ok=True)
    with (venvs / f"{stack}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = venv / STAMP
        if python.exists() and stamp.is_file() and stamp.read_text().strip() == wanted:
            return python, 0.0
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        _run([_base_python(), "-m", "venv", str(venv)], f"python -m venv {venv.name}")
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-e",
                str(REPO),
                "-r",
                str(requirements),
            ],
            f"pip install -e <repo> -r {requirements.name}",
        )
        stamp.write_text(wanted + "\n")
        return python, time.monotonic() - started
