"""Shared pieces: local servers in their own processes, CPU/RSS readers, result rows."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import Tracer

from otel_greenflash import GreenflashSpanProcessor

PRODUCT_ID = "123e4567-e89b-12d3-a456-426614174000"


@dataclass
class Row:
    """One comparison: our figure, the baseline's, and their ratio (ours / baseline)."""

    scenario: str
    metric: str
    ours: float
    baseline_name: str
    baseline: float
    target: str = ""

    @property
    def ratio(self) -> float:
        """``nan`` when both are 0 (e.g. no duplicates on either side), ``inf`` when only the
        baseline is."""
        if self.baseline:
            return self.ours / self.baseline
        return float("nan") if self.ours == 0 else float("inf")

    @property
    def verdict(self) -> str:
        """``ok`` / ``MISSED`` for the targets a number can settle (``≥ 3×``, ``≤ 0.5×``,
        ``≤ 1.00`` on the ratio; ``= 1.0``, ``= 0`` on ours; ``≤ +5 µs`` on ours − baseline);
        empty for the rest (info rows, ``bounded``)."""
        found = re.fullmatch(r"([≤≥=]) ?([+]?)([0-9.]+) ?(×|µs)?", self.target.strip())
        if found is None:
            return ""
        sign, plus, number, _ = found.groups()
        bound = float(number)
        if plus:
            value = self.ours - self.baseline
        elif sign == "=":
            value = self.ours
        else:
            value = self.ratio
        if sign == "≥":
            met = value >= bound
        elif sign == "≤":
            met = value <= bound
        else:
            met = abs(value - bound) < 1e-9
        return "ok" if met else "MISSED"


def print_header() -> None:
    header = (
        f"{'scenario':<56}{'metric':<16}{'ours':>10}  {'baseline':<34}{'base':>10}"
        f"{'ratio':>8}  target"
    )
    print(header)
    print("-" * len(header), flush=True)


def print_rows(rows: list[Row]) -> None:
    for row in rows:
        print(
            f"{row.scenario:<56}{row.metric:<16}{row.ours:>10.2f}  {row.baseline_name:<34}"
            f"{row.baseline:>10.2f}{row.ratio:>8.3f}  {row.target}  {row.verdict}".rstrip(),
            flush=True,
        )


def cpu_seconds() -> float:
    """User + system CPU of this whole process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (all its threads) so far, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    """Resident set size now (Linux ``/proc``; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ServerProcess:
    """``otel-greenflash serve``-like server in its own process (so CPU is measured apart)."""

    def __init__(self, latency_ms: float) -> None:
        code = (
            "import sys, time\n"
            "from otel_greenflash.testing import EventsApiServer\n"
            f"server = EventsApiServer(latency_seconds={latency_ms / 1000!r}).start()\n"
            "print(server.base_url, server.api_key, flush=True)\n"
            "sys.stdin.read()\n"
        )
        self._process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.base_url, self.api_key = self._process.stdout.readline().split()

    def counts(self) -> dict[str, int]:
        response = httpx.get(self.base_url + "/_local/stats", timeout=10)
        return dict(response.json())

    def stop(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)


@contextmanager
def server_process(latency_ms: float) -> Iterator[ServerProcess]:
    server = ServerProcess(latency_ms)
    try:
        yield server
    finally:
        server.stop()


class FastReceiver:
    """``python -m benchmarks._receiver`` in its own process: a loopback Events API that costs
    a few µs of CPU per request, so the client is what a delivery benchmark measures."""

    def __init__(self, latency_ms: float, fault_mix: str | None = None, seed: int = 0) -> None:
        command = [sys.executable, "-m", "benchmarks._receiver", "--latency-ms", str(latency_ms)]
        if fault_mix:
            command += ["--fault-mix", fault_mix, "--seed", str(seed)]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2:
            self.stop()
            raise RuntimeError(f"benchmarks._receiver did not start (exit {self._process.poll()})")
        self.base_url: str = line[0]
        """``http://127.0.0.1:PORT/api/v1``: clients ``POST {base_url}/events``."""
        self.api_key: str = line[1]
        self.pid: int = self._process.pid
        address = urlsplit(self.base_url)
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 80

    def _call(self, method: str, path: str) -> Any:
        return _receiver_call(self._host, self._port, method, path)

    def stats(self) -> dict[str, Any]:
        """``accepted`` (distinct insertIds answered 200), ``duplicates``, ``requests`` (event
        POSTs received, faulted ones included), ``peak_concurrency``, plus ``unauthorized``,
        ``faults`` (count per kind), ``in_flight``, ``connections``, ``cpu_seconds``."""
        return dict(self._call("GET", "/stats"))

    def reset(self) -> None:
        """Zeroes the counters, forgets insertIds and restarts the fault draw from the seed."""
        self._call("POST", "/reset")

    def stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            with suppress(OSError):
                self._process.stdin.close()  # the receiver exits at end of stdin
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def _receiver_call(host: str, port: int, method: str, path: str) -> Any:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}")
        return json.loads(body)
    finally:
        connection.close()


