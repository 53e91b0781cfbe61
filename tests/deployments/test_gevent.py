"""gevent and eventlet: monkey-patched processes stopped by SIGTERM, the way orchestrators do.

Under ``gevent.monkey.patch_all()`` Python signal handlers run inside gevent's hub, where
nothing may block, and ``threading.Thread`` starts a greenlet. What is checked:

* ``gunicorn -k gevent``: 20 slow requests in flight when the arbiter gets SIGTERM; every one
  completes (the worker's graceful shutdown), each of their 20 events arrives once, the
  arbiter ends as it does without this library (0) and no worker exits with an error;
* a plain script that calls ``gevent.monkey.patch_all()`` (or ``eventlet.monkey_patch()``)
  first: SIGTERM delivers every held event and the script still ends by SIGTERM.

(gunicorn 27, the version tested, has no eventlet worker: eventlet is checked with a plain
script.)
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.deployments.test_deployments import (
    LATENCY,
    SERVER_RC,
    START_TIMEOUT,
    Outcome,
    deploy_env,
    deployment,
    new_uids,
    serves_here,
)
from tests.support.independent_receiver import Fault, Receiver
from tests.support.ports import free_port
from tests.support.processes import command, run, run_script

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "linux", reason="POSIX signals, fork-based servers and /proc"
    ),
    pytest.mark.receiver(latency_seconds=LATENCY),
]

IN_FLIGHT = 20
SLOW_SECONDS = 2.0
"""How long each request takes: it is still running when the SIGTERM comes."""


def _worker_exit_codes(log: str) -> list[int]:
    """Exit codes gunicorn's arbiter reported for its workers (it reports only non-zero ones)."""
    return [int(code) for code in re.findall(r"Worker \(pid:\d+\) exited with code (\d+)", log)]


def _require(module: str) -> None:
    """Skip unless ``module`` is installed, without importing it here: importing eventlet
    in the test process makes every later fork warn."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def test_gunicorn_gevent_worker_finishes_requests_in_flight(
    receiver: Receiver, tmp_path: Path
) -> None:
    """``gunicorn -k gevent``: the worker monkey-patches, installs its handlers, then imports
    the app (configure() chains to gunicorn's SIGTERM handler from inside the patched process).
    SIGTERM to the arbiter while 20 requests sleep: all complete, all 20 events arrive."""
    _require("gevent")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    port = free_port()
    env = deploy_env(receiver, state_dir)
    uids = new_uids("gevent", IN_FLIGHT)
    args = [
        command("gunicorn"),
        "-c",
        "python:tests.deployments.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gevent",
        "tests.deployments.gevent_app:app",
    ]

    def request(uid: str) -> int:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{port}/slow",
                params={"uid": uid, "seconds": SLOW_SECONDS},
                timeout=30,
                trust_env=False,
            )
        except httpx.HTTPError:
            return 0  # reset or refused: the request was cut
        return response.status_code

    with deployment("gunicorn-gevent", args, env, tmp_path) as server:
        server.wait_for(
            lambda: serves_here(port, state_dir),
            "a serving worker",
            START_TIMEOUT,
        )
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            answers = pool.map(request, uids)
            server.wait_for(
                lambda: len(list(state_dir.glob("inflight-*"))) == IN_FLIGHT,
                f"{IN_FLIGHT} requests in flight",
                START_TIMEOUT,
            )
            rc = server.stop(signal.SIGTERM)
            statuses = list(answers)
        completed = {uid for uid, status in zip(uids, statuses, strict=True) if status == 200}
        log = server.output
        outcome = Outcome.collect(
            "gunicorn -k gevent",
            receiver,
            set(uids),
            rc,
            SERVER_RC["gunicorn"],
            notes=f"requests completed {len(completed)}/{IN_FLIGHT}, "
            f"worker exit codes {_worker_exit_codes(log) or [0]}",
        )
    print(outcome.summary)
    assert len(completed) == IN_FLIGHT, outcome.summary + "\n" + server.tail()
    assert _worker_exit_codes(log) == [], outcome.summary + "\n" + server.tail()
    assert "BlockingSwitchOutError" not in log, server.tail()
    outcome.check(server.tail())


@pytest.mark.parametrize("busy", [False, True], ids=["sleeping", "busy"])
@pytest.mark.parametrize("patcher", ["gevent", "eventlet"])
def test_monkey_patched_script_sigterm(
    receiver: Receiver, tmp_path: Path, patcher: str, busy: bool
) -> None:
    """A script that monkey-patches first, configures, emits 21 events and sleeps: SIGTERM
    delivers all 21 and the script still ends by SIGTERM. ``busy``: the script computes in its
    main greenlet when SIGTERM comes (never yielding to the hub): the handler delivers there and
    ends the process within the stop deadline, not when the computation would end ten minutes
    later."""
    _require(patcher)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    label = "busy" if busy else "patched"
    prefix = new_uids(label, 1)[0]
    env = deploy_env(receiver, state_dir, DEPLOY_UID_PREFIX=prefix, DEPLOY_PATCHER=patcher)
    if busy:
        env["DEPLOY_BUSY"] = "1"
    args = [sys.executable, "-m", "tests.deployments.gevent_script"]
    with deployment(f"{patcher}-{label}-script", args, env, tmp_path) as script:
        script.wait_for(lambda: "emitted" in script.output, "'emitted'", START_TIMEOUT)
        started = time.monotonic()
        rc = script.stop(signal.SIGTERM)
        seconds = time.monotonic() - started
        outcome = Outcome.collect(
            f"{patcher} {label} script",
            receiver,
            {f"{prefix}-{i}" for i in range(21)},
            rc,
            SERVER_RC["script SIGTERM"],
            notes=f"ended {seconds:.1f} s after SIGTERM",
        )
    outcome.check(script.tail())
    assert "Traceback" not in script.output, script.tail()


def _asleep(pid: int) -> bool:
    """True when ``pid``'s main thread sleeps (in the hub's poll, once the script waits)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "S"


