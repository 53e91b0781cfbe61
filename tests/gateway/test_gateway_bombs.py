"""Decompression bombs against the gateway: every encoding is inflated by one bounded path,
off the event loop, so memory stays within the documented bound and ``/healthz`` keeps answering.

The bombs are 1 MiB bodies inflating to 1 GiB of zeros (gzip, x-gzip, zlib-wrapped and raw
deflate); the gateway subprocess runs with the default limit (64 MiB), and its peak RSS
(``VmHWM``) is read from ``/proc``.
"""

from __future__ import annotations

import functools
import gzip
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_greenflash.gateway._decode import MalformedRequestError, RequestTooLargeError
from otel_greenflash.gateway._inflate import (
    CHUNK_BYTES,
    DEFLATE,
    GZIP,
    IDENTITY,
    UnsupportedEncodingError,
    content_coding,
    inflate,
)
from otel_greenflash.gateway._server import WORKERS
from otel_greenflash.gateway._settings import DEFAULT_MAX_REQUEST_BYTES
from tests.support.gateway_harness import Gateway, tracing
from tests.support.independent_receiver import Receiver

MIB = 1024 * 1024
BOMB_MIB = 1024
"""Each bomb inflates to 1 GiB."""
LIMIT = DEFAULT_MAX_REQUEST_BYTES
CONCURRENT = 8
SLACK = 32 * MIB
"""Allocator and interpreter noise on top of the stated bound."""
HANG_GUARD_SECONDS = 30.0
"""A stuck loop, not a slow one: /healthz answers in milliseconds when all is well."""
PROTOBUF = "application/x-protobuf"


# -- bombs, made cheaply -------------------------------------------------------------------------


@functools.cache
def bomb(coding: str, mib: int = BOMB_MIB) -> bytes:
    """A body inflating to ``mib`` MiB of zeros (about 1 KiB per MiB): ``gzip`` (also sent as
    ``x-gzip``), ``deflate`` (zlib-wrapped, as the SDKs send it) or ``raw-deflate``.

    After a full flush the compressor starts afresh, so every MiB of zeros compresses to the
    same block: the stream is that block repeated (compressing 1 GiB would take seconds)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks = block * mib + compressor.flush()
    crc, adler = _checks(mib)
    if coding == "gzip":
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        return header + blocks + struct.pack("<II", crc, (mib * MIB) & 0xFFFFFFFF)
    if coding == "deflate":
        return b"\x78\xda" + blocks + struct.pack(">I", adler)
    assert coding == "raw-deflate"
    return blocks


@functools.cache
def _checks(mib: int) -> tuple[int, int]:
    """CRC-32 and Adler-32 of ``mib`` MiB of zeros: the bombs' trailers are valid too."""
    crc, adler, zeros = 0, 1, bytes(MIB)
    for _ in range(mib):
        crc, adler = zlib.crc32(zeros, crc), zlib.adler32(zeros, adler)
    return crc, adler


@pytest.mark.parametrize(
    ("coding", "wbits"), [("gzip", 31), ("deflate", zlib.MAX_WBITS), ("raw-deflate", -15)]
)
def test_the_bombs_are_what_they_claim(coding: str, wbits: int) -> None:
    """Checked whole at 16 MiB (same construction as the 1 GiB ones, 64 times cheaper)."""
    assert zlib.decompress(bomb(coding, 16), wbits) == bytes(16 * MIB)
    assert len(bomb(coding)) - len(bomb(coding, 16)) == (BOMB_MIB - 16) * (
        len(bomb(coding, 17)) - len(bomb(coding, 16))
    )
    assert len(bomb(coding)) < 1.1 * MIB


# -- the inflating code alone --------------------------------------------------------------------


def test_content_codings_accepted_and_refused() -> None:
    for header, coding in (
        ("", IDENTITY),
        ("identity", IDENTITY),
        ("gzip", GZIP),
        ("X-Gzip", GZIP),
        (" deflate ", DEFLATE),
        ("zlib", DEFLATE),
    ):
        assert content_coding(header) == coding
    for header in ("zstd", "br", "compress", "snappy", "gzip, gzip", "gzip,identity"):
        with pytest.raises(UnsupportedEncodingError, match="allowed: gzip, x-gzip, deflate, zlib"):
            content_coding(header)


