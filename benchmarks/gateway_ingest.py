"""Gateway ingest: spans/s one ``otel-greenflash gateway`` process takes over OTLP/HTTP protobuf,
as a ratio to decoding the same payloads with ``opentelemetry-proto`` alone, in the same run;
and the gateway's memory while the Events API is down.

``python -m benchmarks.gateway_ingest [--quick] [--api up,down,stalled]``

The ingest rate is measured with the Events API in three states, since delivery runs in the
gateway's process too (one HTTP request per event: the API has no batch endpoint):

- ``up``: ``benchmarks._receiver`` answering at once; every event is also delivered.
- ``down``: nothing listening at the API's address; events are spooled and each one's attempts
  fail at connect (what an outage costs).
- ``stalled``: a receiver that never answers; events are spooled and at most the delivery's
  concurrency limit is in flight, so the rate is ingest alone (decode, link, map, spool).

Payloads: batches of 512 spans (the SDK batch processor's default export size), traces of 10
spans (a root carrying the conversation id, 9 children), 1 % of spans business events. The
client posts pre-encoded bodies on 8 concurrent connections from this process; the gateway runs
at its defaults (durable spool on) against ``benchmarks._receiver`` (0 ms latency). Each figure
is the best of three passes (different traces each time, so nothing is deduplicated).

Baselines, in this process: ``ExportTraceServiceRequest.FromString`` on each body (parse only:
upb builds its C structures; Python objects are made on access), and parsing plus reading every
span's ids, name, times, attributes and events into Python values (what any Python receiver has
to do at the least).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from ._common import PRODUCT_ID, fast_receiver, process_cpu_seconds, receiver_stats

API_STATES = ("up", "down", "stalled")
REFUSED_URL = "http://127.0.0.1:9/api/v1"
"""Nothing listens on the discard port: every connection is refused."""

BATCH = 512
TRACE_SPANS = 10
EVENT_EVERY = 100
CONCURRENCY = 8


# -- payloads --------------------------------------------------------------------------------------


def _kv(key: str, value: str | int | float | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def payloads(requests: int, seed: int) -> list[bytes]:
    """``requests`` bodies of BATCH spans each; 1 % of spans are business events."""
    rng = random.Random(seed)
    bodies: list[bytes] = []
    counter = 0
    now = time.time_ns()
    for _ in range(requests):
        spans: list[Span] = []
        while len(spans) < BATCH:
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            root_id = rng.getrandbits(64).to_bytes(8, "big")
            for index in range(min(TRACE_SPANS, BATCH - len(spans))):
                counter += 1
                span_id = root_id if index == 0 else rng.getrandbits(64).to_bytes(8, "big")
                attributes = [
                    _kv("http.request.method", "POST"),
                    _kv("url.path", "/v1/chat"),
                    _kv("server.port", 8080),
                    _kv("app.retry", False),
                ]
                if index == 0:
                    attributes.append(_kv("gen_ai.conversation.id", f"chat-{counter}"))
                if counter % EVENT_EVERY == 0:
                    attributes += [
                        _kv("greenflash.event.type", "task_success"),
                        _kv("greenflash.event.value", 1),
                        _kv("greenflash.event.properties.step", "answer"),
                    ]
                spans.append(
                    Span(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=b"" if index == 0 else root_id,
                        name="chat.turn" if index == 0 else f"step-{index}",
                        kind=Span.SPAN_KIND_SERVER if index == 0 else Span.SPAN_KIND_INTERNAL,
                        start_time_unix_nano=now,
                        end_time_unix_nano=now + 1_000_000,
                        attributes=attributes,
                    )
                )
        # children end (and are exported) before their root, as in a real batch
        spans.sort(key=lambda span: not span.parent_span_id)
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=[_kv("service.name", "chat-api")]),
                    scope_spans=[ScopeSpans(spans=spans)],
                )
            ]
        )
        bodies.append(request.SerializeToString())
    return bodies


def count_events(bodies: Sequence[bytes]) -> int:
    events = 0
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for span in request.resource_spans[0].scope_spans[0].spans:
            events += any(kv.key == "greenflash.event.type" for kv in span.attributes)
    return events


# -- baselines -------------------------------------------------------------------------------------


def parse_only(bodies: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        ExportTraceServiceRequest.FromString(body)
    return time.perf_counter() - started


def parse_and_read(bodies: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    _ = (span.trace_id, span.span_id, span.parent_span_id, span.name, span.kind)
                    _ = (span.start_time_unix_nano, span.end_time_unix_nano)
                    for pair in span.attributes:
                        value = pair.value
                        _ = (pair.key, getattr(value, value.WhichOneof("value") or "string_value"))
                    for event in span.events:
                        _ = (event.name, event.time_unix_nano, len(event.attributes))
    return time.perf_counter() - started


# -- the gateway -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    def __init__(self, base_url: str, api_key: str, spool: Path, token: str | None = None) -> None:
        """A gateway at its defaults; ``token``: the bearer token clients must send."""
        self.port = free_port()
        self.grpc_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENFLASH_", "OTEL_"))}
        env.update(
            GREENFLASH_API_KEY=api_key,
            GREENFLASH_BASE_URL=base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        )
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            env["GREENFLASH_GATEWAY_TOKEN"] = token
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_greenflash.cli",
                "gateway",
                "--http-port",
                str(self.port),
                "--grpc-port",
                str(self.grpc_port),
                "--spool-dir",
                str(spool),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("the gateway did not start")
            try:
                if (
                    httpx.get(f"{self.url}/readyz", headers=self.headers, timeout=1).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()  # nothing else would stop it: the caller gets no object
                self.process.wait()
                raise RuntimeError("the gateway is not ready")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gateway process so far."""
        return process_cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/stats", headers=self.headers, timeout=10).json())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def post_all(
    url: str, bodies: Sequence[bytes], on_sent: Any = None, token: str | None = None
) -> tuple[float, int]:
    """Post every body (CONCURRENCY at a time), retrying 503s after Retry-After; returns the
    seconds taken and how many 503s were seen."""
    queue = list(reversed(bodies))
    refused = 0
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def lane() -> None:
            nonlocal refused
            while queue:
                body = queue.pop()
                while True:
                    answer = await client.post(f"{url}/v1/traces", content=body, headers=headers)
                    if answer.status_code == 200:
                        break
                    if answer.status_code != 503:
                        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")
                    refused += 1
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                if on_sent is not None:
                    on_sent()

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, refused