@pytest.mark.parametrize("patcher", ["gevent", "eventlet"])
def test_forked_children_end_by_sigterm_with_their_events(
    receiver: Receiver, tmp_path: Path, patcher: str
) -> None:
    """A patched script configures, then forks twice (three generations, each holding 10
    events while it sleeps in the hub). SIGTERM to each in turn, youngest first: each delivers
    its events and ends by SIGTERM, its parent still handling its own afterwards. Each child
    has pipes of its own, as many as its parent (under eventlet the hand-off pipe is renewed in
    the child and the parent's copy closed there, not shared or piling up)."""
    _require(patcher)
    prefix = new_uids("forked", 1)[0]
    env = deploy_env(receiver, tmp_path, DEPLOY_UID_PREFIX=prefix, DEPLOY_PATCHER=patcher)
    args = [sys.executable, "-m", "tests.deployments.gevent_fork_script"]
    seconds: list[float] = []
    with deployment(f"{patcher}-fork", args, env, tmp_path) as script:

        def wait_for_line(pattern: str) -> re.Match[str]:
            def found() -> re.Match[str] | None:
                return re.search(pattern, script.output, re.MULTILINE)

            script.wait_for(lambda: found() is not None, pattern, START_TIMEOUT)
            match = found()
            assert match is not None
            return match

        def wait_asleep(pid: int) -> None:
            script.wait_for(lambda: _asleep(pid), f"{pid} asleep", START_TIMEOUT)

        for generation in (2, 1, 0):
            pid = int(wait_for_line(rf"^emitted {generation} (\d+)$")[1])
            wait_asleep(pid)
            started = time.monotonic()
            if generation == 0:
                rc = script.stop(signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
                wait_for_line(rf"^child {pid} ended")
            seconds.append(time.monotonic() - started)
        output = script.output
        outcome = Outcome.collect(
            f"{patcher} forked twice",
            receiver,
            {f"{prefix}-{g}-{i}" for g in range(3) for i in [*map(str, range(10)), "start"]},
            rc,
            SERVER_RC["script SIGTERM"],
            notes="ended " + ", ".join(f"{s:.1f}" for s in seconds) + " s after SIGTERM",
        )
    children = [int(code) for code in re.findall(r"^child \d+ ended (-?\d+)$", output, re.M)]
    assert children == [-signal.SIGTERM] * 2, outcome.summary + "\n" + output
    assert "Traceback" not in output, output
    pipes = [
        set(inodes.split(",")) - {""}
        for inodes in re.findall(r"^pipes \d \d+ (.*)$", output, re.MULTILINE)
    ]
    assert len(pipes) == 3, output
    for parent, child in itertools.pairwise(pipes):
        assert len(child) == len(parent), f"pipes piling up across forks: {pipes}"
        assert not child & parent, f"pipes shared with the parent: {pipes}"
    outcome.check(output)


@pytest.mark.parametrize("patcher", ["gevent", "eventlet", "none"])
def test_shutdown_from_on_error_delivers_before_the_process_exits(
    tmp_path: Path, patcher: str
) -> None:
    """``on_error`` calls ``shutdown()`` while 20 events wait for their open root span, and the
    script returns at once: the exit waits for that shutdown, which sends the 20 (unlinked),
    and every event is counted once (20 sent, 1 failed); the process exits 0. Under gevent the
    callback runs on the delivery loop's OS thread, where a ``threading.Thread`` would be a
    greenlet of that thread's hub; elsewhere that thread was a daemon the exit cut short."""
    if patcher != "none":
        _require(patcher)
    prefix = new_uids("callback-shutdown", 1)[0]
    with Receiver(latency_seconds=LATENCY, faults=[Fault.status(422)]) as receiver:
        env = deploy_env(receiver, tmp_path, DEPLOY_UID_PREFIX=prefix, DEPLOY_PATCHER=patcher)
        env["GREENFLASH_BSP_SCHEDULE_DELAY"] = "50"  # the refused event goes out at once
        started = time.monotonic()
        result = run([sys.executable, "-m", "tests.deployments.gevent_callback_shutdown"], env)
        seconds = time.monotonic() - started
        outcome = Outcome.collect(
            f"{patcher}: shutdown() from on_error",
            receiver,
            {f"{prefix}-{i}" for i in range(20)},
            result.returncode,
            0,
            notes=f"exited after {seconds:.1f} s",
        )
        assert receiver.errors == []
    output = result.stdout + result.stderr
    assert "shutdown asked by on_error(['EventRejectedError'])" in output, output
    stats = json.loads(re.findall(r"^stats (.*)$", result.stdout, re.MULTILINE)[-1])
    counted = {key: stats[key] for key in ("queued", "sent", "failed", "invalid", "dropped")}
    assert counted == {"queued": 21, "sent": 20, "failed": 1, "invalid": 0, "dropped": {}}, output
    assert stats["waiting"] == 0, output
    assert "Traceback" not in output, output
    outcome.check(output)


def test_application_asyncio_run_under_gevent(receiver: Receiver, tmp_path: Path) -> None:
    """After configure() under ``patch_all()``, the application's own ``asyncio.run()`` works
    (the delivery loop runs on an OS thread: in a greenlet, every greenlet of the main thread
    saw it running) and the events emitted before and after it are delivered."""
    _require("gevent")
    source = """
        from gevent import monkey

        monkey.patch_all()

        import asyncio

        import otel_greenflash
        from opentelemetry import trace
        from tests.deployments._events import emit

        otel_greenflash.configure()
        emit("before", "asyncio-before")
        print(asyncio.run(asyncio.sleep(0.01, result="asyncio.run ok")), flush=True)
        emit("after", "asyncio-after")
        trace.get_tracer_provider().shutdown()
    """
    env = deploy_env(receiver, tmp_path)
    result = run_script(tmp_path, source, env)
    outcome = Outcome.collect(
        "gevent + asyncio.run",
        receiver,
        {"asyncio-before", "asyncio-after"},
        result.returncode,
        0,
    )
    assert "asyncio.run ok" in result.stdout, result.stdout + result.stderr
    outcome.check(result.stderr)


def test_unpatched_process_never_imports_gevent_or_eventlet(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Without monkey-patching, the library asks nothing of gevent or eventlet and imports
    neither (both are installed here), and its threads are ordinary ``threading`` threads."""
    source = """
        import sys
        import threading

        import otel_greenflash
        from otel_greenflash import _green

        otel_greenflash.configure()
        names = sorted(thread.name for thread in threading.enumerate())
        print(_green.patcher(), _green.on_main_thread(), "otel-greenflash-delivery" in names)
        print(sorted(name for name in sys.modules if name.startswith(("gevent", "eventlet"))))
    """
    result = run_script(tmp_path, source, deploy_env(receiver, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None True True", "[]"], result.stdout + result.stderr
