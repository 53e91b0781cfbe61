"""Deployment tests: real servers in subprocesses, stopped the way orchestrators stop them.

Each test starts a server (or worker, or script) from ``tests/deployments/`` in its own session,
sends it real traffic (HTTP requests, Celery tasks, RQ jobs) that emits one business event per
unit of work, then sends the server's main process SIGTERM (SIGINT for a few), as Kubernetes,
Docker, systemd or a terminal do. The signal comes right after the work, while the events are
still held by the process; the independent receiver (``tests/support/independent_receiver.py``)
answers each request after ``LATENCY`` seconds, so delivering them takes real time after the
signal.

What is checked, per deployment:

* every event of a unit of work that completed (HTTP 200, marker file written) arrived, exactly
  once, counted by the unique ``properties.uid`` each carries, and nothing else arrived;
* no event was sent twice under one ``insertId`` (without a spool nothing is retried here, so a
  second request can only be a double send); with a spool a re-send under the same ``insertId``
  is the documented recovery and is allowed;
* the server's return code is the one it has without this library (measured: ``SERVER_RC``):
  the library must not change how a process ends.

Where each server handles SIGTERM, and when it imports the app (measured with the versions in
the ``test`` extra; ``DEPLOY_STATE_DIR/import-<pid>.txt`` records it per run):

* uvicorn, one process: ``main()`` imports the app first (SIGTERM still SIG_DFL), then
  ``Server.serve()`` installs its handler, restores the previous one after shutdown and raises
  the signal again. With ``--workers``: the supervisor queues signals and SIGTERMs its spawned
  children, which import the app *inside* ``serve()``, after uvicorn's handler is installed.
* gunicorn ``--preload``: the master imports the app before installing its handlers; each
  forked worker resets every handler to SIG_DFL and installs its own; sync/gthread workers end
  with ``sys.exit(0)`` (atexit runs). The uvicorn worker leaves SIGTERM at SIG_DFL (imported
  there without ``--preload``), then uvicorn's ``serve()`` re-raises it: the worker dies by it.
* Celery prefork: the app is imported by the main process before its handlers; pool children
  are forked and leave with ``os._exit`` (billiard).
* RQ: every job runs in a forked work horse that imports the job module (SIGTERM at SIG_DFL),
  and leaves with ``os._exit``; the main worker never imports it.

Run: ``.venv/bin/python -m pytest tests/deployments/test_deployments.py -rA`` (``-rA`` shows
each test's one-line summary: delivered/expected, double sends, return code). With
``PYTHONPATH=<dir>`` the servers import the library from ``<dir>`` (e.g. an export of another
commit).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Fault, Receiver
from tests.support.ports import free_port
from tests.support.processes import clean_env, command, run

REPO = Path(__file__).resolve().parents[2]
LATENCY = 0.1
"""Seconds the receiver waits before answering each event request."""

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "linux", reason="POSIX signals, fork-based servers and /proc"
    ),
    pytest.mark.receiver(latency_seconds=LATENCY),
]

REQUESTS = 100
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
RQ_PUBSUB_POLL_SECONDS = 60.0
"""rq's worker stops its pubsub thread at exit and redis-py (8.2) joins it; that thread polls
every 60 s, so when the unsubscribe reply is read before the stop (seen on a busy machine) the
worker exits up to 60 s after its work is done."""

SIGTERMED = -signal.SIGTERM
"""``Popen.returncode`` of a process ended by SIGTERM's default action."""