def ingest_rate(requests: int, passes: int, api: str = "up") -> dict[str, float]:
    """The best of ``passes`` ingest rates with the Events API ``api`` (see the module doc),
    with both baselines measured in the same pass; and whether every event arrived (``up``) or
    is in the spool (``down``, ``stalled``)."""
    with contextlib.ExitStack() as stack:
        spool = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if api == "down":
            base_url, api_key = REFUSED_URL, "bench-key"
            receiver = None
        else:
            receiver = stack.enter_context(fast_receiver(0, "hang=1" if api == "stalled" else None))
            base_url, api_key = receiver.base_url, receiver.api_key
        gateway = GatewayProcess(base_url, api_key, spool)
        try:
            asyncio.run(post_all(gateway.url, payloads(2, seed=99)))  # warm-up
            best: dict[str, float] = {}
            for number in range(passes):
                bodies = payloads(requests, seed=number)
                spans = requests * BATCH
                decode_seconds = min(parse_only(bodies) for _ in range(3))
                read_seconds = min(parse_and_read(bodies) for _ in range(3))
                cpu_before = gateway.cpu_seconds()
                seconds, refused = asyncio.run(post_all(gateway.url, bodies))
                cpu = gateway.cpu_seconds() - cpu_before
                rate = spans / seconds
                if rate > best.get("ingest", 0):
                    best = {
                        "ingest": rate,
                        "parse_only": spans / decode_seconds,
                        "parse_and_read": spans / read_seconds,
                        "cpu_us_per_span": cpu / spans * 1e6,
                        "refused": refused,
                    }
            events = count_events(payloads(2, seed=99)) + sum(
                count_events(payloads(requests, seed=number)) for number in range(passes)
            )
            best["events_expected"] = events
            if receiver is not None and api == "up":
                deadline = time.monotonic() + 120
                while receiver_stats(receiver.base_url)["accepted"] < events:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                stats = receiver_stats(receiver.base_url)
                best["events_delivered"] = stats["accepted"]
                best["duplicates"] = stats["duplicates"]
            else:
                spooled = gateway.stats()["pipeline"].get("spool") or {}
                best["events_spooled"] = spooled.get("pending", 0)
            return best
        finally:
            gateway.stop()


def outage_memory(requests: int, samples: int = 8) -> list[tuple[int, float, int]]:
    """Feed the gateway while nothing answers at the Events API URL; RSS after each part."""
    with tempfile.TemporaryDirectory() as spool:
        gateway = GatewayProcess(REFUSED_URL, "bench-key", Path(spool))
        try:
            found: list[tuple[int, float, int]] = []
            part = max(1, requests // samples)
            for index in range(samples):
                asyncio.run(post_all(gateway.url, payloads(part, seed=1000 + index)))
                pending = (gateway.stats()["pipeline"].get("spool") or {}).get("pending", 0)
                found.append(((index + 1) * part * BATCH, gateway.rss_mb(), pending))
            return found
        finally:
            gateway.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke check)")
    parser.add_argument(
        "--api",
        default=",".join(API_STATES),
        help="Events API states to measure ingest with, comma-separated (up, down, stalled)",
    )
    arguments = parser.parse_args(argv)
    states = [state.strip() for state in arguments.api.split(",") if state.strip()]
    unknown = sorted(set(states) - set(API_STATES))
    if unknown:
        parser.error(f"unknown --api state(s): {', '.join(unknown)}")
    requests = 40 if arguments.quick else 200
    passes = 1 if arguments.quick else 3
    for api in states:
        result = ingest_rate(requests, passes, api)
        print(
            f"gateway ingest, Events API {api}, OTLP/HTTP protobuf, {requests} x {BATCH} spans, "
            f"1 % events, {CONCURRENCY} client connections"
        )
        print(
            f"  gateway                      {result['ingest']:>12,.0f} spans/s   "
            f"(gateway CPU {result['cpu_us_per_span']:.2f} µs/span)"
        )
        print(
            f"  opentelemetry-proto parse    {result['parse_only']:>12,.0f} spans/s   "
            f"ratio {result['ingest'] / result['parse_only']:.3f}  (target >= 0.5)"
        )
        print(
            f"  parse + read every field     {result['parse_and_read']:>12,.0f} spans/s   "
            f"ratio {result['ingest'] / result['parse_and_read']:.3f}"
        )
        if "events_delivered" in result:
            print(
                f"  events delivered {int(result['events_delivered'])}/"
                f"{int(result['events_expected'])}, duplicates {int(result['duplicates'])}, "
                f"503s seen {int(result['refused'])}"
            )
        else:
            print(
                f"  events in the spool {int(result['events_spooled'])}/"
                f"{int(result['events_expected'])}, 503s seen {int(result['refused'])}"
            )
    outage_requests = 40 if arguments.quick else 800
    print(f"gateway memory while the Events API is down ({outage_requests} x {BATCH} spans)")
    for spans, rss, pending in outage_memory(outage_requests):
        print(f"  after {spans:>9,} spans   RSS {rss:7.1f} MB   spool pending {pending}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
