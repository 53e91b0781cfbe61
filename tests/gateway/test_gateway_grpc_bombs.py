"""Decompression bombs over OTLP/gRPC: a message sent with ``grpc-encoding: gzip`` (or
deflate) is inflated by the gateway's one bounded inflating thread, not by gRPC, so memory
stays within the documented bound and ``/healthz`` keeps answering.

The bombs are gRPC messages of 1 MiB inflating to a valid 1 GiB ExportTraceServiceRequest,
sent over raw HTTP/2 (``h2``) with the compressed flag set; a gRPC client would have to hold
the 1 GiB itself. The gateway subprocess runs with the default limit (64 MiB).
"""

from __future__ import annotations

import functools
import gzip
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_greenflash.gateway._inflate import CHUNK_BYTES
from tests.gateway.test_gateway_bombs import (
    CONCURRENT,
    LIMIT,
    MIB,
    SLACK,
    HealthPoller,
    delivered,
    event_body,
    event_spans,
    peak_rss,
)
from tests.support.gateway_harness import Gateway
from tests.support.independent_receiver import Receiver

h2_connection = pytest.importorskip("h2.connection", reason="h2 is in the test extra")
h2_config = pytest.importorskip("h2.config")
h2_events = pytest.importorskip("h2.events")

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BOMB_MIB = 1024
CALL_SECONDS = 120.0
"""Hang guard for one call (they take well under a second)."""
OK, RESOURCE_EXHAUSTED = "0", "8"


