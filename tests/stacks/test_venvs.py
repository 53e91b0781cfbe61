"""The stack venv builder says why a venv could not be built (the stack tests skip with it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._venvs import StackVenvError, stack_python


def test_pip_failure_is_reported_with_pips_own_words(tmp_path: Path) -> None:
    requirements = tmp_path / "broken.txt"
    requirements.write_text("this is not a requirement ===\n")
    with pytest.raises(StackVenvError) as failure:
        stack_python("broken", requirements=requirements, venvs=tmp_path / "venvs")
    message = str(failure.value)
    assert message.startswith("pip install -e <repo> -r broken.txt failed (exit ")
    assert "this is not a requirement" in message  # pip's own error line
    assert not (tmp_path / "venvs" / "broken" / ".greenflash-stack-stamp").exists()


def test_missing_requirements_file(tmp_path: Path) -> None:
    with pytest.raises(StackVenvError, match="no requirements file"):
        stack_python("none", requirements=tmp_path / "none.txt", venvs=tmp_path / "venvs")
