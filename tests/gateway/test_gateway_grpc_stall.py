"""Stalled gRPC calls: clients that send a call's headers and never its message.

A real gateway subprocess; the stalled calls come from raw HTTP/2 connections (``h2``) bound
to other loopback addresses (127.0.0.2, ...), so the gateway sees them as other peers than the
well-behaved client on 127.0.0.1, a plain gRPC channel sending what the SDK's exporter sends.
The answers the OTLP specification allows under overload: ``OK``, or ``UNAVAILABLE`` with a
``RetryInfo`` delay; ``RESOURCE_EXHAUSTED`` without one is permanent, and the Collector drops
the data.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped, unused-ignore]
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped, unused-ignore]

from otel_greenflash._config import ConfigurationError
from otel_greenflash.gateway._grpc_budget import CallBudget, peer_host
from otel_greenflash.gateway._settings import add_arguments, resolve
from tests.gateway.test_gateway_adversarial import event_body
from tests.support.chat_turns import WAIT_SECONDS, wait_until
from tests.support.gateway_harness import Gateway
from tests.support.independent_receiver import Receiver

h2_connection = pytest.importorskip("h2.connection", reason="h2 is in the test extra")
h2_config = pytest.importorskip("h2.config")
h2_events = pytest.importorskip("h2.events")

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
STALLED_CALLS = 320
GOOD_CALLS = 15
STREAMS_PER_CONNECTION = 32
OVERLOAD = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


# -- the stalled peer: raw HTTP/2 -----------------------------------------------------------------


class StalledPeer:
    """gRPC calls from ``source`` that send their headers and never a message. Keeps the
    answers (``grpc-status``, and whether a ``RetryInfo`` came with it) by stream."""

    def __init__(self, source: str, port: int) -> None:
        self.source = source
        self.port = port
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, Any, threading.Lock]] = []
        self._threads: list[threading.Thread] = []
        self._headers: dict[tuple[int, int], dict[str, str]] = {}
        self._ended: set[tuple[int, int]] = set()
        self.answers: list[tuple[int, bool]] = []
        self.opened = 0

    def open(self, calls: int) -> None:
        while calls > 0:
            batch = min(calls, STREAMS_PER_CONNECTION)
            self._connect(batch)
            calls -= batch

    def _connect(self, calls: int) -> None:
        sock = socket.create_connection(
            ("127.0.0.1", self.port), timeout=WAIT_SECONDS, source_address=(self.source, 0)
        )
        sock.settimeout(None)
        config = h2_config.H2Configuration(client_side=True, header_encoding="utf-8")
        connection = h2_connection.H2Connection(config=config)
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        lock = threading.Lock()
        index = len(self._connections)
        self._connections.append((sock, connection, lock))
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", TRACES),
            (":authority", f"127.0.0.1:{self.port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        with lock:
            for _ in range(calls):
                connection.send_headers(connection.get_next_available_stream_id(), headers)
            sock.sendall(connection.data_to_send())
        self.opened += calls
        reader = threading.Thread(target=self._read, args=(index,), daemon=True)
        reader.start()
        self._threads.append(reader)

    def _read(self, index: int) -> None:
        sock, connection, lock = self._connections[index]
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with lock:
                events = connection.receive_data(data)
                for event in events:
                    self._on(index, event)
                with contextlib.suppress(OSError):
                    sock.sendall(connection.data_to_send())

    def _on(self, index: int, event: Any) -> None:
        if isinstance(event, (h2_events.ResponseReceived, h2_events.TrailersReceived)):
            key = (index, event.stream_id)
            self._headers.setdefault(key, {}).update(dict(event.headers))
        elif isinstance(event, h2_events.StreamEnded):
            headers = self._headers.pop((index, event.stream_id), {})
            self._ended.add((index, event.stream_id))
            code = int(headers.get("grpc-status", "-1"))
            with self._lock:
                self.answers.append((code, _has_retry_info(headers)))
        elif (
            isinstance(event, h2_events.StreamReset) and (index, event.stream_id) not in self._ended
        ):  # a reset after the trailers is no second answer
            with self._lock:
                self.answers.append((-1, False))

    def answered(self) -> list[tuple[int, bool]]:
        with self._lock:
            return list(self.answers)

    def close(self) -> None:
        for sock, _, _ in self._connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(WAIT_SECONDS)


def _has_retry_info(headers: dict[str, str]) -> bool:
    raw = headers.get("grpc-status-details-bin")
    if raw is None:
        return False
    status = RpcStatus.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    return any(detail.Is(RetryInfo.DESCRIPTOR) for detail in status.details)


@contextlib.contextmanager
def stalled_peers(port: int, sources: list[str], calls_each: int) -> Iterator[list[StalledPeer]]:
    peers = [StalledPeer(source, port) for source in sources]
    try:
        for peer in peers:
            peer.open(calls_each)
        yield peers
    finally:
        for peer in peers:
            peer.close()


# -- the well-behaved client: a gRPC channel, retrying as OTLP clients do -------------------------


def retry_delay(error: grpc.RpcError) -> float | None:
    """The ``RetryInfo`` delay of an answer (as the Collector reads it), or None."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = RpcStatus.FromString(value)
            for detail in status.details:
                info = RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def good_exports(endpoint: str, names: list[str]) -> list[tuple[str, bool]]:
    """Each name's export, all at once on one channel: its first answer (the code's name, and
    whether it carried a retry delay); each retried after the delay while the answer has one."""
    with grpc.insecure_channel(endpoint) as channel:
        export = channel.unary_unary(TRACES)

        def send(name: str) -> Any:
            return export.future(event_body([name]), timeout=WAIT_SECONDS)

        def retried(name: str, call: Any) -> tuple[str, bool]:
            code, delay = _outcome(call)
            first, deadline = (code, delay is not None), time.monotonic() + WAIT_SECONDS
            while delay is not None and time.monotonic() < deadline:
                time.sleep(delay)
                delay = _outcome(send(name))[1]
            return first

        calls = [(name, send(name)) for name in names]
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(lambda call: retried(*call), calls))