# How each server's main process ends on the signal with no library installed, measured with
# the versions in the ``test`` extra by running this file with ``DEPLOY_SETUP=none`` in the
# environment (the apps then skip configure(); the event checks fail, the return codes show):
SERVER_RC = {
    # Server.serve() restores the handlers it replaced and raises the captured signal again.
    "uvicorn SIGTERM": SIGTERMED,
    # ... SIGINT: the re-raised SIGINT meets Python's handler (KeyboardInterrupt), caught by
    # uvicorn's main(), which then returns normally.
    "uvicorn SIGINT": 0,
    # The supervisor queues signals, SIGTERMs its children, joins them and returns.
    "uvicorn --workers": 0,
    # The arbiter raises StopIteration, stops the workers, then sys.exit(0).
    "gunicorn": 0,
    # Event-loop signal handlers (-w 0) or a parent that sets a shutdown event for its spawned
    # workers; every process returns normally (atexit runs).
    "hypercorn": 0,
    # Warm shutdown: waits for running tasks, then exits 0.
    "celery": 0,
    # Warm shutdown: waits for the work horse, then exits 0.
    "rq": 0,
    # A plain script has no handler: SIGTERM's default action; SIGINT: KeyboardInterrupt.
    "script SIGTERM": SIGTERMED,
    "script SIGINT": -signal.SIGINT,  # KeyboardInterrupt uncaught: Python ends by SIGINT
}