@functools.cache
def grpc_bomb(coding: str, mib: int = BOMB_MIB) -> bytes:
    """An ExportTraceServiceRequest holding one unknown length-delimited field (15) of ``mib``
    MiB of zeros, compressed as gRPC's ``gzip`` or ``deflate`` (zlib-wrapped): the field's
    header, then the same compressed block per MiB (see
    ``tests.gateway.test_gateway_bombs.bomb``)."""
    size = mib * MIB
    field = bytes([15 << 3 | 2]) + _varint(size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(field) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks = head + block * mib + compressor.flush()
    crc, adler, zeros = zlib.crc32(field), zlib.adler32(field), bytes(MIB)
    for _ in range(mib):
        crc, adler = zlib.crc32(zeros, crc), zlib.adler32(zeros, adler)
    if coding == "gzip":
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        return header + blocks + struct.pack("<II", crc, (len(field) + size) & 0xFFFFFFFF)
    assert coding == "deflate"
    return b"\x78\xda" + blocks + struct.pack(">I", adler)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


@pytest.mark.parametrize(("coding", "wbits"), [("gzip", 31), ("deflate", zlib.MAX_WBITS)])
def test_the_bombs_are_what_they_claim(coding: str, wbits: int) -> None:
    """Checked whole at 16 MiB (same construction, 64 times cheaper): a valid request."""
    message = zlib.decompress(grpc_bomb(coding, 16), wbits)
    assert len(message) > 16 * MIB
    request = ExportTraceServiceRequest.FromString(message)  # one unknown field: no spans
    assert request.ListFields() == []
    assert request.ByteSize() == len(message)
    assert len(grpc_bomb(coding)) < 1.1 * MIB


def grpc_call(port: int, message: bytes, encoding: str | None) -> dict[str, str]:
    """One Export call over raw HTTP/2: ``message`` in one gRPC frame, flagged compressed when
    ``encoding`` is given. The response headers and trailers (``grpc-status``...)."""
    with socket.create_connection(("127.0.0.1", port), timeout=CALL_SECONDS) as sock:
        config = h2_config.H2Configuration(client_side=True, header_encoding="utf-8")
        connection = h2_connection.H2Connection(config=config)
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", TRACES),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if encoding:
            headers.append(("grpc-encoding", encoding))
        connection.send_headers(stream, headers)
        frame = struct.pack(">BI", 1 if encoding else 0, len(message)) + message
        sent, ended = 0, False
        answer: dict[str, str] = {}
        while not ended:
            while sent < len(frame):  # as much as the flow-control window allows
                room = min(connection.local_flow_control_window(stream), len(frame) - sent)
                room = min(room, connection.max_outbound_frame_size)
                if room <= 0:
                    break
                connection.send_data(stream, frame[sent : sent + room], sent + room == len(frame))
                sent += room
            sock.sendall(connection.data_to_send())
            data = sock.recv(65536)
            assert data, f"connection closed without an answer: {answer}"
            for event in connection.receive_data(data):
                if isinstance(event, h2_events.ResponseReceived | h2_events.TrailersReceived):
                    answer.update(dict(event.headers))
                elif isinstance(event, h2_events.StreamEnded | h2_events.StreamReset):
                    ended = True
    return answer


def assert_too_large(answer: dict[str, str]) -> None:
    assert answer.get("grpc-status") == RESOURCE_EXHAUSTED, answer


def send_normal_calls(gateway: Gateway, receiver: Receiver, tag: str) -> None:
    """The SDK's gRPC exporter with gzip and with deflate, and raw calls with each: all OK,
    their events delivered."""
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        event_type = f"{tag}_sdk_{compression.name.lower()}"
        exporter = OTLPSpanExporter(
            endpoint=gateway.grpc_endpoint, insecure=True, compression=compression, timeout=30
        )
        assert exporter.export(event_spans([event_type])) == SpanExportResult.SUCCESS
        exporter.shutdown()  # type: ignore[no-untyped-call, unused-ignore]
        delivered(receiver, [event_type])
    for encoding, compress in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        event_type = f"{tag}_raw_{encoding}"
        answer = grpc_call(gateway.grpc_port, compress(event_body([event_type])), encoding)
        assert answer.get("grpc-status") == OK, answer
        delivered(receiver, [event_type])


def test_grpc_bombs_stay_within_the_memory_bound_and_healthz_answers(tmp_path: Path) -> None:
    """One gzip bomb, then 8 at once (gzip and deflate): each RESOURCE_EXHAUSTED, the peak RSS
    within the documented bound (the limit plus one chunk inflated at a time, plus each message
    as sent, twice for a moment), /healthz answering throughout; ordinary compressed calls
    before and after are delivered. (Before, gRPC inflated each message up to the limit on
    the thread reading it: 8 bombs at once took 209 MiB over the baseline.)"""
    for coding in ("gzip", "deflate"):
        grpc_bomb(coding)  # made before the memory is read
    with Receiver() as receiver, Gateway(receiver, tmp_path / "spool") as gateway:
        send_normal_calls(gateway, receiver, "before")
        baseline = peak_rss(gateway)

        with HealthPoller(gateway) as one:
            first = grpc_call(gateway.grpc_port, grpc_bomb("gzip"), "gzip")
        assert_too_large(first)
        one_bomb = peak_rss(gateway) - baseline
        assert one_bomb < LIMIT + CHUNK_BYTES + 2 * len(grpc_bomb("gzip")) + SLACK, one_bomb

        codings = ["gzip", "deflate"] * (CONCURRENT // 2)
        with HealthPoller(gateway) as many, ThreadPoolExecutor(CONCURRENT) as clients:
            answers = list(
                clients.map(lambda c: grpc_call(gateway.grpc_port, grpc_bomb(c), c), codings)
            )
            polls_during = len(many.statuses)
        for answer in answers:
            assert_too_large(answer)
        many_bombs = peak_rss(gateway) - baseline
        sent = sum(len(grpc_bomb(coding)) for coding in codings)
        assert many_bombs < LIMIT + CHUNK_BYTES + 2 * sent + SLACK, many_bombs

        assert polls_during >= 1  # /healthz was asked while the bombs were being taken
        for poller in (one, many):
            assert poller.statuses
            assert set(poller.statuses) == {200}, poller.statuses
        send_normal_calls(gateway, receiver, "after")
        assert gateway.stats()["requests"]["grpc"]["traces"]["too_large"] == 1 + CONCURRENT
        for answer in (first, *answers):  # the gateway's limit, refused by the gateway
            assert f"limit of {LIMIT} bytes" in answer.get("grpc-message", ""), answer