def _outcome(call: Any) -> tuple[str, float | None]:
    try:
        call.result()
    except grpc.RpcError as error:
        return error.code().name, retry_delay(error)
    return "OK", None


def event_types(receiver: Receiver) -> set[str]:
    return {str(event["eventType"]) for event in receiver.accepted}


# -- through the gateway -------------------------------------------------------------------------


def test_a_stalled_peer_does_not_starve_another_peer(receiver: Receiver, tmp_path: Path) -> None:
    """320 calls from 127.0.0.2 that never send their message; then 15 exports from
    127.0.0.1, all at once. The stalled peer holds its own share of the gateway and no more:
    its calls over the per-peer bound are answered ``UNAVAILABLE`` with a retry delay at once,
    and every good export is taken at its first attempt."""
    with Gateway(receiver, tmp_path / "spool") as gateway:
        with stalled_peers(gateway.grpc_port, ["127.0.0.2"], STALLED_CALLS) as (stalled,):
            wait_until(lambda: len(stalled.answered()) >= 64, "the gateway to answer some calls")
            time.sleep(0.3)  # the rest reach their handlers (a pause, not a measurement)
            names = [f"good_{index}" for index in range(GOOD_CALLS)]
            first = good_exports(gateway.grpc_endpoint, names)
            refused = stalled.answered()
        exhausted = sum(1 for code, _ in first if code == "RESOURCE_EXHAUSTED")
        print(f"good calls: first answers {first}; RESOURCE_EXHAUSTED {exhausted}/{GOOD_CALLS}")
        assert exhausted == 0
        wait_until(lambda: set(names) <= event_types(receiver), "the good events", 30)
    assert all(code == "OK" for code, _ in first), first
    assert refused, "the stalled peer was never refused: the bound was not reached"
    assert all(answer == (grpc.StatusCode.UNAVAILABLE.value[0], True) for answer in refused), (
        f"stalled calls answered {sorted(set(refused))}"
    )
    assert receiver.duplicates == 0