# --------------------------------------------------------------------------- processes


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _default_signal_dispositions() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Deployment:
    """One process tree started in its own session; its output goes to ``<name>.log``."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], workdir: Path):
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(args),
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A runner started in the background (``.ci/run &``) passes SIGINT on as ignored,
            # and Python then never raises KeyboardInterrupt: start as an orchestrator would.
            preexec_fn=_default_signal_dispositions,
        )
        self.pgid = self.proc.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        """Wait for ``predicate``; fail at once (with the output) if the process ended."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} ended (rc {self.proc.returncode}) before {what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {what} within {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` to the main process only; wait for it and its whole group to end."""
        os.kill(self.proc.pid, sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running {timeout} s after {sig.name}:\n{self.tail()}")
        if not wait_until(lambda: not group_members(self.pgid), STOP_TIMEOUT, 0.1):
            pytest.fail(f"{self.name}: children {group_members(self.pgid)} outlived the main")
        return rc

    def close(self) -> None:
        if self.proc.poll() is None or group_members(self.pgid):
            with suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._log.close()


@contextmanager
def deployment(
    name: str, args: Sequence[str], env: dict[str, str], workdir: Path
) -> Iterator[Deployment]:
    started = Deployment(name, args, env, workdir)
    try:
        yield started
    finally:
        started.close()


def deploy_env(receiver: Receiver, state_dir: Path, **extra: str) -> dict[str, str]:
    """No GREENFLASH_*/OTEL_* from outside; the receiver's key and URL; the repo importable.

    The worker's schedule and send delays are 5 s (defaults 1 s and 5 ms): the signal comes a
    few seconds after start, right after the work, so the events are still in the process
    then, not sent by chance of the worker's timer (with 1 s, ``uvicorn --workers``, whose
    supervisor passes the signal on up to 0.5 s later, passed one run in two without any
    SIGTERM handling).
    ``OTEL_BSP_SCHEDULE_DELAY`` (zero-code) is 5 s by default already.

    The repository root goes *after* any PYTHONPATH given to pytest, so a run with
    ``PYTHONPATH=<another checkout>`` tests that checkout's library.
    """
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    return clean_env(
        GREENFLASH_API_KEY=receiver.api_key,
        GREENFLASH_BASE_URL=receiver.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_BSP_SCHEDULE_DELAY="5000",
        GREENFLASH_BSP_SEND_DELAY="5000",  # queued events wait for the worker's timer too
        OTEL_SERVICE_NAME="deployment-test",
        PYTHONPATH=pythonpath,
        PYTHONUNBUFFERED="1",
        DEPLOY_STATE_DIR=str(state_dir),
        **extra,
    )


def import_records(state_dir: Path) -> str:
    """The SIGTERM dispositions each process saw around the app's setup (for failures)."""
    return "".join(sorted(p.read_text() for p in state_dir.glob("import-*.txt")))


# --------------------------------------------------------------------------- receiver, checks


def settle(receiver: Receiver) -> None:
    """After the senders are gone: let requests already read get their answer (and count)."""
    receiver.wait_until(lambda: receiver.in_flight == 0, timeout=10)
    seen = -1
    while seen != len(receiver.requests):  # nothing more arriving
        seen = len(receiver.requests)
        time.sleep(0.2)
    receiver.wait_until(lambda: receiver.in_flight == 0, timeout=10)


@dataclass
class Outcome:
    label: str
    expected: set[str]
    returncode: int
    expected_returncode: int
    delivered: Counter[str]
    """uid -> distinct accepted events (insertIds) carrying it."""
    double_sends: int
    """Accepting requests repeating an insertId already accepted."""
    requests: int
    allow_resends: bool = False
    notes: str = ""

    @classmethod
    def collect(
        cls,
        label: str,
        receiver: Receiver,
        expected: set[str],
        returncode: int,
        expected_returncode: int,
        *,
        allow_resends: bool = False,
        notes: str = "",
    ) -> Outcome:
        settle(receiver)
        delivered: Counter[str] = Counter()
        for event in receiver.accepted:
            properties = event.get("properties") or {}
            delivered[str(properties.get("uid"))] += 1
        return cls(
            label,
            expected,
            returncode,
            expected_returncode,
            delivered,
            receiver.duplicates,
            len(receiver.requests),
            allow_resends,
            notes,
        )

    @property
    def summary(self) -> str:
        arrived = len(self.expected & self.delivered.keys())
        extra = sum(count - 1 for count in self.delivered.values() if count > 1)
        return (
            f"{self.label}: delivered {arrived}/{len(self.expected)}, "
            f"duplicate events {extra}, unexpected {len(self.delivered.keys() - self.expected)}, "
            f"double sends by insertId {self.double_sends}, requests {self.requests}, "
            f"rc {self.returncode} (server alone: {self.expected_returncode})"
            + (f"; {self.notes}" if self.notes else "")
        )

    def problems(self) -> list[str]:
        found = []
        missing = self.expected - self.delivered.keys()
        if missing:
            found.append(f"{len(missing)} of {len(self.expected)} events never arrived")
        doubled = sorted(uid for uid, count in self.delivered.items() if count > 1)
        if doubled:
            found.append(f"events arrived more than once (different insertIds): {doubled[:5]}")
        unexpected = sorted(self.delivered.keys() - self.expected)
        if unexpected:
            found.append(f"events of work that never completed arrived: {unexpected[:5]}")
        if self.double_sends and not self.allow_resends:
            found.append(f"{self.double_sends} requests re-sent an insertId already accepted")
        if self.returncode != self.expected_returncode:
            found.append(
                f"return code {self.returncode}, the server alone ends with "
                f"{self.expected_returncode}"
            )
        return found

    def check(self, *details: str) -> None:
        print(self.summary)
        problems = self.problems()
        assert not problems, "\n".join([self.summary, *problems, *details])


def new_uids(prefix: str, n: int) -> list[str]:
    run_id = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run_id}-{i}" for i in range(n)]


# --------------------------------------------------------------------------- HTTP servers