def test_every_coding_inflates_within_the_limit() -> None:
    body = b"otlp" * 300
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    for coding, encoded in (
        (IDENTITY, body),
        (GZIP, gzip.compress(body)),
        (GZIP, gzip.compress(body[:500]) + gzip.compress(body[500:])),  # two members
        (DEFLATE, zlib.compress(body)),  # zlib-wrapped: the OpenTelemetry SDKs, the Collector
        (DEFLATE, raw.compress(body) + raw.flush()),  # raw
    ):
        assert inflate(encoded, coding, len(body)) == body
        if coding != IDENTITY:
            with pytest.raises(RequestTooLargeError):
                inflate(encoded, coding, len(body) - 1)
    assert inflate(b"", GZIP, 1024) == b""


def test_bad_streams_are_malformed() -> None:
    body = b"\x0a\x00" * 100
    with pytest.raises(MalformedRequestError, match="not valid gzip"):
        inflate(b"\x1f\x8b not gzip", GZIP, 1024)
    with pytest.raises(MalformedRequestError, match="ends too early"):
        inflate(gzip.compress(body)[:-12], GZIP, 1024)
    with pytest.raises(MalformedRequestError, match="not valid deflate"):
        inflate(b"\xff\xff\xff\xff", DEFLATE, 1024)
    with pytest.raises(MalformedRequestError, match="data after its deflate stream"):
        inflate(zlib.compress(body) + b"junk", DEFLATE, 1024)


def test_a_bomb_stops_one_chunk_past_the_limit() -> None:
    """Inflating 1 GiB against a 4 MiB limit allocates the limit plus about one chunk, and
    keeps nothing once refused."""
    limit = 4 * MIB
    for coding in ("gzip", "deflate", "raw-deflate"):
        body = bomb(coding)
        tracemalloc.start()
        try:
            with pytest.raises(RequestTooLargeError):
                inflate(body, DEFLATE if "deflate" in coding else GZIP, limit)
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < limit + 3 * CHUNK_BYTES, coding
        assert held < CHUNK_BYTES, coding


# -- the gateway subprocess ----------------------------------------------------------------------