def receiver_stats(base_url: str) -> dict[str, Any]:
    """``FastReceiver.stats()`` from another process that only knows the receiver's URL."""
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    return dict(_receiver_call(host, port, "GET", "/stats"))


@contextmanager
def fast_receiver(
    latency_ms: float, fault_mix: str | None = None, seed: int = 0
) -> Iterator[FastReceiver]:
    """Starts ``benchmarks._receiver`` (answers after ``latency_ms``; ``fault_mix`` like
    ``"reset=0.06,hang=0.06,drip=0.06,429=0.06,503=0.06"``, drawn from ``seed``), stops it at
    exit."""
    receiver = FastReceiver(latency_ms, fault_mix, seed)
    try:
        yield receiver
    finally:
        receiver.stop()


def run_child(module: str, *args: str) -> dict[str, float]:
    """Run ``python -m benchmarks.<module> args`` in a fresh interpreter; parse its JSON line."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={k: v for k, v in os.environ.items() if not k.startswith(("GREENFLASH_", "OTEL_"))},
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.{module} {args} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def emit_json(values: dict[str, float]) -> None:
    print(json.dumps(values), flush=True)


def now() -> float:
    return time.perf_counter()


# -- emitting events as an application would ----------------------------------------------------

EMIT_CHUNK = 128
"""Event spans emitted between two looks at the span queue's depth."""
PACE_SLEEP_SECONDS = 0.002


def default_processor(base_url: str, api_key: str) -> GreenflashSpanProcessor:
    """The processor as a user gets it: only the key, the endpoint and the product id; every
    other setting is the library's default (``GREENFLASH_*`` variables aside)."""
    return GreenflashSpanProcessor(api_key=api_key, base_url=base_url, product_id=PRODUCT_ID)


def emit_events(tracer: Tracer, start: int, stop: int) -> None:
    """Event spans ``start`` … ``stop - 1`` (root spans: nothing to wait for), back to back."""
    for index in range(start, stop):
        with tracer.start_as_current_span("task") as span:
            span.set_attributes(
                {
                    "greenflash.event.type": "task_success",
                    "greenflash.event.value": index,
                    "greenflash.conversation.external_id": f"chat-{index}",
                }
            )


def queue_depth(processor: GreenflashSpanProcessor, emitted: int, queued_before: int) -> int:
    """Event spans emitted (one event each) and not yet taken off the span queue by the worker,
    from the public ``stats()``: ``queued`` counts what the worker took."""
    stats = processor.stats()
    return emitted - (stats["queued"] - queued_before) - sum(stats["dropped"].values())


def emit_paced(
    processor: GreenflashSpanProcessor,
    emit: Callable[[int, int], None],
    count: int,
    queued_before: int,
    start: int = 0,
) -> float:
    """Calls ``emit(a, b)`` for event spans ``start`` … ``start + count - 1`` in chunks of
    ``EMIT_CHUNK``, sleeping before a chunk while the span queue is deeper than
    ``max_queue_size - 2 × EMIT_CHUNK`` (a full queue drops new spans: a busy app that must
    not lose events waits like this). ``queued_before`` is ``stats()["queued"]`` before the
    first of these spans. Returns the seconds spent waiting for room."""
    high_water = processor.config.max_queue_size - 2 * EMIT_CHUNK
    waited = 0.0
    emitted = 0
    while emitted < count:
        if queue_depth(processor, emitted, queued_before) > high_water:
            began = time.perf_counter()
            while queue_depth(processor, emitted, queued_before) > high_water:
                time.sleep(PACE_SLEEP_SECONDS)
            waited += time.perf_counter() - began
        chunk = min(EMIT_CHUNK, count - emitted)
        emit(start + emitted, start + emitted + chunk)
        emitted += chunk
    return waited
