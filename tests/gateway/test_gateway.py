"""``otel-greenflash gateway`` as users run it: a subprocess on real ports, fed by the SDK's own
OTLP exporters (HTTP protobuf and gRPC, traces and logs) and by OTLP JSON posted by hand,
delivering to the independent Events API receiver.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.chat_turns import (
    WAIT_SECONDS,
    Acknowledged,
    assert_acknowledged,
    assert_delivered_once,
    send_turns,
    settled,
    wait_until,
)
from tests.support.gateway_harness import (
    TOKEN,
    Gateway,
    grpc_exporters,
    http_exporters,
    self_signed_certificate,
    tracing,
)
from tests.support.independent_receiver import Fault, Receiver
from tests.support.processes import BIN, clean_env

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
# -- delivery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_exporters_traces_and_logs_linked_once(
    receiver: Receiver, tmp_path: Path, protocol: str
) -> None:
    conversations = [f"{protocol}-chat-1", f"{protocol}-chat-2"]
    with Gateway(receiver, tmp_path / "spool") as gateway:
        span_exporter, log_exporter = (
            http_exporters(gateway) if protocol == "http" else grpc_exporters(gateway)
        )
        spans, logs = send_turns(span_exporter, log_exporter, conversations)
        assert_acknowledged(spans, logs)
        wait_until(settled(gateway, 4), "4 events sent")
        stats: Any = gateway.stats()
        assert stats["received"] == {"spans": 6, "log_records": 2}
        assert stats["requests"][protocol]["traces"] == {"ok": 6}
        assert stats["requests"][protocol]["logs"] == {"ok": 2}
    assert_delivered_once(receiver, conversations)
    assert receiver.api_key not in gateway.output()


def otlp_json_trace(trace_id: str, conversation: str) -> dict[str, Any]:
    """Written as the OTLP specification shows it: hex ids, integer enums, camelCase."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "node-api"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "00f067aa0ba902b7",
                                "parentSpanId": "",
                                "name": "chat.turn",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                                "attributes": [
                                    {
                                        "key": "gen_ai.conversation.id",
                                        "value": {"stringValue": conversation},
                                    }
                                ],
                            },
                            {
                                "traceId": trace_id,
                                "spanId": "00f067aa0ba902b8",
                                "parentSpanId": "00f067aa0ba902b7",
                                "name": "billing.upgrade",
                                "kind": 1,
                                "startTimeUnixNano": "1700000000100000000",
                                "endTimeUnixNano": "1700000000200000000",
                                "attributes": [
                                    _string("greenflash.event.type", "upgrade_purchased"),
                                    {"key": "greenflash.event.value", "value": {"intValue": "149"}},
                                    _string("greenflash.event.value_type", "currency"),
                                    _string("greenflash.event.properties.turn", conversation),
                                ],
                            },
                        ],
                    }
                ],
            }
        ]
    }