def peak_rss(gateway: Gateway) -> int:
    assert gateway.process is not None
    for line in Path(f"/proc/{gateway.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def event_body(event_types: Sequence[str]) -> bytes:
    """One root span per business event, each its own trace with its conversation id."""
    body: bytes = encode_spans(event_spans(event_types)).SerializeToString()
    return body


def event_spans(event_types: Sequence[str]) -> Sequence[ReadableSpan]:
    """Finished SDK spans, one root per business event, for an exporter or an encoder."""
    spans = InMemorySpanExporter()
    with tracing(spans) as provider:
        tracer = provider.get_tracer("bombs")
        for event_type in event_types:
            attributes: dict[str, str | int] = {
                "greenflash.event.type": event_type,
                "greenflash.event.value": 1,
                "greenflash.conversation.external_id": "bombs-chat",
            }
            with tracer.start_as_current_span("event", attributes=attributes):
                pass
    return spans.get_finished_spans()


def delivered(receiver: Receiver, event_types: Sequence[str]) -> None:
    deadline = time.monotonic() + 60
    while not set(event_types) <= {str(event["eventType"]) for event in receiver.accepted}:
        assert time.monotonic() < deadline, f"timed out waiting for {event_types}"
        time.sleep(0.05)


def send_normal_requests(gateway: Gateway, receiver: Receiver, tag: str) -> None:
    """The SDK's exporter with gzip and with deflate, and raw deflate by hand: all 200, their
    events delivered."""
    for compression in (Compression.Gzip, Compression.Deflate):
        exporter = OTLPSpanExporter(
            endpoint=f"{gateway.url}/v1/traces", compression=compression, timeout=30
        )
        event_type = f"{tag}_{compression.value}"
        assert exporter.export(event_spans([event_type])) == SpanExportResult.SUCCESS
        exporter.shutdown()  # type: ignore[no-untyped-call, unused-ignore]
        delivered(receiver, [event_type])
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = event_body([f"{tag}_raw_deflate"])
    answer = httpx.post(
        f"{gateway.url}/v1/traces",
        content=raw.compress(body) + raw.flush(),
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "deflate"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.content
    delivered(receiver, [f"{tag}_raw_deflate"])


class HealthPoller:
    """Polls /healthz until stopped; each answer must come within the hang guard."""

    def __init__(self, gateway: Gateway) -> None:
        self._url = f"{gateway.url}/healthz"
        self._stop = threading.Event()
        self.statuses: list[int | str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status: int | str = httpx.get(self._url, timeout=HANG_GUARD_SECONDS).status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            self.statuses.append(status)
            time.sleep(0.02)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def post_bomb(gateway: Gateway, signal: str, coding: str, media_type: str) -> httpx.Response:
    header = {"gzip": "gzip", "x-gzip": "x-gzip", "deflate": "deflate", "raw-deflate": "deflate"}
    body = bomb("gzip" if coding == "x-gzip" else coding)
    return httpx.post(
        f"{gateway.url}/v1/{signal}",
        content=body,
        headers={"Content-Type": media_type, "Content-Encoding": header[coding]},
        timeout=120,
    )


def assert_too_large(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.content
    if answer.headers["Content-Type"].startswith("application/json"):
        code = answer.json()["code"]
    else:
        code = RpcStatus.FromString(answer.content).code
    assert code == 8  # RESOURCE_EXHAUSTED


def test_bombs_stay_within_the_memory_bound_and_healthz_answers(tmp_path: Path) -> None:
    """One bomb, then 8 at once (every coding, traces and logs, protobuf and JSON): each 413,
    the peak RSS within the documented bound (the limit plus one chunk inflated at a time, plus
    each body as sent, twice for a moment), /healthz answering throughout; ordinary
    compressed requests before and after are delivered."""
    for coding in ("gzip", "deflate", "raw-deflate"):
        bomb(coding)  # made before the clock and the memory are read
    with Receiver() as receiver, Gateway(receiver, tmp_path / "spool") as gateway:
        send_normal_requests(gateway, receiver, "before")
        baseline = peak_rss(gateway)

        with HealthPoller(gateway) as one:
            assert_too_large(post_bomb(gateway, "traces", "gzip", PROTOBUF))
        one_bomb = peak_rss(gateway) - baseline
        assert one_bomb < LIMIT + CHUNK_BYTES + 2 * len(bomb("gzip")) + SLACK, one_bomb

        cases = [
            (signal, coding, media_type)
            for signal, media_type in (("traces", PROTOBUF), ("logs", "application/json"))
            for coding in ("gzip", "x-gzip", "deflate", "raw-deflate")
        ]
        assert len(cases) == CONCURRENT <= WORKERS
        with HealthPoller(gateway) as many, ThreadPoolExecutor(CONCURRENT) as clients:
            answers = list(clients.map(lambda case: post_bomb(gateway, *case), cases))
            polls_during = len(many.statuses)
        for answer in answers:
            assert_too_large(answer)
        many_bombs = peak_rss(gateway) - baseline
        sent = sum(len(bomb("gzip" if c == "x-gzip" else c)) for _, c, _ in cases)
        assert many_bombs < LIMIT + CHUNK_BYTES + 2 * sent + SLACK, many_bombs

        assert polls_during >= 1  # /healthz was asked while the bombs were being taken
        for poller in (one, many):
            assert poller.statuses
            assert set(poller.statuses) == {200}, poller.statuses
        send_normal_requests(gateway, receiver, "after")
        requests = gateway.stats()["requests"]["http"]
        assert requests["traces"]["too_large"] == 1 + CONCURRENT // 2
        assert requests["logs"]["too_large"] == CONCURRENT // 2


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Receiver() as receiver:
        spool = tmp_path_factory.mktemp("bombs") / "spool"
        with Gateway(receiver, spool) as running:
            yield running


@pytest.mark.parametrize("encoding", ["zstd", "br", "compress", "gzip, gzip", "deflate, gzip"])
@pytest.mark.parametrize("media_type", [PROTOBUF, "application/json"])
def test_unsupported_or_stacked_encodings_get_415(
    gateway: Gateway, encoding: str, media_type: str
) -> None:
    """Refused before the body is read, with the documented google.rpc.Status body."""
    answer = httpx.post(
        f"{gateway.url}/v1/traces",
        content=gzip.compress(b"{}"),
        headers={"Content-Type": media_type, "Content-Encoding": encoding},
        timeout=30,
    )
    assert answer.status_code == 415, answer.content
    assert answer.headers["Content-Type"].startswith(media_type)
    if media_type == PROTOBUF:
        status = RpcStatus.FromString(answer.content)
        code, message = status.code, status.message
    else:
        code, message = answer.json()["code"], answer.json()["message"]
    assert code == 3  # INVALID_ARGUMENT
    assert f"unsupported Content-Encoding {encoding!r}" in message


def test_a_compressed_body_over_the_limit_as_sent_is_413(gateway: Gateway) -> None:
    """Chunked (no Content-Length): the limit holds for the bytes as sent, before inflating.
    (Stored, not compressed, blocks: a valid gzip body a little larger than what it holds.)"""
    body = gzip.compress(bytes(range(256)) * (LIMIT // 256 + 4096), compresslevel=0)
    assert len(body) > LIMIT

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), MIB):
            yield body[start : start + MIB]

    answer = httpx.post(
        f"{gateway.url}/v1/logs",
        content=chunks(),
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        timeout=60,
    )
    assert_too_large(answer)