def serves_here(port: int, state_dir: Path) -> bool:
    """``/health`` on ``port`` answers from a process that marked itself ready in this test's
    state directory: this test's server, not another test's that bound the port."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.is_success and (state_dir / f"ready-{response.json()['pid']}").exists()


def drive(port: int, uids: Sequence[str], connections: int = 8) -> Counter[int]:
    """GET /emit?uid=... once per uid over ``connections`` keep-alive clients; every answer
    must be 200. Returns the number of requests each server process answered."""

    def send(chunk: Sequence[str]) -> list[int]:
        pids = []
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False
        ) as client:
            for uid in chunk:
                response = client.get("/emit", params={"uid": uid})
                response.raise_for_status()
                pids.append(int(response.json()["pid"]))
        return pids

    chunks = [uids[i::connections] for i in range(connections)]
    with ThreadPoolExecutor(connections) as pool:
        answered = list(pool.map(send, chunks))
    return Counter(pid for pids in answered for pid in pids)


def run_http(
    label: str,
    args: Sequence[str],
    env: dict[str, str],
    tmp_path: Path,
    receiver: Receiver,
    *,
    workers: int,
    sig: signal.Signals,
    expected_rc: int,
    allow_resends: bool = False,
) -> tuple[Outcome, Deployment]:
    """Start the server, wait until ``workers`` processes serve, send ``REQUESTS`` requests,
    signal the main process right after the last answer, wait for the whole tree to end."""
    state_dir = Path(env["DEPLOY_STATE_DIR"])
    port = int(env["DEPLOY_PORT"])
    uids = new_uids("req", REQUESTS)
    with deployment("server", [a.format(port=port) for a in args], env, tmp_path) as server:
        server.wait_for(
            lambda: (
                len(list(state_dir.glob("ready-*"))) >= workers and serves_here(port, state_dir)
            ),
            f"{workers} serving process(es)",
            START_TIMEOUT,
        )
        per_pid = drive(port, uids)
        rc = server.stop(sig)
        outcome = Outcome.collect(
            label,
            receiver,
            set(uids),
            rc,
            expected_rc,
            allow_resends=allow_resends,
            notes=f"requests per server pid {sorted(per_pid.values())}",
        )
    return outcome, server


def http_env(receiver: Receiver, tmp_path: Path, **extra: str) -> dict[str, str]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    return deploy_env(receiver, state_dir, DEPLOY_PORT=str(free_port()), **extra)


UVICORN = ["tests.deployments.asgi_app:app", "--host", "127.0.0.1", "--port", "{port}"]
UVICORN_QUIET = ["--no-access-log", "--log-level", "warning"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_uvicorn_configure_at_import(
    receiver: Receiver, tmp_path: Path, sig: signal.Signals
) -> None:
    """uvicorn, one process, configure() when uvicorn imports the app (uvicorn's handlers are
    already installed then)."""
    env = http_env(receiver, tmp_path)
    outcome, server = run_http(
        f"uvicorn {sig.name}",
        [command("uvicorn"), *UVICORN, *UVICORN_QUIET],
        env,
        tmp_path,
        receiver,
        workers=1,
        sig=sig,
        expected_rc=SERVER_RC[f"uvicorn {sig.name}"],
    )
    outcome.check(import_records(tmp_path / "state"), server.tail())


def test_uvicorn_workers(receiver: Receiver, tmp_path: Path) -> None:
    """``uvicorn --workers 2``: the supervisor SIGTERMs its spawned workers."""
    env = http_env(receiver, tmp_path)
    outcome, server = run_http(
        "uvicorn --workers 2",
        [command("uvicorn"), *UVICORN, "--workers", "2", *UVICORN_QUIET],
        env,
        tmp_path,
        receiver,
        workers=2,
        sig=signal.SIGTERM,
        expected_rc=SERVER_RC["uvicorn --workers"],
    )
    outcome.check(import_records(tmp_path / "state"), server.tail())


@pytest.mark.parametrize("workers", ["1", "0"], ids=["worker-process", "single-process"])
def test_hypercorn(receiver: Receiver, tmp_path: Path, workers: str) -> None:
    """hypercorn: by default one spawned worker process that its parent stops through an
    event; ``-w 0`` serves in the main process with event-loop signal handlers. Neither
    re-raises: both end normally, so the SDK's atexit shutdown delivers."""
    pytest.importorskip("hypercorn")
    env = http_env(receiver, tmp_path)
    outcome, server = run_http(
        f"hypercorn -w {workers}",
        [
            command("hypercorn"),
            "-w",
            workers,
            "-b",
            "127.0.0.1:{port}",
            "tests.deployments.asgi_app:app",
        ],
        env,
        tmp_path,
        receiver,
        workers=1,
        sig=signal.SIGTERM,
        expected_rc=SERVER_RC["hypercorn"],
    )
    outcome.check(import_records(tmp_path / "state"), server.tail())


