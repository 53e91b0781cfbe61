"""The OpenTelemetry Collector in front of one gateway, configured as docs/gateway.md says.

SDK applications export to a real Collector (built from its Go modules, tests/support/collector.py)
running the documentation's ``single-gateway`` configuration verbatim; the Collector forwards
over OTLP/HTTP to a gateway subprocess, which delivers to the independent Events API receiver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.trace.export import SpanExporter

from tests.support.chat_turns import (
    assert_acknowledged,
    assert_delivered_once,
    send_turns,
    settled,
    wait_until,
)
from tests.support.collector import Collector, documented_config
from tests.support.gateway_harness import TOKEN, Gateway, tracing
from tests.support.independent_receiver import Receiver


def single_gateway(
    directory: Path, gateway: Gateway, overlay: dict[str, Any] | None = None
) -> Collector:
    """The documented configuration, its exporter aimed at ``gateway``."""
    aimed = {"exporters": {"otlp_http/greenflash": {"endpoint": gateway.url}}}
    return Collector(
        directory,
        [documented_config("single-gateway")],
        overlay=_merge(aimed, overlay or {}),
    )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def exporters_to(collector: Collector, protocol: str) -> tuple[SpanExporter, LogRecordExporter]:
    """What an application does: the SDK's OTLP exporters aimed at the Collector."""
    if protocol == "http":
        return (
            HttpSpans(endpoint=f"{collector.http_url}/v1/traces", timeout=30),
            HttpLogs(endpoint=f"{collector.http_url}/v1/logs", timeout=30),
        )
    return (
        GrpcSpans(endpoint=collector.grpc_endpoint, insecure=True, timeout=30),
        GrpcLogs(endpoint=collector.grpc_endpoint, insecure=True, timeout=30),
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_apps_through_the_collector_arrive_once_linked(
    receiver: Receiver, tmp_path: Path, protocol: str
) -> None:
    conversations = [f"collector-{protocol}-{index}" for index in range(5)]
    with Gateway(receiver, tmp_path / "spool", token=TOKEN) as gateway:
        with single_gateway(tmp_path / "collector", gateway) as collector:
            spans, logs = send_turns(*exporters_to(collector, protocol), conversations)
            assert_acknowledged(spans, logs)
            wait_until(settled(gateway, 2 * len(conversations)), "every event sent")
        stats: Any = gateway.stats()
        assert stats["received"] == {
            "spans": 3 * len(conversations),
            "log_records": len(conversations),
        }
        assert set(stats["requests"]["http"]["traces"]) == {"ok"}
    assert_delivered_once(receiver, conversations)
    assert TOKEN not in collector.output()


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_partial_success_reaches_the_collector(
    receiver: Receiver, tmp_path: Path, encoding: str
) -> None:
    """An invalid business event is a partial success the Collector reads and logs, in
    either of its encodings (``encoding: json`` is a user's choice, set by the overlay)."""
    overlay = {"exporters": {"otlp_http/greenflash": {"encoding": encoding}}}
    broken = {
        "greenflash.event.type": "broken",
        "greenflash.event.value": "abc",
        "greenflash.event.value_type": "currency",
    }
    with Gateway(receiver, tmp_path / "spool", token=TOKEN) as gateway:
        with single_gateway(tmp_path / "collector", gateway, overlay) as collector:
            spans, _ = exporters_to(collector, "http")
            with tracing(spans) as provider:
                provider.get_tracer("app").start_span("pay", attributes=broken).end()
            wait_until(lambda: "Partial success response" in collector.output(), "its warning")
        assert gateway.stats()["requests"]["http"]["traces"] == {"partial": 1}
    (warning,) = (line for line in collector.output().splitlines() if "Partial success" in line)
    assert "1 business event(s) invalid" in warning
    assert '"dropped_spans": 1' in warning
    assert receiver.accepted == []
