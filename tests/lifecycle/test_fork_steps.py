"""Fork handling has one home: one ``os.register_at_fork`` in ``_lifecycle/fork.py``, whose
steps run in a fixed order, a failing one not stopping the others."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import otel_greenflash
from otel_greenflash._lifecycle import fork
from otel_greenflash._pipeline import registry

PACKAGE = Path(otel_greenflash.__file__).parent


def test_the_package_registers_fork_hooks_in_one_place() -> None:
    callers = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "os.register_at_fork(" in path.read_text(encoding="utf-8")
    )
    assert callers == ["_lifecycle/fork.py"]


def test_the_pipelines_step_comes_last_and_is_handed_in_by_the_registry() -> None:
    assert fork.STEPS[-1] is fork.PIPELINES
    assert fork.PIPELINES.after_in_child is registry.after_fork_in_child
    assert fork.PIPELINES.before is registry.before_fork


def test_a_failing_step_does_not_stop_the_next(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        fork._run([("broken", broken), ("skipped", None), ("next", lambda: ran.append("next"))])
    assert ran == ["next"]
    assert "fork step failed (broken)" in caplog.text