def test_uvicorn_zero_code(receiver: Receiver, tmp_path: Path) -> None:
    """``opentelemetry-instrument uvicorn app:app`` with ``OTEL_TRACES_EXPORTER=greenflash``:
    the app never imports this library; the exporter sits in the SDK's BatchSpanProcessor."""
    env = http_env(
        receiver,
        tmp_path,
        DEPLOY_SETUP="none",
        OTEL_TRACES_EXPORTER="greenflash",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    outcome, server = run_http(
        "opentelemetry-instrument uvicorn",
        [command("opentelemetry-instrument"), command("uvicorn"), *UVICORN, *UVICORN_QUIET],
        env,
        tmp_path,
        receiver,
        workers=1,
        sig=signal.SIGTERM,
        expected_rc=SERVER_RC["uvicorn SIGTERM"],
    )
    outcome.check(import_records(tmp_path / "state"), server.tail())


GUNICORN = ["-c", "python:tests.deployments.gunicorn_conf", "--bind", "127.0.0.1:{port}"]


@pytest.mark.parametrize(
    ("worker_args", "sig"),
    [
        (["--worker-class", "sync"], signal.SIGTERM),
        (["--worker-class", "gthread", "--threads", "4"], signal.SIGTERM),
        (["--worker-class", "sync"], signal.SIGINT),
    ],
    ids=["sync-SIGTERM", "gthread-SIGTERM", "sync-SIGINT"],
)
def test_gunicorn_preload_wsgi(
    receiver: Receiver, tmp_path: Path, worker_args: list[str], sig: signal.Signals
) -> None:
    """gunicorn --preload: the app (and configure()) is imported in the master, before the
    master installs its handlers; workers are forked and reset every handler."""
    env = http_env(receiver, tmp_path)
    outcome, server = run_http(
        f"gunicorn --preload {worker_args[1]} {sig.name}",
        [
            command("gunicorn"),
            *GUNICORN,
            "--workers",
            "2",
            *worker_args,
            "--preload",
            "tests.deployments.wsgi_app:app",
        ],
        env,
        tmp_path,
        receiver,
        workers=2,
        sig=sig,
        expected_rc=SERVER_RC["gunicorn"],
    )
    outcome.check(import_records(tmp_path / "state"), server.tail())


def uvicorn_worker_class() -> str:
    if importlib.util.find_spec("uvicorn_worker") is not None:
        return "uvicorn_worker.UvicornWorker"
    return "uvicorn.workers.UvicornWorker"


@pytest.mark.parametrize(
    ("preload", "post_worker_init_hook"),
    [(False, False), (True, True)],
    ids=["import-in-worker", "preload-install_sigterm_handler"],
)
def test_gunicorn_uvicorn_worker(
    receiver: Receiver, tmp_path: Path, preload: bool, post_worker_init_hook: bool
) -> None:
    """gunicorn with the uvicorn worker: the worker resets SIGTERM to SIG_DFL, then uvicorn's
    Server installs, restores and re-raises it. With ``--preload`` the app was imported (and
    configure() run) in the master, before that reset, so docs/deployments.md asks for
    ``otel_greenflash.install_sigterm_handler()`` in ``post_worker_init`` (second case; without
    it every event held at SIGTERM is lost: 0 of 100 measured)."""
    extra = {"DEPLOY_INSTALL_SIGTERM_HANDLER": "1"} if post_worker_init_hook else {}
    env = http_env(receiver, tmp_path, **extra)
    label = f"gunicorn {uvicorn_worker_class()}{' --preload' if preload else ''}"
    outcome, server = run_http(
        label + (" + install_sigterm_handler()" if post_worker_init_hook else ""),
        [
            command("gunicorn"),
            *GUNICORN,
            "--workers",
            "2",
            "--worker-class",
            uvicorn_worker_class(),
            *(["--preload"] if preload else []),
            "tests.deployments.asgi_app:app",
        ],
        env,
        tmp_path,
        receiver,
        workers=2,
        sig=signal.SIGTERM,
        expected_rc=SERVER_RC["gunicorn"],
    )
    outcome.check(import_records(tmp_path / "state"), server.tail())


@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=["SIGTERM"])
def test_uvicorn_with_spool(receiver: Receiver, tmp_path: Path, sig: signal.Signals) -> None:
    """uvicorn with ``GREENFLASH_SPOOL_DIR``: what the stopped server did not deliver, a second
    process (``otel-greenflash spool drain``) delivers; each event once overall."""
    spool = tmp_path / "spool"
    env = http_env(receiver, tmp_path, GREENFLASH_SPOOL_DIR=str(spool))
    outcome, server = run_http(
        "uvicorn + spool",
        [command("uvicorn"), *UVICORN, *UVICORN_QUIET],
        env,
        tmp_path,
        receiver,
        workers=1,
        sig=sig,
        expected_rc=SERVER_RC["uvicorn SIGTERM"],
        allow_resends=True,
    )
    before = len(receiver.accepted)
    pending, drain = drain_spool(spool, env)
    outcome = Outcome.collect(
        "uvicorn + spool",
        receiver,
        outcome.expected,
        outcome.returncode,
        outcome.expected_returncode,
        allow_resends=True,
        notes=f"{before} delivered by the server, {pending} left in the spool, "
        f"drain: {drain.stdout.strip()!r} rc {drain.returncode}",
    )
    outcome.check(drain.stderr, server.tail())
    assert drain.returncode == 0, drain.stdout + drain.stderr


