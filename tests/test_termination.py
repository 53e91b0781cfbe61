"""The process ends without atexit (SIGTERM, ``os._exit`` in a forked child): nothing held is lost.

Each test runs a real interpreter that emits events to the independent receiver, is ended the
way orchestrators and worker pools end processes, and is checked from outside: return code,
what the receiver got (each event exactly once), what the spool kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._subprocess import clean_env
from .independent_receiver import Fault, Receiver

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = "123e4567-e89b-12d3-a456-426614174000"

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX"
)

PRELUDE = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from opentelemetry import trace
import otel_greenflash

def emit(label, count):
    tracer = trace.get_tracer("app")
    for index in range(count):
        with tracer.start_as_current_span("task") as span:
            span.set_attribute("greenflash.event.type", "task_succeeded")
            span.set_attribute("greenflash.event.value", "ok")
            span.set_attribute("greenflash.conversation.external_id", "chat-1")
            span.set_attribute("greenflash.event.insert_id", f"{{label}}-{{index}}")

def ready():
    print("ready", flush=True)
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(latency_seconds=0.2) as running:
        yield running


def start(tmp_path: Path, body: str, receiver: Receiver, **env: str) -> subprocess.Popen[str]:
    script = tmp_path / "app.py"
    script.write_text(PRELUDE.format(root=str(ROOT)) + textwrap.dedent(body))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env=clean_env(
            GREENFLASH_API_KEY=receiver.api_key,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT,
            **env,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the app did not start: {line!r} {err}")
    return process


def finish(process: subprocess.Popen[str], signum: int | None = None) -> tuple[int, str, str]:
    if signum is not None:
        process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the process did not end: {err}")
    return process.returncode, out, err


def expect_exactly(receiver: Receiver, ids: set[str]) -> None:
    receiver.wait_until(lambda: len(set(receiver.accepted_insert_ids)) >= len(ids), timeout=10)
    assert sorted(receiver.accepted_insert_ids) == sorted(ids)
    assert receiver.duplicates == 0


def ids(label: str, count: int) -> set[str]:
    return {f"{label}-{index}" for index in range(count)}


def test_a_plain_script_delivers_then_ends_by_the_signal(
    tmp_path: Path, receiver: Receiver
) -> None:
    process = start(
        tmp_path,
        """
        otel_greenflash.configure()
        emit("plain", 21)
        print("handler", type(signal.getsignal(signal.SIGTERM)).__name__, file=sys.stderr)
        ready()
        time.sleep(60)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM  # ended by the signal, as without the library
    assert "handler ChainedSigtermHandler" in err
    expect_exactly(receiver, ids("plain", 21))