def otlp_json_log(trace_id: str, conversation: str) -> dict[str, Any]:
    return {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000300000000",
                                "traceId": trace_id,
                                "spanId": "00f067aa0ba902b8",
                                "eventName": "greenflash.event",
                                "severityNumber": 9,
                                "attributes": [
                                    _string("greenflash.event.type", "task_success"),
                                    {"key": "greenflash.event.value", "value": {"intValue": 1}},
                                    _string("greenflash.event.properties.turn", conversation),
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }


def _string(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def test_otlp_json_by_hand_gzip_and_plain(receiver: Receiver, tmp_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with Gateway(receiver, tmp_path / "spool") as gateway:
        traces = gzip.compress(json.dumps(otlp_json_trace(trace_id, "json-chat")).encode())
        answer = httpx.post(
            f"{gateway.url}/v1/traces",
            content=traces,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert (answer.status_code, answer.json()) == (200, {})
        # The bare media type: the Collector's OTLP/HTTP exporter reads a partial success
        # only under exactly this Content-Type (tests/collector checks it end to end).
        assert answer.headers["Content-Type"] == "application/json"
        answer = httpx.post(f"{gateway.url}/v1/logs", json=otlp_json_log(trace_id, "json-chat"))
        assert (answer.status_code, answer.json()) == (200, {})
        wait_until(settled(gateway, 2), "2 events sent")
    assert_delivered_once(receiver, ["json-chat"])


def test_events_wait_for_the_root_of_a_trace_across_services(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Service B's event span has a remote parent in service A; A's root, sent later in another
    request, carries the conversation id. The gateway links across services: B's entry span
    is not a root there."""
    propagator = TraceContextTextMapPropagator()
    a_spans, b_spans = InMemorySpanExporter(), InMemorySpanExporter()
    event = _event("upgrade_purchased", 5) | {"greenflash.event.properties.turn": "svc-chat"}
    with tracing(a_spans, "service-a") as a, tracing(b_spans, "service-b") as b:
        b_tracer = b.get_tracer("b")
        with a.get_tracer("a").start_as_current_span("chat.turn") as root:
            carrier: dict[str, str] = {}
            propagator.inject(carrier)
            remote = propagator.extract(carrier)
            with b_tracer.start_as_current_span("handle", context=remote):
                b_tracer.start_span("upgrade", attributes=event).end()
            root.set_attribute("gen_ai.conversation.id", "svc-chat")
    with Gateway(receiver, tmp_path / "spool") as gateway:
        for batch in (b_spans.get_finished_spans(), a_spans.get_finished_spans()):
            answer = httpx.post(
                f"{gateway.url}/v1/traces",
                content=encode_spans(batch).SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert answer.status_code == 200
        wait_until(settled(gateway, 1), "the event sent")
    (sent,) = receiver.accepted
    assert sent["externalConversationId"] == "svc-chat"


def test_invalid_events_are_a_partial_success(receiver: Receiver, tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    with tracing(spans) as provider:
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("fine", attributes=_event("ok", 1)):
            pass
        bad = _event("bad", 1) | {
            "greenflash.event.value_type": "currency",
            "greenflash.event.value": "abc",
        }
        with tracer.start_as_current_span("broken", attributes=bad):
            pass
    body = encode_spans(spans.get_finished_spans()).SerializeToString()
    with Gateway(receiver, tmp_path / "spool") as gateway:
        answer = httpx.post(
            f"{gateway.url}/v1/traces",
            content=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert answer.status_code == 200
        response = ExportTraceServiceResponse.FromString(answer.content)
        assert response.partial_success.rejected_spans == 1
        assert "1 business event(s) invalid" in response.partial_success.error_message
        with grpc.insecure_channel(gateway.grpc_endpoint) as channel:
            reply = channel.unary_unary(TRACES)(body, timeout=30)
        assert ExportTraceServiceResponse.FromString(reply).partial_success.rejected_spans == 1
        wait_until(settled(gateway, 1), "the valid event sent")
        stats: Any = gateway.stats()
        assert stats["events"]["rejected"] == 2
        assert stats["requests"]["http"]["traces"] == {"partial": 1}
        assert stats["requests"]["grpc"]["traces"] == {"partial": 1}
    assert [event["eventType"] for event in receiver.accepted] == ["ok"]
    assert "abc" not in gateway.output()  # values are never logged


def _event(event_type: str, value: object) -> dict[str, Any]:
    return {"greenflash.event.type": event_type, "greenflash.event.value": value}


# -- refusals ------------------------------------------------------------------------------------


def test_malformed_oversized_and_unauthenticated_requests(
    receiver: Receiver, tmp_path: Path
) -> None:
    limit = 64 * 1024
    with Gateway(
        receiver, tmp_path / "spool", token=TOKEN, args=["--max-request-bytes", str(limit)]
    ) as gateway:
        protobuf = {"Content-Type": "application/x-protobuf"}
        auth = {**protobuf, **gateway.headers}
        url = gateway.url

        # without the token: only /healthz answers
        assert httpx.get(f"{url}/healthz").status_code == 200
        for path in ("/readyz", "/stats", "/metrics"):
            assert httpx.get(f"{url}{path}").status_code == 401
            assert httpx.get(f"{url}{path}", headers=gateway.headers).status_code == 200
        for headers in (protobuf, {**protobuf, "Authorization": "Bearer wrong-token-0123456789"}):
            answer = httpx.post(f"{url}/v1/traces", content=b"", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert RpcStatus.FromString(answer.content).code == 16
        assert httpx.post(f"{url}/v1/logs", content=b"", headers=auth).status_code == 200

        # malformed
        answer = httpx.post(f"{url}/v1/traces", content=b"\xff\xff\xff\xff", headers=auth)
        assert answer.status_code == 400
        status = RpcStatus.FromString(answer.content)
        assert status.code == 3
        assert "not a valid protobuf" in status.message
        answer = httpx.post(
            f"{url}/v1/logs",
            content=b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}',
            headers={**gateway.headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 400
        assert "traceId is not a hex string" in answer.json()["message"]
        answer = httpx.post(
            f"{url}/v1/traces",
            content=b"\x1f\x8b not gzip",
            headers={**auth, "Content-Encoding": "gzip"},
        )
        assert answer.status_code == 400
        answer = httpx.post(
            f"{url}/v1/traces",
            content=b"{}",
            headers={**gateway.headers, "Content-Type": "text/plain"},
        )
        assert answer.status_code == 415

        # oversized: declared, and only found out after gzip
        answer = httpx.post(f"{url}/v1/traces", content=b"\x00" * (limit + 1), headers=auth)
        assert answer.status_code == 413
        assert RpcStatus.FromString(answer.content).code == 8
        bomb = gzip.compress(b"\x00" * (limit * 16))
        assert len(bomb) < limit
        answer = httpx.post(
            f"{url}/v1/traces", content=bomb, headers={**auth, "Content-Encoding": "gzip"}
        )
        assert answer.status_code == 413

        # gRPC: the same three refusals
        token_metadata = (("authorization", f"Bearer {TOKEN}"),)
        with grpc.insecure_channel(gateway.grpc_endpoint) as channel:
            for method in (TRACES, LOGS):
                export = channel.unary_unary(method)
                assert _grpc_code(export, b"", ()) == grpc.StatusCode.UNAUTHENTICATED
                malformed = _grpc_code(export, b"\xff\xff\xff", token_metadata)
                assert malformed == grpc.StatusCode.INVALID_ARGUMENT
                oversized = _grpc_code(export, b"\x00" * (limit + 1), token_metadata)
                assert oversized == grpc.StatusCode.RESOURCE_EXHAUSTED
            reply = channel.unary_unary(LOGS)(b"", metadata=token_metadata, timeout=30)
            assert ExportLogsServiceResponse.FromString(reply) == ExportLogsServiceResponse()

        stats: Any = gateway.stats()
        assert stats["requests"]["http"]["traces"]["unauthenticated"] == 2
        assert stats["requests"]["http"]["traces"]["malformed"] == 3
        assert stats["requests"]["http"]["traces"]["too_large"] == 2
        assert stats["requests"]["grpc"]["traces"]["malformed"] == 1
        metrics = httpx.get(f"{url}/metrics", headers=gateway.headers).text
        assert (
            'greenflash_gateway_requests_total{protocol="http",signal="traces",'
            'outcome="too_large"} 2'
        ) in metrics
    output = gateway.output()
    assert TOKEN not in output
    assert receiver.api_key not in output


def _grpc_code(export: Any, body: bytes, metadata: tuple[tuple[str, str], ...]) -> Any:
    with pytest.raises(grpc.RpcError) as raised:
        export(body, metadata=metadata, timeout=30)
    return raised.value.code()


def test_tls_and_token_with_the_sdk_exporters(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = self_signed_certificate(tmp_path)
    if files is None:
        pytest.skip("no openssl command to make a certificate")
    # requests (under the SDK's HTTP exporter) lets these variables override the exporter's
    # certificate_file; machines that set them for a corporate CA would not trust ours.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with Gateway(receiver, tmp_path / "spool", token=TOKEN, tls=files) as gateway:
        spans, logs = send_turns(*http_exporters(gateway), ["tls-http"])
        assert_acknowledged(spans, logs)
        spans, logs = send_turns(*grpc_exporters(gateway), ["tls-grpc"])
        assert_acknowledged(spans, logs)
        wait_until(settled(gateway, 4), "4 events sent")
        with pytest.raises(httpx.HTTPError):  # plain text to the TLS port
            httpx.get(f"http://127.0.0.1:{gateway.http_port}/healthz", timeout=10)
    assert_delivered_once(receiver, ["tls-http", "tls-grpc"])


def test_configuration_errors_are_clear() -> None:
    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "python"), "-m", "otel_greenflash.cli", "gateway", *args],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    exposed = gateway("--host", "0.0.0.0")
    assert exposed.returncode == 2
    assert "GREENFLASH_GATEWAY_TOKEN" in exposed.stderr
    short = gateway("--token", "s3cret")
    assert short.returncode == 2
    assert "at least 16" in short.stderr
    assert "s3cret" not in short.stderr
    half_tls = gateway("--tls-cert", __file__)
    assert half_tls.returncode == 2
    assert "--tls-key" in half_tls.stderr


# -- durability ----------------------------------------------------------------------------------


def test_sigkill_after_acknowledgement_delivers_once_after_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    conversations = ["kill-chat-1", "kill-chat-2", "kill-chat-3"]
    spool = tmp_path / "spool"
    receiver.mix({Fault.status(503): 1.0}, seed=1)  # the Events API is down
    first = Gateway(receiver, spool).start()
    try:
        spans, logs = send_turns(*http_exporters(first), conversations)
        assert_acknowledged(spans, logs)
        wait_until(lambda: first.stats()["pipeline"]["waiting"] == 0, "links resolved")
        wait_until(lambda: len(receiver.requests) > 0, "a delivery attempt")
        first.kill()
    finally:
        first.stop()
    assert receiver.accepted == []
    receiver.clear_faults()
    with Gateway(receiver, spool) as second:
        wait_until(lambda: len(receiver.accepted) >= 6, "6 events after the restart")
        wait_until(settled(second, 6), "the spool emptied")
    assert_delivered_once(receiver, conversations)


def test_spool_full_answers_503_and_the_client_retry_succeeds(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.mix({Fault.status(503): 1.0}, seed=2)  # down until the spool is full
    with Gateway(
        receiver, tmp_path / "spool", environment={"GREENFLASH_SPOOL_MAX_EVENTS": "4"}
    ) as gateway:
        refused = None
        for index in range(40):
            answer = httpx.post(
                f"{gateway.url}/v1/traces",
                content=_root_event_body(f"full-{index}"),
                headers={"Content-Type": "application/x-protobuf"},
            )
            if answer.status_code != 200:
                refused = (index, answer)
                break
        assert refused is not None, "the spool never filled"
        index, answer = refused
        assert index == 4  # GREENFLASH_SPOOL_MAX_EVENTS: four one-event requests were taken
        assert answer.status_code == 503
        retry_after = int(answer.headers["Retry-After"])
        assert retry_after >= 1
        assert RpcStatus.FromString(answer.content).code == 14

        # Readiness says so (a load balancer sends elsewhere), and the depths are shown.
        ready = httpx.get(f"{gateway.url}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "ready": False,
            "reason": "the spool is full (4 of 4 events waiting)",
        }
        stats: Any = gateway.stats()
        assert stats["spool"] == {"depth": 4, "capacity": 4}
        assert stats["queue"] == {"depth": 0, "capacity": 16384}
        metrics = httpx.get(f"{gateway.url}/metrics").text
        for sample in (
            "greenflash_gateway_ready 0",
            "greenflash_gateway_spool_pending 4",
            "greenflash_gateway_spool_capacity 4",
            "greenflash_gateway_queue_depth 0",
            "greenflash_gateway_queue_capacity 16384",
        ):
            assert f"\n{sample}\n" in metrics, sample

        # The API comes back; the client retries the refused request as OTLP clients do (after
        # Retry-After) until it is taken.
        receiver.clear_faults()
        deadline = time.monotonic() + WAIT_SECONDS
        while answer.status_code == 503:
            assert time.monotonic() < deadline, "the retry was never accepted"
            time.sleep(int(answer.headers["Retry-After"]))
            answer = httpx.post(
                f"{gateway.url}/v1/traces",
                content=_root_event_body(f"full-{index}"),
                headers={"Content-Type": "application/x-protobuf"},
            )
        assert answer.status_code == 200
        wait_until(settled(gateway, index + 1), "every acknowledged event sent")
        assert httpx.get(f"{gateway.url}/readyz").json() == {"ready": True, "reason": "ready"}
        stats = gateway.stats()
        assert stats["requests"]["http"]["traces"]["unavailable"] >= 1
        assert stats["requests"]["http"]["traces"]["ok"] == index + 1
    assert sorted(event["eventType"] for event in receiver.accepted) == sorted(
        f"full-{number}" for number in range(index + 1)
    )
    assert receiver.duplicates == 0


def _root_event_body(event_type: str) -> bytes:
    spans = InMemorySpanExporter()
    with tracing(spans) as provider:
        attributes = _event(event_type, 1) | {"greenflash.conversation.external_id": "c"}
        with provider.get_tracer("app").start_as_current_span("event", attributes=attributes):
            pass
    body: bytes = encode_spans(spans.get_finished_spans()).SerializeToString()
    return body


# -- scale out and stop --------------------------------------------------------------------------


class TraceIdRouter(SpanExporter):
    """What the Collector's ``loadbalancing`` exporter does with ``routing_key: traceID``:
    every span of a trace goes to the same backend, over OTLP/gRPC."""

    def __init__(self, backends: Sequence[SpanExporter]) -> None:
        self.backends = backends
        self.traces: dict[int, set[int]] = defaultdict(set)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        groups: dict[int, list[ReadableSpan]] = defaultdict(list)
        for span in spans:
            assert span.context is not None
            backend = span.context.trace_id % len(self.backends)
            groups[backend].append(span)
            self.traces[backend].add(span.context.trace_id)
        results = {self.backends[index].export(batch) for index, batch in groups.items()}
        return (
            SpanExportResult.SUCCESS
            if results == {SpanExportResult.SUCCESS}
            else (SpanExportResult.FAILURE)
        )

    def shutdown(self) -> None:
        for backend in self.backends:
            backend.shutdown()


def test_two_replicas_behind_a_trace_id_router(receiver: Receiver, tmp_path: Path) -> None:
    with Gateway(receiver, tmp_path / "a") as one, Gateway(receiver, tmp_path / "b") as two:
        router = TraceIdRouter([grpc_exporters(one)[0], grpc_exporters(two)[0]])
        spans = Acknowledged(router)
        conversations: list[str] = []
        with tracing(spans) as provider:
            tracer = provider.get_tracer("app")
            while min(len(router.traces[0]), len(router.traces[1])) < 2:
                assert len(conversations) < 64
                conversation = f"replica-chat-{len(conversations)}"
                conversations.append(conversation)
                with tracer.start_as_current_span("chat.turn") as root:
                    with tracer.start_as_current_span(
                        "upgrade",
                        attributes=_event("upgrade_purchased", 1)
                        | {"greenflash.event.properties.turn": conversation},
                    ):
                        pass
                    root.set_attribute("greenflash.conversation.external_id", conversation)
        assert set(spans.results) == {SpanExportResult.SUCCESS}
        for gateway, backend in ((one, 0), (two, 1)):
            wait_until(settled(gateway, len(router.traces[backend])), "each replica's events")
            assert gateway.stats()["received"] == {
                "spans": 2 * len(router.traces[backend]),
                "log_records": 0,
            }
    assert receiver.duplicates == 0
    linked = {
        event["properties"]["turn"]: event.get("externalConversationId")
        for event in receiver.accepted
    }
    assert linked == {conversation: conversation for conversation in conversations}


def test_sigterm_drains_acknowledged_events(tmp_path: Path) -> None:
    conversations = ["drain-chat-1", "drain-chat-2", "drain-chat-3"]
    with Receiver(latency_seconds=0.3) as receiver:  # a slow API: 6 events take 1.8 s at least
        gateway = Gateway(
            receiver, tmp_path / "spool", environment={"GREENFLASH_BSP_MAX_CONCURRENCY": "1"}
        ).start()
        try:
            spans, logs = send_turns(*grpc_exporters(gateway), conversations)
            assert_acknowledged(spans, logs)
            assert len(receiver.accepted) < 6  # still to deliver when SIGTERM comes
            gateway.signal(signal.SIGTERM)
            assert gateway.wait() == 0
        finally:
            gateway.stop()
        assert_delivered_once(receiver, conversations)
    output = gateway.output()
    assert "stopping" in output
    assert "stopped" in output


def test_cli_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    """A Python where opentelemetry.proto cannot be imported: the CLI still starts, and the
    gateway command names the extra to install."""
    blocker = tmp_path / "blocker"
    (blocker / "opentelemetry" / "proto").mkdir(parents=True)
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'grpc' or name.startswith('opentelemetry.proto'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    result = subprocess.run(
        [str(BIN / "python"), "-m", "otel_greenflash.cli", "gateway"],
        env=clean_env(PYTHONPATH=str(blocker)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'otel-greenflash[gateway]'" in result.stderr
    version = subprocess.run(
        [str(BIN / "python"), "-m", "otel_greenflash.cli", "--version"],
        env=clean_env(PYTHONPATH=str(blocker)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0