# --------------------------------------------------------------------------- spool helpers


def drain_spool(spool: Path, env: dict[str, str]) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Events left in ``spool`` (``spool inspect``), then ``spool drain`` as a second process."""
    cli = command("otel-greenflash")
    inspect = run([cli, "spool", "inspect", str(spool)], env, timeout=60)
    match = re.search(r"(\d+) event\(s\) pending", inspect.stdout)
    assert match is not None, inspect.stdout + inspect.stderr
    drain = run([cli, "spool", "drain", str(spool), "--timeout", "20"], env, timeout=60)
    return int(match.group(1)), drain


# --------------------------------------------------------------------------- plain script


def run_script(
    label: str,
    receiver: Receiver,
    tmp_path: Path,
    sig: signal.Signals,
    expected_rc: int,
    **extra: str,
) -> tuple[Outcome, Deployment]:
    """The script emits 21 events, prints ``emitted`` and sleeps: signalled right then."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    prefix = new_uids("script", 1)[0]
    env = deploy_env(receiver, state_dir, DEPLOY_UID_PREFIX=prefix, **extra)
    args = [sys.executable, "-m", "tests.deployments.script"]
    with deployment("script", args, env, tmp_path) as script:
        script.wait_for(lambda: "emitted" in script.output, "'emitted'", START_TIMEOUT)
        rc = script.stop(sig)
        outcome = Outcome.collect(
            label,
            receiver,
            {f"{prefix}-{i}" for i in range(21)},
            rc,
            expected_rc,
            allow_resends="GREENFLASH_SPOOL_DIR" in extra,
        )
    return outcome, script


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_plain_script(receiver: Receiver, tmp_path: Path, sig: signal.Signals) -> None:
    outcome, script = run_script(
        f"script {sig.name}", receiver, tmp_path, sig, SERVER_RC[f"script {sig.name}"]
    )
    outcome.check(script.tail())


