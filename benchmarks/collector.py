"""The OpenTelemetry Collector in front of the gateway: spans/s and CPU per span, in one run, of

- (a) the Collector alone: docs/gateway.md's ``single-gateway`` configuration, its OTLP/HTTP
  exporter aimed at a null sink (a second Collector from the same binary: ``otlp`` receiver,
  ``nop`` exporter);
- (b) the same configuration aimed at one gateway;
- (c) docs/gateway.md's ``load-balancing`` configuration (the trace id copied into a routing
  attribute by the ``transform`` processor, OTLP/gRPC to each replica)
  over three gateways (static resolver, loopback);
- (d) one gateway alone, the load posted straight to it;

with ratios against (a).

``python -m benchmarks.collector [--quick]``

The configurations are read from docs/gateway.md as documented (defaults everywhere); an
overlay, merged over them by the Collector, only sets loopback addresses, free ports and the
Collector's own metrics endpoint (on, as by default; it is where the sink's span count is read).
The gateways run at their defaults (durable spool on, bearer token set) and deliver to
``benchmarks._receiver`` (0 ms latency). The load is ``benchmarks.gateway_ingest``'s: pre-encoded
OTLP/HTTP protobuf batches of 512 spans, traces of 10 spans, 1 % of spans business events,
posted on 8 connections from this process.

A run ends when the last hop holds every span (the sink's accepted-spans metric, or the
gateways' ``/stats``) and, with gateways, the receiver has accepted every event: the Collector
answers a request once it is queued, so the client's own time would flatter it. CPU is
user + system time from ``/proc/<pid>/stat`` of each server process (the Collectors, the
gateways, the sink), over the run; this process (the client) and the Events API stand-in are
not counted. Each configuration runs once to warm up, then the four run in turn, several rounds
(new traces each round, the same bodies for all four); the figures are the medians.

The Collector binary is ``tests/collector/distribution/.build/otelcol``; when it is missing it
is built there with ``go build -trimpath -o .build/otelcol .`` (needs Go; the binary is
git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._common import FastReceiver, fast_receiver, process_cpu_seconds
from .gateway_ingest import (
    BATCH,
    CONCURRENCY,
    GatewayProcess,
    count_events,
    free_port,
    payloads,
    post_all,
)

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = ROOT / "tests" / "collector" / "distribution"
BINARY = DISTRIBUTION / ".build" / "otelcol"
GATEWAY_DOC = ROOT / "docs" / "gateway.md"
READY = "Everything is ready"
WAIT_SECONDS = 180.0
POLL_SECONDS = 0.02
SINK_SPANS = "otelcol_receiver_accepted_spans"
ROLES = ("collector", "gateways", "sink")

NULL_SINK: dict[str, Any] = {
    "exporters": {"nop": {}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nop"]}}},
}
"""The null sink: the OTLP receiver (added by the overlay) and the ``nop`` exporter."""


def collector_binary() -> Path:
    """The Collector the tests use, (re)built by ``go build``: seconds when the recipe has
    not changed since the last build (Go's build cache), minutes on a fresh machine."""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        if BINARY.exists():
            return BINARY
        raise SystemExit(f"{BINARY} is missing and Go is not installed to build it")
    BINARY.parent.mkdir(exist_ok=True)
    subprocess.run([go, "build", "-trimpath", "-o", str(BINARY), "."], cwd=DISTRIBUTION, check=True)
    return BINARY


def documented_config(name: str) -> str:
    """The YAML block after ``<!-- collector-config: NAME -->`` in docs/gateway.md."""
    after = GATEWAY_DOC.read_text().split(f"<!-- collector-config: {name} -->", 1)[1]
    found = re.match(r"\s*```yaml\n(.*?)\n```", after, re.DOTALL)
    if found is None:
        raise SystemExit(f"docs/gateway.md has no collector-config {name}")
    return found.group(1) + "\n"


class CollectorProcess:
    """One Collector: ``configs`` (YAML texts) merged in order, then an overlay putting its OTLP
    receiver and its own metrics on free loopback ports."""

    def __init__(
        self, directory: Path, configs: Sequence[str], overlay: dict[str, Any], token: str
    ) -> None:
        self.http_url = f"http://127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        ports = {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
                        "http": {"endpoint": self.http_url.removeprefix("http://")},
                    }
                }
            },
            "service": {
                "telemetry": {
                    "metrics": {
                        "readers": [
                            {
                                "pull": {
                                    "exporter": {
                                        "prometheus": {
                                            "host": "127.0.0.1",
                                            "port": self.metrics_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                }
            },
        }
        directory.mkdir(parents=True)
        arguments: list[str] = []
        layers = [*configs, json.dumps(ports), json.dumps(overlay)]  # JSON is YAML
        for index, text in enumerate(layers):
            path = directory / f"config-{index}.yaml"
            path.write_text(text)
            arguments += ["--config", f"file:{path}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENFLASH_", "OTEL_"))}
        env["GREENFLASH_GATEWAY_TOKEN"] = token
        self.log_path = directory / "collector.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(collector_binary()), *arguments],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        deadline = time.monotonic() + 60
        while READY not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Collector did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def metric(self, name: str) -> float:
        """The sum of a metric's series in the Collector's own Prometheus endpoint."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
        return sum(float(value) for value in pattern.findall(text))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Setup:
    """One configuration: where the load goes, the processes whose CPU counts (by role), and
    how many spans and requests its last hop took so far (requests: gateways only)."""

    label: str
    entry_url: str
    roles: dict[str, list[Callable[[], float]]]
    last_hop: Callable[[], tuple[float, float]]
    delivers_events: bool
    token: str | None = None


@dataclass
class Result:
    spans_per_second: float
    acked_per_second: float
    cpu_us_per_span: dict[str, float]
    events: int
    delivered: int
    duplicates: int
    refused: int
    requests_at_last_hop: float


def run_once(setup: Setup, bodies: Sequence[bytes], receiver: FastReceiver) -> Result:
    """Post ``bodies`` through ``setup``; wait until its last hop has every span and, with
    gateways, the receiver every event; CPU per span of each role over that time."""
    spans = len(bodies) * BATCH
    events = count_events(bodies)
    receiver.reset()
    spans_before, requests_before = setup.last_hop()
    cpu_before = {role: sum(read() for read in reads) for role, reads in setup.roles.items()}
    started = time.perf_counter()
    acked_seconds, refused = asyncio.run(post_all(setup.entry_url, bodies, token=setup.token))
    deadline = time.monotonic() + WAIT_SECONDS
    while setup.last_hop()[0] - spans_before < spans:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{setup.label}: the last hop did not get every span")
        time.sleep(POLL_SECONDS)
    while setup.delivers_events and receiver.stats()["accepted"] < events:
        if time.monotonic() > deadline:
            break  # reported below as delivered < events
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    cpu = {
        role: (sum(read() for read in reads) - cpu_before[role]) / spans * 1e6
        for role, reads in setup.roles.items()
    }
    stats = receiver.stats()
    delivered = int(stats["accepted"]) if setup.delivers_events else events
    if delivered < events:
        raise RuntimeError(f"{setup.label}: {delivered}/{events} events delivered")
    return Result(
        spans_per_second=spans / seconds,
        acked_per_second=spans / acked_seconds,
        cpu_us_per_span=cpu,
        events=events,
        delivered=delivered,
        duplicates=int(stats["duplicates"]) if setup.delivers_events else 0,
        refused=refused,
        requests_at_last_hop=setup.last_hop()[1] - requests_before,
    )


@contextlib.contextmanager
def setups(receiver: FastReceiver) -> Iterator[list[Setup]]:
    """The four configurations' processes, all started (each idles while the others run)."""
    token = secrets.token_hex(16)
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))

        def gateway(name: str) -> GatewayProcess:
            spool = directory / name
            spool.mkdir()
            started = GatewayProcess(receiver.base_url, receiver.api_key, spool, token)
            stack.callback(started.stop)
            return started

        def collector(name: str, configs: Sequence[str], overlay: Any) -> CollectorProcess:
            started = CollectorProcess(directory / name, configs, overlay, token)
            stack.callback(started.stop)
            return started

        def received(gateways: Sequence[GatewayProcess]) -> Callable[[], tuple[float, float]]:
            def spans_and_requests() -> tuple[float, float]:
                found = [g.stats() for g in gateways]
                return (
                    sum(stats["received"]["spans"] for stats in found),
                    sum(
                        count
                        for stats in found
                        for signals in stats["requests"].values()
                        for outcomes in signals.values()
                        for count in outcomes.values()
                    ),
                )

            return spans_and_requests

        single = documented_config("single-gateway")
        sink = collector("sink", [json.dumps(NULL_SINK)], {})
        alone = collector(
            "a", [single], {"exporters": {"otlp_http/greenflash": {"endpoint": sink.http_url}}}
        )
        one = gateway("b-gateway")
        in_front = collector(
            "b", [single], {"exporters": {"otlp_http/greenflash": {"endpoint": one.url}}}
        )
        three = [gateway(f"c-gateway-{index}") for index in range(3)]
        hostnames = [f"127.0.0.1:{g.grpc_port}" for g in three]
        balancing = collector(
            "c",
            [documented_config("load-balancing")],
            {
                "exporters": {
                    "load_balancing/greenflash": {"resolver": {"static": {"hostnames": hostnames}}}
                }
            },
        )
        straight = gateway("d-gateway")
        yield [
            Setup(
                "(a) Collector -> null sink",
                alone.http_url,
                {"collector": [alone.cpu_seconds], "sink": [sink.cpu_seconds]},
                lambda: (sink.metric(SINK_SPANS), float("nan")),
                delivers_events=False,
            ),
            Setup(
                "(b) Collector -> 1 gateway",
                in_front.http_url,
                {"collector": [in_front.cpu_seconds], "gateways": [one.cpu_seconds]},
                received([one]),
                delivers_events=True,
            ),
            Setup(
                "(c) Collector -> 3 gateways",
                balancing.http_url,
                {
                    "collector": [balancing.cpu_seconds],
                    "gateways": [g.cpu_seconds for g in three],
                },
                received(three),
                delivers_events=True,
            ),
            Setup(
                "(d) gateway alone",
                straight.url,
                {"gateways": [straight.cpu_seconds]},
                received([straight]),
                delivers_events=True,
                token=token,
            ),
        ]


def median_result(results: Sequence[Result]) -> Result:
    roles = results[0].cpu_us_per_span.keys()
    return Result(
        spans_per_second=statistics.median(r.spans_per_second for r in results),
        acked_per_second=statistics.median(r.acked_per_second for r in results),
        cpu_us_per_span={
            **{role: statistics.median(r.cpu_us_per_span[role] for r in results) for role in roles},
            "total": statistics.median(sum(r.cpu_us_per_span.values()) for r in results),
        },
        events=sum(r.events for r in results),
        delivered=sum(r.delivered for r in results),
        duplicates=sum(r.duplicates for r in results),
        refused=sum(r.refused for r in results),
        requests_at_last_hop=sum(r.requests_at_last_hop for r in results),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke check)")
    arguments = parser.parse_args(argv)
    requests = 20 if arguments.quick else 400
    rounds = 1 if arguments.quick else 7
    binary = collector_binary()
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with fast_receiver(0) as receiver, setups(receiver) as configurations:
        warm_up = payloads(4, seed=10_000)
        for setup in configurations:
            run_once(setup, warm_up, receiver)
        found: dict[str, list[Result]] = {setup.label: [] for setup in configurations}
        for number in range(rounds):
            bodies = payloads(requests, seed=number)
            for setup in configurations:
                found[setup.label].append(run_once(setup, bodies, receiver))
    print(
        f"{version}, {os.cpu_count()} cores; OTLP/HTTP protobuf in, {rounds} round(s) x "
        f"{requests} x {BATCH} spans per configuration, 1 % events, {CONCURRENCY} client "
        "connections; medians"
    )
    columns = "{:<29}{:>9}{:>9}{:>11}{:>10}{:>7}{:>8}{:>10}{:>8}"
    print(columns.format("", "", "", "CPU µs", "per span", "", "", "ratio to", "(a)"))
    print(
        columns.format(
            "configuration",
            "spans/s",
            "acked/s",
            "collector",
            "gateways",
            "sink",
            "total",
            "spans/s",
            "CPU",
        )
    )
    medians = {label: median_result(results) for label, results in found.items()}
    reference = next(iter(medians.values()))
    for label, result in medians.items():
        cpu = result.cpu_us_per_span
        print(
            columns.format(
                label,
                f"{result.spans_per_second:,.0f}",
                f"{result.acked_per_second:,.0f}",
                *(f"{cpu[role]:.2f}" if role in cpu else "-" for role in ROLES),
                f"{cpu['total']:.2f}",
                f"{result.spans_per_second / reference.spans_per_second:.3f}",
                f"{cpu['total'] / reference.cpu_us_per_span['total']:.2f}",
            )
        )
    for label, result in list(medians.items())[1:]:
        print(
            f"  {label}: events delivered {result.delivered}/{result.events}, "
            f"duplicates {result.duplicates}, 503s seen by the client {result.refused}; "
            f"{rounds * requests * BATCH / result.requests_at_last_hop:,.0f} spans per request "
            "reaching the gateways"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
