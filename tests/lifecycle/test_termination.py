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
import time
from pathlib import Path

import pytest

from tests.support.independent_receiver import Fault, Receiver
from tests.support.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = "123e4567-e89b-12d3-a456-426614174000"

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX"),
    pytest.mark.receiver(latency_seconds=0.2),
]

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
    with Receiver(faults=[Fault.hang()] * 1000) as api:
        process = start(
            tmp_path,
            """
            otel_greenflash.configure()
            emit("spooled", 12)
            ready()
            time.sleep(60)
            """,
            api,
            GREENFLASH_SPOOL_DIR=str(spool),
            GREENFLASH_TERMINATION_TIMEOUT="1000",
        )
        code, _, err = finish(process, signal.SIGTERM)
        assert code == -signal.SIGTERM
        assert "kept in the spool" in err
        api.clear_faults()  # the same API (key and endpoint: the spool's) answers again
        later = start(
            tmp_path,
            """
            otel_greenflash.configure()
            ready()
            otel_greenflash.flush(20)
            """,
            api,
            GREENFLASH_SPOOL_DIR=str(spool),
        )
        code, _, err = finish(later)
        assert code == 0, err
        expect_exactly(api, ids("spooled", 12))


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


def test_a_second_sigterm_while_delivering_does_not_cut_delivery_short(tmp_path: Path) -> None:
    # One request at a time, 0.2 s each: delivering 20 events takes about 4 s.
    with Receiver(latency_seconds=0.2) as slow:
        process = start(
            tmp_path,
            """
            otel_greenflash.configure()
            emit("twice", 20)
            ready()
            time.sleep(60)
            """,
            slow,
            GREENFLASH_BSP_MAX_CONCURRENCY="1",
            GREENFLASH_TERMINATION_TIMEOUT="20000",
        )
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)  # an impatient supervisor
        code, _, _ = finish(process)
        assert code == -signal.SIGTERM
        expect_exactly(slow, ids("twice", 20))