def test_plain_script_with_spool(receiver: Receiver, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    outcome, script = run_script(
        "script + spool",
        receiver,
        tmp_path,
        signal.SIGTERM,
        SERVER_RC["script SIGTERM"],
        GREENFLASH_SPOOL_DIR=str(spool),
    )
    before = len(receiver.accepted)
    env = deploy_env(receiver, tmp_path / "state")
    pending, drain = drain_spool(spool, env)
    outcome = Outcome.collect(
        "script + spool",
        receiver,
        outcome.expected,
        outcome.returncode,
        outcome.expected_returncode,
        allow_resends=True,
        notes=f"{before} delivered by the script, {pending} left in the spool, "
        f"drain: {drain.stdout.strip()!r} rc {drain.returncode}",
    )
    outcome.check(drain.stderr, script.tail())
    assert drain.returncode == 0, drain.stdout + drain.stderr


def test_termination_is_bounded_and_spools_against_a_hanging_api(tmp_path: Path) -> None:
    """The API never answers: SIGTERM still ends the script (within
    ``GREENFLASH_TERMINATION_TIMEOUT``, here 1 s; the wait is 30 s), by SIGTERM, with every
    event in the spool; a later drain to a working API delivers each once."""
    spool = tmp_path / "spool"
    with Receiver(mix={Fault.hang(): 1.0}) as api:
        outcome, script = run_script(
            "script + spool, API hanging",
            api,
            tmp_path,
            signal.SIGTERM,
            SERVER_RC["script SIGTERM"],
            GREENFLASH_SPOOL_DIR=str(spool),
            GREENFLASH_TERMINATION_TIMEOUT="1000",
        )
        assert api.accepted == []
        api.clear_faults()  # the same API (key and endpoint: the spool's) answers again
        env = deploy_env(api, tmp_path / "state")
        pending, drain = drain_spool(spool, env)
        outcome = Outcome.collect(
            outcome.label,
            api,
            outcome.expected,
            outcome.returncode,
            outcome.expected_returncode,
            allow_resends=True,
            notes=f"{pending} left in the spool, drain: {drain.stdout.strip()!r}",
        )
    outcome.check(drain.stderr, script.tail())


def test_handle_sigterm_false_leaves_sigterm_alone(receiver: Receiver, tmp_path: Path) -> None:
    """``GREENFLASH_HANDLE_SIGTERM=false``: configure() installs no handler, SIGTERM's default
    action ends the script."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    env = deploy_env(receiver, state_dir, GREENFLASH_HANDLE_SIGTERM="false")
    args = [sys.executable, "-m", "tests.deployments.script"]
    with deployment("script", args, env, tmp_path) as script:
        script.wait_for(lambda: "emitted" in script.output, "'emitted'", START_TIMEOUT)
        rc = script.stop(signal.SIGTERM)
        output = script.output
    print(f"GREENFLASH_HANDLE_SIGTERM=false: rc {rc}, {output.splitlines()[0]}")
    assert "sigterm=SIG_DFL" in output.splitlines(), output
    assert rc == SIGTERMED, output


# --------------------------------------------------------------------------- Celery


def test_celery_prefork_warm_shutdown(receiver: Receiver, tmp_path: Path) -> None:
    """``celery worker --pool prefork --concurrency 2`` on the filesystem broker: 20 tasks
    queued, SIGTERM to the main process while tasks run (warm shutdown). Every task that ran
    (marker file) has its event, once; tasks not started stay queued and send nothing."""
    celery = pytest.importorskip("celery")
    from tests.deployments._broker import broker_options

    state_dir, markers, broker = tmp_path / "state", tmp_path / "markers", tmp_path / "broker"
    for directory in (state_dir, markers, broker / "queue", broker / "processed"):
        directory.mkdir(parents=True)
    uids = new_uids("task", 20)
    producer = celery.Celery(
        "enqueue", broker="filesystem://", broker_transport_options=broker_options(broker)
    )
    for uid in uids:
        producer.send_task("deploy.work", args=[uid, str(markers)])
    producer.close()

    env = deploy_env(receiver, state_dir, DEPLOY_BROKER_DIR=str(broker))
    args = [
        command("celery"),
        "-A",
        "tests.deployments.celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "--hostname",
        f"deploy-{uuid.uuid4().hex[:6]}@localhost",
    ]
    with deployment("celery", args, env, tmp_path) as worker:
        worker.wait_for(lambda: len(list(markers.iterdir())) >= 4, "4 finished tasks", 60)
        rc = worker.stop(signal.SIGTERM)
        ran = {path.name for path in markers.iterdir()}
        outcome = Outcome.collect(
            "celery prefork", receiver, ran, rc, SERVER_RC["celery"], notes=f"{len(ran)}/20 ran"
        )
    assert len(ran) < len(uids), "every task ran before the signal: nothing was running"
    outcome.check(import_records(state_dir), worker.tail())


# --------------------------------------------------------------------------- RQ


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """A private redis-server on a free port (skips when redis-server is not installed)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    redis = pytest.importorskip("redis")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data)]
    args += ["--appendonly", "no"]
    with deployment("redis", args, clean_env(), data) as started:
        client = redis.Redis(port=port)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        started.wait_for(pong, "PONG", START_TIMEOUT)
        client.close()
        yield port


