"""An adversarial review of ``otel-greenflash gateway``: a real gateway subprocess, real clients
(httpx, raw sockets, grpc channels, the SDK's OTLP encoders) and the independent Events API
receiver. Each test states the behaviour the OTLP specification or the gateway's own contract
asks for; the ones that fail on the reviewed code name a defect.

Deadlines here (``WAIT_SECONDS``, ``LIVENESS_SECONDS``) bound what must happen at all; none is a
measured duration.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_greenflash.gateway._server import WORKERS
from tests.support.gateway_harness import TOKEN, Gateway, tracing
from tests.support.independent_receiver import Fault, Receiver
from tests.support.ports import free_port
from tests.support.processes import BIN, clean_env

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
WAIT_SECONDS = 60.0
"""Deadline for what should happen soon."""
LIVENESS_SECONDS = 10.0
"""Deadline for an answer from a gateway started with ``--request-timeout 1``: ten times the
longest a request may wait for a worker or the spool."""
LIMIT = 64 * 1024
"""``--max-request-bytes`` of the shared gateway."""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- fixtures: one shared gateway (token, small limit) for the stateless checks ------------------


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def shared(
    shared_receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    spool = tmp_path_factory.mktemp("review") / "spool"
    with Gateway(
        shared_receiver, spool, token=TOKEN, args=["--max-request-bytes", str(LIMIT)]
    ) as gateway:
        yield gateway


# -- payloads ------------------------------------------------------------------------------------


def event_body(event_types: Sequence[str], conversation: str = "review-chat") -> bytes:
    """One root span per event type, each its own trace and carrying its conversation id, so
    nothing waits for a root: encoded by the SDK's own OTLP encoder."""
    spans = InMemorySpanExporter()
    with tracing(spans) as provider:
        tracer = provider.get_tracer("review")
        for event_type in event_types:
            attributes: dict[str, str | int] = {
                "greenflash.event.type": event_type,
                "greenflash.event.value": 1,
                "greenflash.conversation.external_id": conversation,
            }
            with tracer.start_as_current_span("event", attributes=attributes):
                pass
    body: bytes = encode_spans(spans.get_finished_spans()).SerializeToString()
    return body