def test_stalled_peers_filling_the_gateway_are_answered_retryable(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Five stalled peers with 64 calls each fill the gateway's whole call budget and every
    worker. A good export is then answered ``UNAVAILABLE`` with a retry delay (never
    ``RESOURCE_EXHAUSTED``); the stalled calls are cut at ``--request-timeout``, freeing their
    slots, and the good exports' retries are taken."""
    sources = [f"127.0.0.{host}" for host in range(2, 7)]
    with Gateway(receiver, tmp_path / "spool", args=["--request-timeout", "2"]) as gateway:
        with stalled_peers(gateway.grpc_port, sources, 64) as peers:

            def answered() -> list[tuple[int, bool]]:
                return [answer for peer in peers for answer in peer.answered()]

            wait_until(lambda: len(answered()) >= 64, "the gateway to answer some calls")
            names = [f"busy_{index}" for index in range(GOOD_CALLS)]
            first = good_exports(gateway.grpc_endpoint, names)
            print(f"good calls: first answers {first}")
            assert all(
                code == "OK" or (code, hint) == ("UNAVAILABLE", True) for code, hint in first
            )
            wait_until(lambda: len(answered()) == 5 * 64, "every stalled call to be cut")
            stalled_answers = answered()
        wait_until(lambda: set(names) <= event_types(receiver), "the good events", 30)
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    assert set(stalled_answers) == {(unavailable, True)}, sorted(set(stalled_answers))
    assert receiver.duplicates == 0


# -- the budget itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.2:50312", "127.0.0.2"),
        ("ipv6:[::1]:50312", "::1"),
        ("ipv6:%5B::1%5D:50312", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("ipv6:%5B::ffff:10.1.2.3%5D:443", "10.1.2.3"),
        ("unix:/run/gateway.sock", "unix:/run/gateway.sock"),
    ],
)
def test_peer_host_drops_the_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_the_budget_bounds_calls_in_all_and_per_peer() -> None:
    budget = CallBudget(total=5, per_peer=2, workers=16)
    assert budget.slots_per_peer == 2
    assert [budget.enter("a"), budget.enter("a")] == [None, None]
    refusal = budget.enter("a")
    assert refusal is not None
    assert "this peer holds 2" in refusal
    assert [budget.enter("b"), budget.enter("b"), budget.enter("c")] == [None, None, None]
    refusal = budget.enter("d")
    assert refusal is not None
    assert "holds 5 gRPC calls" in refusal
    assert budget.calls("a") == 2
    assert budget.held == 5
    slots = budget.slots("a")
    budget.leave("a")
    assert budget.enter("d") is None
    budget.leave("a")
    assert budget.calls("a") == 0
    assert budget.slots("a") is not slots  # forgotten with its calls


def test_a_peer_holds_half_the_workers_unless_the_per_peer_bound_is_off() -> None:
    assert CallBudget(total=256, per_peer=64, workers=16).slots_per_peer == 8
    assert CallBudget(total=256, per_peer=3, workers=16).slots_per_peer == 3
    assert CallBudget(total=256, per_peer=256, workers=16).slots_per_peer == 16
    unbounded = CallBudget(total=256, per_peer=10_000, workers=16)
    assert unbounded.per_peer == 256
    assert [unbounded.enter("proxy") for _ in range(257)].count(None) == 256


def test_calls_per_peer_setting() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert resolve(parser.parse_args([]), {}).grpc_calls_per_peer == 64
    environ = {"GREENFLASH_GATEWAY_GRPC_CALLS_PER_PEER": "256"}
    assert resolve(parser.parse_args([]), environ).grpc_calls_per_peer == 256
    flag = parser.parse_args(["--grpc-calls-per-peer", "8"])
    assert resolve(flag, environ).grpc_calls_per_peer == 8
    for bad in ({"GREENFLASH_GATEWAY_GRPC_CALLS_PER_PEER": "many"}, {}):
        arguments = parser.parse_args([] if bad else ["--grpc-calls-per-peer", "0"])
        with pytest.raises(ConfigurationError, match=r"grpc-calls-per-peer|CALLS_PER_PEER"):
            resolve(arguments, bad)