@pytest.mark.parametrize(
    ("busy", "preloaded"),
    [(False, False), (True, False), (True, True)],
    ids=["idle", "busy", "busy-preloaded"],
)
def test_rq_worker(
    receiver: Receiver, tmp_path: Path, redis_port: int, busy: bool, preloaded: bool
) -> None:
    """``rq worker``: each job runs in a forked work horse that leaves with os._exit. SIGTERM
    to the worker when every job is done (idle) or while a job runs (busy: warm shutdown).
    By default the horse is the first process to import the jobs module (and the library);
    ``preloaded``: the main worker imports it first (``-c tests.deployments.rq_settings``)."""
    from redis import Redis
    from rq import Queue, Worker

    state_dir, markers = tmp_path / "state", tmp_path / "markers"
    state_dir.mkdir()
    markers.mkdir()
    jobs = 10 if busy else 5
    uids = new_uids("job", jobs)
    with Redis(port=redis_port) as connection:
        queue = Queue("deploy", connection=connection)
        for uid in uids:
            queue.enqueue("tests.deployments.rq_jobs.work", uid, str(markers))

    env = deploy_env(receiver, state_dir)
    url = f"redis://127.0.0.1:{redis_port}"
    args = [command("rq"), "worker", "deploy", "--url", url, "--logging_level", "INFO"]
    if preloaded:
        args += ["-c", "tests.deployments.rq_settings"]
    with deployment("rq", args, env, tmp_path) as worker:
        wanted = 3 if busy else jobs
        worker.wait_for(lambda: len(list(markers.iterdir())) >= wanted, "finished jobs", 60)
        if not busy:  # the last horse has exited and the worker waits for work again
            with Redis(port=redis_port) as connection:
                worker.wait_for(
                    lambda: [w.get_state() for w in Worker.all(connection=connection)] == ["idle"],
                    "the worker idle",
                    START_TIMEOUT,
                )
        rc = worker.stop(signal.SIGTERM, STOP_TIMEOUT + RQ_PUBSUB_POLL_SECONDS)
        ran = {path.name for path in markers.iterdir()}
        outcome = Outcome.collect(
            f"rq {'busy' if busy else 'idle'}{', preloaded' if preloaded else ''}",
            receiver,
            ran,
            rc,
            SERVER_RC["rq"],
            notes=f"{len(ran)}/{jobs} ran",
        )
    if busy:
        assert len(ran) < jobs, "every job ran before the signal: the worker was not busy"
    outcome.check(import_records(state_dir), worker.tail())