def test_sigterm_during_the_atexit_shutdown_lets_it_finish(tmp_path: Path) -> None:
    with Receiver(latency_seconds=0.2) as slow:
        process = start(
            tmp_path,
            """
            import atexit
            otel_greenflash.configure()
            emit("atexit", 20)
            atexit.register(lambda: print("shutting down", flush=True))  # runs before the SDK's
            ready()
            """,
            slow,
            GREENFLASH_BSP_MAX_CONCURRENCY="1",
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "shutting down"
        time.sleep(0.5)  # inside the SDK's shutdown, which takes about 4 s
        code, _, _ = finish(process, signal.SIGTERM)
        assert code == -signal.SIGTERM
        expect_exactly(slow, ids("atexit", 20))


def test_after_a_deferred_sigterm_later_ones_still_reach_the_application(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The app's handler does not end the process; it stops telemetry and waits for a second
    SIGTERM to quit. SIGTERM is blocked on the main thread by then, yet it must arrive."""
    process = start(
        tmp_path,
        """
        seen = []
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        otel_greenflash.configure()
        emit("graceful", 5)
        ready()
        while not seen:
            time.sleep(0.01)
        trace.get_tracer_provider().shutdown()   # the app's graceful phase
        print("stopped telemetry", flush=True)
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("second SIGTERM seen:", len(seen) >= 2, file=sys.stderr)
        """,
        receiver,
    )
    assert process.stdout is not None
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline().strip() == "stopped telemetry"
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 0, err
    assert "second SIGTERM seen: True" in err
    expect_exactly(receiver, ids("graceful", 5))


def test_sigterm_while_the_main_thread_installs_the_handler_does_not_hang(
    tmp_path: Path, receiver: Receiver
) -> None:
    process = start(
        tmp_path,
        """
        otel_greenflash.configure()
        emit("install", 5)
        ready()
        while True:   # e.g. a server hook calling it again and again
            otel_greenflash.install_sigterm_handler()
        """,
        receiver,
    )
    time.sleep(0.2)
    code, _, _ = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    expect_exactly(receiver, ids("install", 5))


@pytest.mark.parametrize("first", range(0, 40, 10), ids=lambda first: f"horses-{first}+")
def test_os_exit_right_after_a_root_releases_waiting_events_delivers_them(
    tmp_path: Path, receiver: Receiver, first: int
) -> None:
    """Events waiting for their conversation id are released by the root's end; a work horse
    leaving with os._exit a moment later must still deliver them. 40 horses, each leaving a
    little later than the one before, in four tests of ten (so parallel workers share them)."""
    process = start(
        tmp_path,
        """
        import uuid
        otel_greenflash.configure()
        tracer = trace.get_tracer("horse")
        conversations = {}
        for child in range(FIRST, FIRST + 10):
            conversations[child] = str(uuid.uuid4())
            pid = os.fork()
            if pid == 0:
                with tracer.start_as_current_span("job") as root:
                    for index in range(100):
                        with tracer.start_as_current_span("step") as span:
                            span.set_attribute("greenflash.event.type", "task_succeeded")
                            span.set_attribute("greenflash.event.value", "ok")
                            span.set_attribute("greenflash.event.insert_id", f"h{child}-{index}")
                    time.sleep(0.1)  # the worker has them waiting for the conversation id
                    root.set_attribute("greenflash.conversation.id", conversations[child])
                time.sleep(0.0005 * child)  # 0 to 20 ms: across the worker's release
                os._exit(0)
            os.waitpid(pid, 0)
        for child, conversation in conversations.items():
            print(child, conversation, file=sys.stderr)
        ready()
        """.replace("FIRST", str(first)),
        receiver,
        GREENFLASH_BSP_SCHEDULE_DELAY="10",
    )
    code, _, err = finish(process)
    assert code == 0, err
    expected = set()
    for child in range(first, first + 10):
        expected |= ids(f"h{child}", 100)
    expect_exactly(receiver, expected)
    conversations = dict(line.split() for line in err.splitlines() if line[:1].isdigit())
    wrongly_linked = {
        event["insertId"]: event.get("conversationId")
        for event in receiver.accepted
        if event.get("conversationId") != conversations[str(event["insertId"]).split("-")[0][1:]]
    }
    assert wrongly_linked == {}, err  # every one, with the app's warnings when some are not


def test_at_sigterm_only_the_batch_processor_feeding_the_exporter_is_flushed(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Another exporter that takes 8 s per batch must not eat the termination budget."""
    process = start(
        tmp_path,
        """
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor, SpanExporter, SpanExportResult,
        )

        class SlowBackend(SpanExporter):
            def export(self, spans):
                time.sleep(8)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider.add_span_processor(BatchSpanProcessor(SlowBackend(), schedule_delay_millis=60000))
        provider.add_span_processor(
            BatchSpanProcessor(otel_greenflash.GreenflashSpanExporter(),
                               schedule_delay_millis=60000)
        )
        emit("exporter", 5)
        ready()
        time.sleep(60)
        """,
        receiver,
        GREENFLASH_TERMINATION_TIMEOUT="3000",
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM, err
    expect_exactly(receiver, ids("exporter", 5))


def test_a_later_handler_that_chains_to_ours_still_ends_the_process(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Another library installs its handler after ours and calls ours as the previous one."""
    process = start(
        tmp_path,
        """
        otel_greenflash.configure()
        ours = signal.getsignal(signal.SIGTERM)
        def theirs(signum, frame):
            print("theirs", file=sys.stderr, flush=True)
            ours(signum, frame)
        signal.signal(signal.SIGTERM, theirs)
        emit("chained", 6)
        ready()
        time.sleep(60)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert "theirs" in err
    expect_exactly(receiver, ids("chained", 6))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_only_the_main_thread_takes_sigterm_while_the_library_runs(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The kernel gives a process-wide SIGTERM to any thread not blocking it; Python runs the
    handler on the main thread only, and one taken by another thread does not wake a main thread
    in ``time.sleep``. So the library's threads (worker, delivery loop, executor) block SIGTERM
    and SIGINT, and the handler runs at once rather than when the sleep ends."""
    process = start(
        tmp_path,
        """
        import threading
        otel_greenflash.configure()
        emit("masked", 3)
        otel_greenflash.flush()

        def takes(thread_id, signum):
            with open(f"/proc/self/task/{thread_id}/status") as status:
                blocked = next(line for line in status if line.startswith("SigBlk:"))
            return not (int(blocked.split()[1], 16) >> (signum - 1)) & 1

        for thread in threading.enumerate():
            for signum in (signal.SIGTERM, signal.SIGINT):
                print("thread", thread.name, signum.name, takes(thread.native_id, signum),
                      file=sys.stderr)
        ready()
        time.sleep(60)
        """,
        receiver,
    )
    code, _, err = finish(process, signal.SIGTERM)
    assert code == -signal.SIGTERM, err
    takers = {tuple(line.split()[1:]) for line in err.splitlines() if line.startswith("thread ")}
    names = {name for name, _, _ in takers}
    assert {"MainThread", "otel-greenflash-delivery"} <= names, err
    assert len(names) >= 4, err  # the worker and the executor's thread too
    assert {entry for entry in takers if entry[2] == "True"} == {
        ("MainThread", "SIGTERM", "True"),
        ("MainThread", "SIGINT", "True"),
    }, err
    expect_exactly(receiver, ids("masked", 3))
