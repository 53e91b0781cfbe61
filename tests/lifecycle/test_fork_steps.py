"""Fork handling has one home: one ``os.register_at_fork`` in ``_lifecycle/fork.py``, whose
steps run in a fixed order, a failing one not stopping the others."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

import otel_greenflash
from otel_greenflash._lifecycle import fork
from otel_greenflash._pipeline import registry
from tests.support.processes import clean_env, run

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


SHUT_DOWN_IN_CHILD_SCRIPT = """
import os, sys
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import MemoryTransport

dropped = []
processor = GreenflashSpanProcessor(
    transport=MemoryTransport(),
    product_id="123e4567-e89b-12d3-a456-426614174000",
    on_drop=lambda events, reason: dropped.append((len(events), reason)),
)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("app")
pid = os.fork()
if pid == 0:
    span = tracer.start_span("late")
    span.set_attribute("greenflash.event.type", "t")
    span.set_attribute("greenflash.event.value", "v")
    processor.shutdown(2000)
    span.end()  # after the shutdown: dropped, and counted in this process's stats()
    print("child", processor.stats()["dropped"], dropped, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", processor.stats()["dropped"], flush=True)
processor.shutdown(2000)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_event_span_ending_after_shutdown_in_a_forked_child_counts_in_the_child(
    tmp_path: Path,
) -> None:
    """The processor's hooks reach the pipeline's drops as they are after the fork (a child
    restarts its pipeline with counters of its own), not the parent's."""
    script = tmp_path / "shut_down_in_child.py"
    script.write_text(SHUT_DOWN_IN_CHILD_SCRIPT)
    result = run([sys.executable, str(script)], clean_env(), timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "child {'shutdown': 1} [(1, 'shutdown')]" in result.stdout, result.stdout
    assert "parent {}" in result.stdout, result.stdout