def test_the_switch_leaves_sigterm_alone(tmp_path: Path, receiver: Receiver) -> None:
    process = start(
        tmp_path,
        """
        otel_greenflash.configure()
        print("handler", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, file=sys.stderr)
        ready()
        time.sleep(60)
        """,
        receiver,
        GREENFLASH_HANDLE_SIGTERM="false",
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert "handler True" in err


def test_a_server_that_installs_restores_and_re_raises_after_us(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The uvicorn pattern with the app imported inside the server's capture: the server's
    handler is called at once, its graceful phase emits more, and its restore-and-re-raise
    ends the process by SIGTERM only after everything was delivered."""
    process = start(
        tmp_path,
        """
        stop = []
        original = signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
        otel_greenflash.configure()   # imported while the server's handler is installed
        emit("serving", 30)
        ready()
        while not stop:
            time.sleep(0.01)
        emit("graceful", 10)          # requests finishing during the graceful shutdown
        signal.signal(signal.SIGTERM, original)
        signal.raise_signal(signal.SIGTERM)
        print("after re-raise", file=sys.stderr)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert "after re-raise" in err  # held until atexit, as designed
    expect_exactly(receiver, ids("serving", 30) | ids("graceful", 10))


def test_a_server_that_captures_our_handler_restores_it_and_re_raises(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Zero-code and configure()-before-run: the server captures our handler as the original."""
    process = start(
        tmp_path,
        """
        otel_greenflash.configure()
        stop = []
        original = signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
        emit("serving", 30)
        ready()
        while not stop:
            time.sleep(0.01)
        emit("graceful", 10)
        signal.signal(signal.SIGTERM, original)
        signal.raise_signal(signal.SIGTERM)
        print("after re-raise", file=sys.stderr)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert "after re-raise" not in err  # our handler ended the process, by the signal
    expect_exactly(receiver, ids("serving", 30) | ids("graceful", 10))


def test_an_application_handler_that_exits_keeps_its_exit_code(
    tmp_path: Path, receiver: Receiver
) -> None:
    process = start(
        tmp_path,
        """
        def leave(signum, frame):
            sys.exit(3)
        signal.signal(signal.SIGTERM, leave)
        otel_greenflash.configure()
        emit("app", 15)
        ready()
        time.sleep(60)
        """,
        receiver,
    )
    code, _, _ = finish(process, signal.SIGTERM)
    assert code == 3
    expect_exactly(receiver, ids("app", 15))


def test_a_handler_installed_later_is_never_replaced(tmp_path: Path, receiver: Receiver) -> None:
    process = start(
        tmp_path,
        """
        otel_greenflash.configure()
        mine = lambda signum, frame: print("mine", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, mine)
        otel_greenflash.GreenflashSpanProcessor()   # a second processor starting later
        emit("later", 5)
        assert signal.getsignal(signal.SIGTERM) is mine
        ready()
        time.sleep(1.5)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == 0  # the application's handler only printed; the process went on
    assert "mine" in err
    expect_exactly(receiver, ids("later", 5))


def test_an_ignored_sigterm_stays_ignored(tmp_path: Path, receiver: Receiver) -> None:
    process = start(
        tmp_path,
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        otel_greenflash.configure()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        emit("ignored", 3)
        ready()
        time.sleep(1.5)
        """,
        receiver,
    )
    code, _, _ = finish(process, signal.SIGTERM)
    assert code == 0
    expect_exactly(receiver, ids("ignored", 3))


def test_a_processor_started_off_the_main_thread_installs_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    process = start(
        tmp_path,
        """
        import threading
        thread = threading.Thread(target=otel_greenflash.configure)
        thread.start(); thread.join()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        print("installed now:", otel_greenflash.install_sigterm_handler(), file=sys.stderr)
        emit("thread", 4)
        ready()
        time.sleep(60)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert "installed now: True" in err
    expect_exactly(receiver, ids("thread", 4))


def test_delivery_at_sigterm_is_bounded_and_the_spool_keeps_the_rest(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Receiver(faults=[Fault.hang()] * 1000) as hanging:
        process = start(
            tmp_path,
            """
            otel_greenflash.configure()
            emit("spooled", 12)
            ready()
            time.sleep(60)
            """,
            hanging,
            GREENFLASH_SPOOL_DIR=str(spool),
            GREENFLASH_TERMINATION_TIMEOUT="1000",
        )
        code, _, err = finish(process, signal.SIGTERM)
        assert code == -signal.SIGTERM
        assert "kept in the spool" in err
    with Receiver() as healthy:
        later = start(
            tmp_path,
            """
            otel_greenflash.configure()
            ready()
            otel_greenflash.flush(20)
            """,
            healthy,
            GREENFLASH_SPOOL_DIR=str(spool),
        )
        code, _, err = finish(later)
        assert code == 0, err
        expect_exactly(healthy, ids("spooled", 12))


def test_forked_children_leaving_with_os_exit_deliver_first(
    tmp_path: Path, receiver: Receiver
) -> None:
    """RQ's work horse and multiprocessing's fork children end with os._exit (no atexit)."""
    process = start(
        tmp_path,
        """
        import multiprocessing
        otel_greenflash.configure()
        emit("parent", 3)
        for child in range(3):
            pid = os.fork()
            if pid == 0:
                emit(f"horse{child}", 7)
                os._exit(0)
            os.waitpid(pid, 0)
        context = multiprocessing.get_context("fork")
        worker = context.Process(target=emit, args=("mp", 6))
        worker.start(); worker.join()
        print("exitcode", worker.exitcode, file=sys.stderr)
        ready()
        otel_greenflash.flush(20)
        """,
        receiver,
    )
    code, _, err = finish(process)
    assert code == 0, err
    assert "exitcode 0" in err
    expected = ids("parent", 3) | ids("mp", 6)
    for child in range(3):
        expected |= ids(f"horse{child}", 7)
    expect_exactly(receiver, expected)


def test_a_child_forked_after_a_deferred_sigterm_can_still_be_terminated(
    tmp_path: Path, receiver: Receiver
) -> None:
    process = start(
        tmp_path,
        """
        stop = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
        otel_greenflash.configure()
        ready()
        while not stop:
            time.sleep(0.01)
        pid = os.fork()   # SIGTERM is blocked on this thread now; the child must not inherit it
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        print("child signalled", os.WIFSIGNALED(status), file=sys.stderr)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == 0, err
    assert "child signalled True" in err


def test_os_exit_in_the_process_that_started_the_processor_delivers_first(
    tmp_path: Path, receiver: Receiver
) -> None:
    """RQ's work horse imports the job module (and so the library) after it was forked."""
    process = start(
        tmp_path,
        """
        ready()
        pid = os.fork()
        if pid == 0:
            otel_greenflash.configure()   # first import of the app's setup: after the fork
            emit("horse", 9)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("horse exit", os.waitstatus_to_exitcode(status), file=sys.stderr)
        """,
        receiver,
    )
    code, _, err = finish(process)
    assert code == 0, err
    assert "horse exit 0" in err
    expect_exactly(receiver, ids("horse", 9))