def _string(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def accepted_types(receiver: Receiver) -> list[str]:
    return [str(event["eventType"]) for event in receiver.accepted]


# -- raw HTTP: uploads the gateway has started to take -------------------------------------------


def stalled_upload(
    port: int, body: bytes, *, declared: int | None = None, token: str | None = None
) -> socket.socket:
    """Send a request's head and all of ``body`` but its last byte (or, with ``declared``, a
    ``Content-Length`` larger than what is sent): the gateway is in the middle of taking it."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    length = len(body) if declared is None else declared
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    sock.sendall(head.encode() + (body[:-1] if declared is None else body))
    return sock


def read_answer(sock: socket.socket) -> tuple[int | None, bytes]:
    """The response's status and body; ``(None, b"")`` when the gateway closed without one."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, b""
            data += chunk
    if b"\r\n\r\n" not in data:
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    with contextlib.suppress(ConnectionError):
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, body


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


# == defects ======================================================================================


def test_x_gzip_content_encoding_is_decoded(shared: Gateway, shared_receiver: Receiver) -> None:
    """The gateway lists ``x-gzip`` as a supported encoding (HTTP/1.1 says it is gzip), but
    aiohttp only inflates ``gzip``/``deflate``: the still-compressed body reaches the decoder."""
    body = gzip.compress(event_body(["x_gzip_event"]))
    answer = httpx.post(
        f"{shared.url}/v1/traces",
        content=body,
        headers={**PROTOBUF, **shared.headers, "Content-Encoding": "x-gzip"},
    )
    detail = RpcStatus.FromString(answer.content).message if answer.status_code != 200 else ""
    assert answer.status_code == 200, f"x-gzip answered {answer.status_code}: {detail}"
    wait_until(lambda: "x_gzip_event" in accepted_types(shared_receiver), "the x-gzip event")


@pytest.mark.parametrize("shape", ["nested arrays", "nested kvlistValue"])
def test_deeply_nested_json_is_malformed_not_retryable(shared: Gateway, shape: str) -> None:
    """A JSON body nested deeper than Python's recursion limit is malformed: 400 /
    INVALID_ARGUMENT. Answering 503 + Retry-After makes every OTLP client resend the same
    poison body until it gives up (the Collector: 5 minutes per request, queue blocked)."""
    if shape == "nested arrays":
        body = b'{"resourceSpans": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    else:  # an attribute value that is a kvlist in a kvlist in ... (300 levels)
        value = '{"stringValue": "leaf"}'
        for _ in range(300):
            value = '{"kvlistValue": {"values": [{"key": "k", "value": ' + value + "}]}}"
        span = (
            '{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", '
            '"name": "deep", "attributes": [{"key": "deep", "value": ' + value + "}]}"
        )
        body = ('{"resourceSpans": [{"scopeSpans": [{"spans": [' + span + "]}]}]}").encode()
    assert len(body) < LIMIT
    answer = httpx.post(
        f"{shared.url}/v1/traces",
        content=body,
        headers={**shared.headers, "Content-Type": "application/json"},
    )
    assert (answer.status_code, answer.json().get("code")) == (400, 3), (
        f"{answer.status_code} {answer.text} Retry-After={answer.headers.get('Retry-After')}"
    )


def test_a_replayed_log_request_is_one_event(shared: Gateway, shared_receiver: Receiver) -> None:
    """OTLP clients resend a request whose answer they did not get (a timeout, a reset, the
    gateway SIGKILLed after spooling). A log record's insertId is a digest of its fields,
    observed time included; ``observedTimeUnixNano`` is optional in OTLP, and the decoder fills
    it with the gateway's clock (``_decode._log_record``), so each replay is a new event that
    the Events API cannot deduplicate."""
    record = {
        "timeUnixNano": str(time.time_ns()),
        "eventName": "greenflash.event",
        "attributes": [
            _string("greenflash.event.type", "replayed_log"),
            {"key": "greenflash.event.value", "value": {"intValue": "1"}},
        ],
    }
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
    duplicates_before = shared_receiver.duplicates

    def delivered_at_least(count: int) -> bool:
        replayed = accepted_types(shared_receiver).count("replayed_log")
        return replayed + shared_receiver.duplicates - duplicates_before >= count

    for attempt in (1, 2):  # the first answer was lost; the client sends the request again
        answer = httpx.post(
            f"{shared.url}/v1/logs",
            content=json.dumps(document),
            headers={**shared.headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200
        wait_until(functools.partial(delivered_at_least, attempt), f"delivery {attempt}")
    ids = [
        event["insertId"]
        for event in shared_receiver.accepted
        if event["eventType"] == "replayed_log"
    ]
    assert len(ids) == 1, f"one record, {len(ids)} distinct events: {ids}"


def test_partial_success_counts_rejected_spans_not_events(shared: Gateway) -> None:
    """``rejected_spans`` is a number of spans. Here one span of four carries three invalid
    span events; the gateway reports three rejected spans, i.e. most of the batch."""
    spans = InMemorySpanExporter()
    bad = {
        "greenflash.event.type": "bad",
        "greenflash.event.value": "not-money",
        "greenflash.event.value_type": "currency",
    }
    with tracing(spans) as provider:
        tracer = provider.get_tracer("review")
        with tracer.start_as_current_span(
            "chat.turn", attributes={"greenflash.conversation.external_id": "partial"}
        ):
            with tracer.start_as_current_span("fine"):
                pass
            with tracer.start_as_current_span("broken") as broken:
                for _ in range(3):
                    broken.add_event("greenflash.event", bad)
            with tracer.start_as_current_span("db.query"):
                pass
    body = encode_spans(spans.get_finished_spans()).SerializeToString()
    answer = httpx.post(
        f"{shared.url}/v1/traces", content=body, headers={**PROTOBUF, **shared.headers}
    )
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.error_message
    assert partial.rejected_spans == 1, (
        f"rejected_spans={partial.rejected_spans} of 4 spans; only one span has invalid events"
    )


def test_stalled_uploads_do_not_freeze_the_gateway(tmp_path: Path) -> None:
    """A client that opens a request and sends its body slowly (a Collector on a bad link, or
    anyone on a loopback gateway) holds one of the gateway's worker slots while the body is
    read, with no read timeout. ``WORKERS`` such uploads stop every other request, HTTP and
    gRPC, for ever, while /readyz still says ready."""
    with (
        Receiver() as receiver,
        Gateway(receiver, tmp_path / "spool", args=["--request-timeout", "1"]) as gateway,
    ):
        stalled = [stalled_upload(gateway.http_port, b"ab", declared=100) for _ in range(WORKERS)]
        try:
            time.sleep(0.3)  # let the gateway start on them (a pause, not a measurement)
            with grpc.insecure_channel(gateway.grpc_endpoint) as channel:
                call: Future[Any] = channel.unary_unary(TRACES).future(
                    event_body(["stall_grpc"]), timeout=LIVENESS_SECONDS
                )
                http_status: object
                try:
                    http_status = httpx.post(
                        f"{gateway.url}/v1/traces",
                        content=event_body(["stall_http"]),
                        headers=PROTOBUF,
                        timeout=LIVENESS_SECONDS,
                    ).status_code
                except httpx.TimeoutException as error:
                    http_status = type(error).__name__
                grpc_code: object = grpc.StatusCode.OK
                try:
                    call.result()
                except grpc.RpcError as error:
                    grpc_code = error.code()
            ready = httpx.get(f"{gateway.url}/readyz").json()
        finally:
            for sock in stalled:
                sock.close()
    assert http_status in (200, 503), f"HTTP: {http_status} (readyz said {ready})"
    assert grpc_code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), f"gRPC: {grpc_code}"


def test_concurrent_requests_never_take_more_than_the_spool_holds(tmp_path: Path) -> None:
    """Acknowledged means durable. ``accept`` checks the spool's free room, then submits, with
    no lock between: requests arriving together all pass the check, the spool then evicts
    acknowledged events, and requests refused with 503 after their events were spooled are
    delivered anyway (and again when the client retries).

    A race, so up to three rounds on fresh gateways; one violation is enough."""
    max_events = 4
    violations: list[str] = []
    for round_number in range(3):
        with Receiver() as receiver:
            receiver.mix({Fault.status(503): 1.0}, seed=round_number)  # the API is down
            with Gateway(
                receiver,
                tmp_path / f"spool-{round_number}",
                args=["--shutdown-timeout", "1"],
                environment={"GREENFLASH_SPOOL_MAX_EVENTS": str(max_events)},
            ) as gateway:
                bodies = [event_body([f"race-{round_number}-{index}"]) for index in range(16)]
                uploads = [stalled_upload(gateway.http_port, body) for body in bodies]
                time.sleep(0.3)  # let the gateway read every head (a pause, not a measurement)
                for sock, body in zip(uploads, bodies, strict=True):
                    sock.sendall(body[-1:])  # all sixteen complete together
                statuses = []
                for sock in uploads:
                    statuses.append(read_answer(sock)[0])
                    sock.close()
                spool = gateway.stats()["pipeline"]["spool"]
        acknowledged = statuses.count(200)
        if acknowledged > max_events or spool["evicted"] or spool["pending"] != acknowledged:
            violations.append(
                f"round {round_number}: {acknowledged} acknowledged, spool holds "
                f"{spool['pending']} (max {max_events}), {spool['evicted']} evicted"
            )
            break
    assert not violations, violations


def test_a_request_with_more_events_than_the_queue_is_accepted(tmp_path: Path) -> None:
    """A batch with more business events than the pipeline's queue (``max_queue_size``, 2048
    by default; a Collector batch is 8192 items by default) is answered 503 "queue was full"
    every time: the client retries it until it gives up, and each attempt delivers the part
    that fitted once more."""
    events = [f"bulk-{index}" for index in range(12)]
    with Receiver() as receiver:
        with Gateway(
            receiver,
            tmp_path / "spool",
            environment={
                "GREENFLASH_BSP_MAX_QUEUE_SIZE": "8",
                "GREENFLASH_BSP_MAX_EXPORT_BATCH_SIZE": "8",
            },
        ) as gateway:
            body = event_body(events)
            answers: list[str] = []
            for _ in range(4):  # a client honouring Retry-After
                answer = httpx.post(f"{gateway.url}/v1/traces", content=body, headers=PROTOBUF)
                answers.append(
                    f"{answer.status_code} {RpcStatus.FromString(answer.content).message}"
                )
                if answer.status_code != 503:
                    break
                time.sleep(int(answer.headers["Retry-After"]))
            assert answer.status_code == 200, answers
            wait_until(lambda: len(receiver.accepted) >= len(events), "every event sent")
        assert sorted(accepted_types(receiver)) == sorted(events)
        assert receiver.duplicates == 0


def test_sigterm_answers_a_request_being_taken(tmp_path: Path) -> None:
    """SIGTERM: "requests already being taken finish". aiohttp's shutdown force-closes its
    connections first and drops bytes that arrive after, so a request whose body is still
    arriving is never answered; the drain then waits the whole ``--shutdown-timeout`` for it
    and leaves one second to deliver acknowledged events."""
    with (
        Receiver() as receiver,
        Gateway(receiver, tmp_path / "spool", args=["--shutdown-timeout", "3"]) as gateway,
    ):
        body = event_body(["in_flight"])
        upload = stalled_upload(gateway.http_port, body)
        time.sleep(0.3)  # the gateway has the head (a pause, not a measurement)
        gateway.signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in gateway.output(), "the gateway to start draining")
        upload.sendall(body[-1:])
        status, _ = read_answer(upload)
        upload.close()
        assert gateway.wait() == 0
        output = gateway.output()
    assert status is not None, f"the request was never answered:\n{output}"
    if status == 200:
        assert accepted_types(receiver) == ["in_flight"]


def test_sigterm_keeps_half_the_timeout_for_delivery(tmp_path: Path) -> None:
    """A stalled upload (its body never completes) may not use up ``--shutdown-timeout``: the
    drain gives requests being taken half of it at most, and delivering what was acknowledged
    gets at least the other half (here 2 of 4 s), as the gateway logs when it starts on it."""
    with (
        Receiver() as receiver,
        Gateway(
            receiver,
            tmp_path / "spool",
            args=["--shutdown-timeout", "4", "--request-timeout", "60"],
        ) as gateway,
    ):
        upload = stalled_upload(gateway.http_port, event_body(["never_complete"]))
        time.sleep(0.3)  # the gateway has the head (a pause, not a measurement)
        gateway.signal(signal.SIGTERM)
        assert gateway.wait() == 0
        upload.close()
        output = gateway.output()
    found = re.search(r"delivering acknowledged events \(up to ([0-9.]+) s\)", output)
    assert found is not None, output
    assert float(found.group(1)) >= 2.0, output


def test_bracketed_ipv6_loopback_host_serves(tmp_path: Path) -> None:
    """``--host [::1]`` passes the loopback check (which strips brackets) but is handed to
    aiohttp and gRPC with its brackets, so the gateway exits: "Name or service not known"."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not available")
    http_port, grpc_port = free_port(), free_port()
    with Receiver() as receiver:
        process = subprocess.Popen(
            [
                str(BIN / "python"), "-m", "otel_greenflash.cli", "gateway",
                "--host", "[::1]", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--spool-dir", str(tmp_path / "spool"), "--shutdown-timeout", "1",
            ],
            env=clean_env(
                GREENFLASH_API_KEY=receiver.api_key, GREENFLASH_BASE_URL=receiver.base_url
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            answered = False
            deadline = time.monotonic() + WAIT_SECONDS
            while not answered and process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    answered = httpx.get(f"http://[::1]:{http_port}/healthz").status_code == 200
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=WAIT_SECONDS)
    assert answered, output.decode(errors="replace")


def test_waiting_event_is_delivered_once_after_sigkill_and_restart(tmp_path: Path) -> None:
    """An event acknowledged while it waited for its trace's root is in the spool as a waiting
    row. After a SIGKILL the next gateway adopts the row and sends it as it was written: the
    documented design (docs/delivery.md, "Events waiting for their conversation id": "After a
    crash, the adopting process sends them as they were written — without the conversation id
    the dead process never learned, rather than not at all"). So it is delivered exactly once, even
    when the root (sent by the client after the restart) arrives later.

    The review first asked for the link to survive the SIGKILL; that would need the waiting
    state itself to be durable, a change of design, not of the gateway."""
    spans = InMemorySpanExporter()
    with tracing(spans) as provider:
        tracer = provider.get_tracer("review")
        with tracer.start_as_current_span("chat.turn") as root:
            with tracer.start_as_current_span(
                "upgrade",
                attributes={"greenflash.event.type": "waited", "greenflash.event.value": 1},
            ):
                pass
            root.set_attribute("greenflash.conversation.external_id", "kill-linked")
    child, root_span = spans.get_finished_spans()
    spool = tmp_path / "spool"
    with Receiver() as receiver:
        with Gateway(receiver, spool) as first:
            answer = httpx.post(
                f"{first.url}/v1/traces",
                content=encode_spans([child]).SerializeToString(),
                headers=PROTOBUF,
            )
            assert answer.status_code == 200
            assert first.stats()["pipeline"]["waiting"] == 1
            first.kill()
        assert receiver.accepted == []
        with Gateway(receiver, spool) as second:
            wait_until(lambda: len(receiver.accepted) >= 1, "the adopted event")
            answer = httpx.post(
                f"{second.url}/v1/traces",
                content=encode_spans([root_span]).SerializeToString(),
                headers=PROTOBUF,
            )
            assert answer.status_code == 200

            def settled() -> bool:
                pipeline = second.stats()["pipeline"]
                return bool(pipeline["waiting"] == 0 and pipeline["spool"]["pending"] == 0)

            wait_until(settled, "nothing left to send")
        assert accepted_types(receiver) == ["waited"]
        assert receiver.duplicates == 0


def test_grpc_requests_waiting_for_a_worker_are_not_all_buffered(tmp_path: Path) -> None:
    """The claim "memory is bounded by workers times the largest request" (``_ingest``) holds
    for HTTP, whose body is read only with a slot, but not for gRPC: grpc.aio receives every
    message in full before the handler waits for a slot, and nothing limits concurrent RPCs.
    With the slots busy, 40 requests of 7 MiB are all held in memory.

    ``--request-timeout 30``: the stalled uploads keep every slot until all 40 calls have
    ended (their own deadline is ``LIVENESS_SECONDS``), so what is measured is what calls
    waiting for a worker hold, and nothing else. (With the review's first ``2``, the slots
    free up while calls still wait, and what is measured also includes up to ``WORKERS``
    messages being received at once, each held two or three times for a moment by gRPC's
    receive path and the copies into Python: more than the one ``limit`` per worker this
    bound allows, whatever the gateway does with the calls that wait.)"""
    limit = 8 * 1024 * 1024
    with (
        Receiver() as receiver,
        Gateway(
            receiver,
            tmp_path / "spool",
            args=["--max-request-bytes", str(limit), "--request-timeout", "30"],
        ) as gateway,
    ):
        assert gateway.process is not None
        pid = gateway.process.pid
        stalled = [stalled_upload(gateway.http_port, b"ab", declared=100) for _ in range(WORKERS)]
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "x" * (7 << 20)
        body = request.SerializeToString()
        bound = WORKERS * limit + 64 * 1024 * 1024
        try:
            time.sleep(0.3)  # the uploads hold the slots (a pause, not a measurement)
            before = peak_rss_bytes(pid)
            options = [("grpc.max_send_message_length", 2 * limit)]
            with grpc.insecure_channel(gateway.grpc_endpoint, options=options) as channel:
                export = channel.unary_unary(TRACES)
                calls = [export.future(body, timeout=LIVENESS_SECONDS) for _ in range(40)]
                wait_until(
                    lambda: (
                        all(call.done() for call in calls) or peak_rss_bytes(pid) - before > bound
                    ),
                    "the calls to end",
                )
                growth = peak_rss_bytes(pid) - before
                for call in calls:
                    call.cancel()
        finally:
            for sock in stalled:
                sock.close()
    assert growth <= bound, f"the gateway grew by {growth >> 20} MiB (bound {bound >> 20} MiB)"


def test_unusable_tls_files_are_a_clear_configuration_error(tmp_path: Path) -> None:
    """A certificate or key that is not PEM: the gateway prints a Python traceback (ssl.SSLError
    from ``_ssl_context``, outside the ``try`` that names the port) instead of a configuration
    error like the other checks."""
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    result = subprocess.run(
        [
            str(BIN / "python"), "-m", "otel_greenflash.cli", "gateway",
            "--http-port", str(free_port()), "--grpc-port", str(free_port()),
            "--spool-dir", str(tmp_path / "spool"),
            "--tls-cert", str(cert), "--tls-key", str(key),
        ],
        env=clean_env(GREENFLASH_API_KEY="gf-review-key-0123456789"),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2
    assert "tls" in result.stderr.lower()


# == verified to work =============================================================================


@pytest.mark.parametrize("flags", [1, None], ids=["log-flags-sampled", "log-flags-omitted"])
def test_otlp_json_quirks_linked_across_three_requests(
    shared: Gateway, shared_receiver: Receiver, flags: int | None
) -> None:
    """OTLP JSON as other SDKs write it: upper-case hex ids, enums as names, int64 as JSON
    numbers and as strings, unknown fields; the event span in one request, a log record in a
    second, the root with the conversation id in a third. Both events: once, linked.

    With the log record's ``flags`` omitted (0, as log sources that do not know the trace
    flags send it), the "sampled" rule (``_root_may_still_end`` in ``_link/linker.py``) stops
    the record from waiting for the root that the gateway does receive."""
    trace_id = "5B8EFFF798038103D269B633813FC60C" if flags else "0AF7651916CD43DD8448EB211C80319C"
    root_id, child_id = "EEE19B7EC3C1B174", "EEE19B7EC3C1B175"
    prefix = f"quirk{flags or 0}_"
    headers = {**shared.headers, "Content-Type": "application/json"}
    event_span = {
        "traceId": trace_id,
        "spanId": child_id,
        "parentSpanId": root_id,
        "name": "upgrade",
        "kind": "SPAN_KIND_INTERNAL",
        "startTimeUnixNano": 1700000000100000000,
        "endTimeUnixNano": "1700000000200000000",
        "attributes": [
            _string("greenflash.event.type", f"{prefix}upgrade"),
            {"key": "greenflash.event.value", "value": {"intValue": 149}},
        ],
        "droppedAttributesCount": 0,
        "aFieldFromTheFuture": {"x": 1},
    }
    log_record: dict[str, Any] = {
        "timeUnixNano": "1700000000300000000",
        "traceId": trace_id,
        "spanId": child_id,
        "eventName": "greenflash.event",
        "severityNumber": "SEVERITY_NUMBER_INFO",
        "attributes": [
            _string("greenflash.event.type", f"{prefix}task"),
            {"key": "greenflash.event.value", "value": {"intValue": "1"}},
        ],
    }
    root = {
        "traceId": trace_id.lower(),
        "spanId": root_id.lower(),
        "parentSpanId": "",
        "name": "chat.turn",
        "kind": 2,
        "status": {"code": "STATUS_CODE_OK"},
        "attributes": [_string("gen_ai.conversation.id", "quirk-chat")],
    }
    if flags is not None:
        log_record["flags"] = flags
    requests = [
        ("/v1/traces", {"resourceSpans": [{"scopeSpans": [{"spans": [event_span]}]}], "x": 1}),
        ("/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [log_record]}]}]}),
        ("/v1/traces", {"resourceSpans": [{"scopeSpans": [{"spans": [root]}]}]}),
    ]
    for path, document in requests:
        answer = httpx.post(f"{shared.url}{path}", content=json.dumps(document), headers=headers)
        assert (answer.status_code, answer.json()) == (200, {}), answer.text

    def quirks() -> list[dict[str, Any]]:
        return [e for e in shared_receiver.accepted if str(e["eventType"]).startswith(prefix)]

    wait_until(lambda: len(quirks()) >= 2, "both events")
    linked = sorted((e["eventType"], e.get("externalConversationId")) for e in quirks())
    assert linked == [(f"{prefix}task", "quirk-chat"), (f"{prefix}upgrade", "quirk-chat")]


def test_token_variants_over_http_and_grpc(shared: Gateway) -> None:
    url, body = f"{shared.url}/v1/logs", b""
    for header, expected in (
        (f"bearer {TOKEN}", 200),
        (f"BEARER   {TOKEN}", 200),
        (f"Bearer {TOKEN[:-1]}x", 401),
        (f"Bearer {TOKEN}extra", 401),
        (f"Basic {TOKEN}", 401),
        (TOKEN, 401),
        ("Bearer", 401),
    ):
        answer = httpx.post(url, content=body, headers={**PROTOBUF, "Authorization": header})
        assert answer.status_code == expected, header
    assert httpx.post(f"{url}?token={TOKEN}", content=body, headers=PROTOBUF).status_code == 401
    with grpc.insecure_channel(shared.grpc_endpoint) as channel:
        export = channel.unary_unary(TRACES)
        export(b"", metadata=(("authorization", f"bearer {TOKEN}"),), timeout=30)
        for metadata in ((), (("authorization", f"Bearer {TOKEN}x"),), (("token", TOKEN),)):
            with pytest.raises(grpc.RpcError) as raised:
                export(b"", metadata=metadata, timeout=30)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_chunked_gzip_bomb_and_compressed_grpc_above_the_limit(shared: Gateway) -> None:
    """A chunked gzip body (no Content-Length) inflating to 3200 times the limit: 413. A gRPC
    message compressed below the limit but larger once inflated: RESOURCE_EXHAUSTED."""
    assert shared.process is not None
    before = peak_rss_bytes(shared.process.pid)
    bomb = gzip.compress(b"\x00" * (LIMIT * 3200))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(bomb), 8192):
            yield bomb[start : start + 8192]

    answer = httpx.post(
        f"{shared.url}/v1/traces",
        content=chunks(),
        headers={**PROTOBUF, **shared.headers, "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 413
    assert RpcStatus.FromString(answer.content).code == 8
    assert peak_rss_bytes(shared.process.pid) - before < 64 * 1024 * 1024
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "x" * (LIMIT * 4)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    gzip_channel = grpc.insecure_channel(shared.grpc_endpoint, compression=grpc.Compression.Gzip)
    with gzip_channel as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(TRACES)(request.SerializeToString(), metadata=metadata, timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^({_METRIC_NAME})(?:\{{({_LABEL}(?:,{_LABEL})*)?\}})? "
    r"(-?[0-9.eE+-]+|NaN|[+-]Inf)$"
)


def test_prometheus_text_is_valid(shared: Gateway) -> None:
    """Text format 0.0.4: one HELP and one TYPE per family, before its samples; every sample
    of a declared family; well-formed names, labels and values; no duplicate series."""
    httpx.post(f"{shared.url}/v1/traces", content=b"\xff", headers={**PROTOBUF, **shared.headers})
    answer = httpx.get(f"{shared.url}/metrics", headers=shared.headers)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    text = answer.text
    assert text.endswith("\n")
    helps: set[str] = set()
    types: dict[str, str] = {}
    series: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_METRIC_NAME, name), line
            assert name not in helps, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helps, line
            assert name not in types, line
            assert kind in ("counter", "gauge", "untyped", "histogram", "summary"), line
            types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match is not None, line
            assert match.group(1) in types, f"sample before its TYPE: {line}"
            float(match.group(3))
            key = line.rsplit(" ", 1)[0]
            assert key not in series, f"duplicate series: {line}"
            series.add(key)
    assert types["greenflash_gateway_requests_total"] == "counter"
    assert 'outcome="malformed"' in text
