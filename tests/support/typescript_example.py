"""The TypeScript example (examples/typescript): where it is, whether it can run here, and what
it prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "typescript"


def _missing_toolchain() -> str | None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (EXAMPLE / "node_modules" / ".bin" / "tsc").exists():
        return f"the example's packages are not installed (run `npm ci` in {EXAMPLE})"
    return None


needs_node = pytest.mark.skipif(
    _missing_toolchain() is not None, reason=f"TypeScript example: {_missing_toolchain()}"
)


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON line the example prints once both exports succeeded."""
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary
