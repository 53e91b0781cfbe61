"""Decoding OTLP (protobuf and OTLP JSON) into the SDK's spans and log records.

Payloads come from the SDK itself (real spans and log records, encoded by the OTLP exporters'
own encoder) or are written by hand in OTLP JSON as the specification shows it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped, unused-ignore]
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped, unused-ignore]
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_greenflash.gateway._decode import (
    JSON,
    PROTOBUF,
    MalformedRequestError,
    log_records_from_request,
    parse_logs,
    parse_traces,
    spans_from_request,
)
from otel_greenflash.gateway._status import (
    RETRY_INFO_TYPE_URL,
    any_message,
    retry_info,
    status_json,
    status_protobuf,
)

RESOURCE = Resource({"service.name": "checkout", "deployment.environment": "test"})
EVENT_ATTRIBUTES: dict[str, Any] = {
    "greenflash.event.type": "upgrade_purchased",
    "greenflash.event.value": "149.00",
    "greenflash.event.properties.seats": 5,
    "greenflash.event.properties.ratio": 0.25,
    "greenflash.event.properties.trial": False,
    "greenflash.event.properties.tags": ("a", "b"),
}


@pytest.fixture
def sdk_spans() -> Iterator[list[ReadableSpan]]:
    """A trace made by the SDK: a root, a child with an event, and a span whose parent came
    from another service (a remote parent)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop", "1.2.3")
    with tracer.start_as_current_span(
        "chat.turn", kind=SpanKind.SERVER, attributes={"gen_ai.conversation.id": "chat-1"}
    ):
        with tracer.start_as_current_span("billing.upgrade", attributes=EVENT_ATTRIBUTES) as span:
            span.add_event("greenflash.event", {"greenflash.event.type": "step", "n": 2})
            span.set_status(trace.Status(StatusCode.ERROR, "card declined"))
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    remote_parent = TraceContextTextMapPropagator().extract(carrier)
    with tracer.start_as_current_span("worker.task", context=remote_parent, kind=SpanKind.CONSUMER):
        pass
    yield list(exporter.get_finished_spans())
    provider.shutdown()


@pytest.fixture
def sdk_log_records() -> Iterator[list[ReadableLogRecord]]:
    """Two records from the SDK: a business event inside a span, and a plain log line."""
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call, unused-ignore]
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.events", "0.1")
    tracer = TracerProvider().get_tracer("shop")
    with tracer.start_as_current_span("checkout"):
        logger.emit(
            event_name="greenflash.event",
            attributes=EVENT_ATTRIBUTES,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body={"note": "upgrade", "items": [1, 2]},
            timestamp=1_700_000_000_123_456_789,
        )
    logger.emit(body="plain line", severity_number=SeverityNumber.WARN)
    yield list(exporter.get_finished_logs())
    provider.shutdown()


def to_otlp_json(message: Any) -> bytes:
    """OTLP JSON as the specification defines it: protobuf JSON, but ids in hex."""
    document = json_format.MessageToDict(message)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(document)
    return json.dumps(document).encode()


# -- spans -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_spans_round_trip_from_the_sdk(sdk_spans: list[ReadableSpan], encoding: str) -> None:
    request = encode_spans(sdk_spans)
    body = request.SerializeToString() if encoding == PROTOBUF else to_otlp_json(request)
    decoded = {span.name: span for span in spans_from_request(parse_traces(body, encoding))}
    assert set(decoded) == {"chat.turn", "billing.upgrade", "worker.task"}
    for original in sdk_spans:
        span = decoded[original.name]
        assert span.context is not None
        assert original.context is not None
        assert span.context.trace_id == original.context.trace_id
        assert span.context.span_id == original.context.span_id
        assert span.kind == original.kind
        assert span.start_time == original.start_time
        assert span.end_time == original.end_time
        assert span.resource.attributes["service.name"] == "checkout"
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "shop"
        assert span.instrumentation_scope.version == "1.2.3"
    event_span = decoded["billing.upgrade"]
    assert dict(event_span.attributes or {}) == EVENT_ATTRIBUTES
    assert event_span.status.status_code is StatusCode.ERROR
    assert event_span.status.description == "card declined"
    (event,) = event_span.events
    assert event.name == "greenflash.event"
    assert dict(event.attributes or {}) == {"greenflash.event.type": "step", "n": 2}
    assert event.timestamp == sdk_spans[0].events[0].timestamp
    assert dict(decoded["chat.turn"].attributes or {}) == {"gen_ai.conversation.id": "chat-1"}


def test_only_a_span_without_parent_is_a_root(sdk_spans: list[ReadableSpan]) -> None:
    """The remote parent of worker.task becomes a local parent: the gateway sees the whole
    distributed trace, whose one root is chat.turn."""
    request = encode_spans(sdk_spans)
    decoded = {span.name: span for span in spans_from_request(request)}
    originals = {span.name: span for span in sdk_spans}
    assert decoded["chat.turn"].parent is None
    for name in ("billing.upgrade", "worker.task"):
        parent = decoded[name].parent
        original_parent = originals[name].parent
        assert parent is not None
        assert original_parent is not None
        assert parent.span_id == original_parent.span_id
        assert parent.trace_id == original_parent.trace_id
        assert parent.is_remote is False
    assert originals["worker.task"].parent is not None
    assert originals["worker.task"].parent.is_remote is True


def test_hand_written_otlp_json() -> None:
    """The specification's form: hex ids, integer enums, lowerCamelCase, 64-bit integers as
    strings, unknown fields ignored."""
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "node-app"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual", "version": "1"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "name": "root",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [
                                    {"key": "count", "value": {"intValue": "42"}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {
                                        "key": "list",
                                        "value": {
                                            "arrayValue": {
                                                "values": [
                                                    {"stringValue": "x"},
                                                    {"intValue": 7},
                                                ]
                                            }
                                        },
                                    },
                                    {
                                        "key": "map",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "k", "value": {"stringValue": "v"}}
                                                ]
                                            }
                                        },
                                    },
                                    {"key": "raw", "value": {"bytesValue": "AQI="}},
                                    {"key": "empty", "value": {}},
                                ],
                                "status": {"code": 1},
                                "somethingNew": {"ignored": True},
                            },
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b175",
                                "parentSpanId": "eee19b7ec3c1b174",
                                "name": "child",
                                "startTimeUnixNano": 1544712660500000000,
                                "events": [
                                    {
                                        "timeUnixNano": "1544712660600000000",
                                        "name": "greenflash.event",
                                        "attributes": [
                                            {
                                                "key": "greenflash.event.type",
                                                "value": {"stringValue": "task_success"},
                                            }
                                        ],
                                    }
                                ],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    root, child = spans_from_request(parse_traces(json.dumps(body).encode(), JSON))
    assert root.context is not None
    assert root.context.trace_id == 0x5B8EFFF798038103D269B633813FC60C
    assert root.context.span_id == 0xEEE19B7EC3C1B174
    assert root.parent is None
    assert root.kind is SpanKind.SERVER
    assert root.status.status_code is StatusCode.OK
    assert root.end_time == 1544712661000000000
    assert dict(root.attributes or {}) == {
        "count": 42,
        "ratio": 0.5,
        "ok": True,
        "list": ("x", 7),
        "map": {"k": "v"},
        "raw": b"\x01\x02",
        "empty": None,
    }
    assert root.resource.attributes["service.name"] == "node-app"
    assert child.parent is not None
    assert child.parent.span_id == 0xEEE19B7EC3C1B174
    assert child.kind is SpanKind.INTERNAL
    # no end time on the wire: the start time stands in, so the event time is still defined
    assert child.end_time == 1544712660500000000
    assert child.events[0].timestamp == 1544712660600000000
    assert dict(child.events[0].attributes or {}) == {"greenflash.event.type": "task_success"}


def test_linking_only_spans_skip_attributes_and_events() -> None:
    """With the pipeline's linking keys, a span that mentions none of them (nor any
    ``greenflash.`` key or event) keeps its ids, parent and times but no attributes; every
    other span is decoded in full."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("root", attributes={"session.id": "s-1", "http.route": "/"}):
        with tracer.start_as_current_span("plain", attributes={"db.system": "sqlite"}) as plain:
            plain.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("marked", attributes={"db.system": "sqlite"}) as span:
            span.add_event("greenflash.event", {"greenflash.event.type": "step"})
    provider.shutdown()
    request = encode_spans(exporter.get_finished_spans())
    keys = frozenset({"greenflash.conversation.id", "session.id", "user.id"})
    decoded = {span.name: span for span in spans_from_request(request, linking_keys=keys)}
    full = {span.name: span for span in spans_from_request(request)}
    assert dict(decoded["root"].attributes or {}) == {"session.id": "s-1", "http.route": "/"}
    assert dict(decoded["marked"].attributes or {}) == {"db.system": "sqlite"}
    assert [event.name for event in decoded["marked"].events] == ["greenflash.event"]
    assert dict(decoded["plain"].attributes or {}) == {}
    assert list(decoded["plain"].events) == []
    assert dict(full["plain"].attributes or {}) == {"db.system": "sqlite"}
    assert [event.name for event in full["plain"].events] == ["retry"]
    for name, linking_only in decoded.items():
        complete = full[name]
        assert linking_only.context == complete.context
        assert linking_only.parent == complete.parent
        assert linking_only.start_time == complete.start_time
        assert linking_only.end_time == complete.end_time


def test_empty_request_is_no_spans() -> None:
    assert spans_from_request(parse_traces(b"", PROTOBUF)) == []
    assert spans_from_request(parse_traces(b"{}", JSON)) == []
    assert log_records_from_request(parse_logs(b"{}", "application/json; charset=utf-8")) == []


# -- log records -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_log_records_round_trip_from_the_sdk(
    sdk_log_records: list[ReadableLogRecord], encoding: str
) -> None:
    request = encode_logs(sdk_log_records)
    body = request.SerializeToString() if encoding == PROTOBUF else to_otlp_json(request)
    event, plain = log_records_from_request(parse_logs(body, encoding))
    original = sdk_log_records[0].log_record
    record = event.log_record
    assert record.event_name == "greenflash.event"
    assert original.trace_id
    assert record.trace_id == original.trace_id
    assert record.span_id == original.span_id
    assert record.trace_flags == original.trace_flags
    span_context = trace.get_current_span(record.context).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (original.trace_id, original.span_id)
    assert dict(record.attributes or {}) == EVENT_ATTRIBUTES
    assert record.timestamp == 1_700_000_000_123_456_789
    assert record.observed_timestamp == original.observed_timestamp
    assert record.severity_number is SeverityNumber.INFO
    assert record.severity_text == "INFO"
    assert record.body == {"note": "upgrade", "items": (1, 2)}
    assert event.resource.attributes["service.name"] == "checkout"
    assert event.instrumentation_scope is not None
    assert event.instrumentation_scope.name == "shop.events"
    assert plain.log_record.event_name is None
    assert plain.log_record.trace_id == 0
    assert plain.log_record.span_id == 0
    assert plain.log_record.body == "plain line"
    assert plain.log_record.severity_number is SeverityNumber.WARN


def test_log_record_with_a_trace_but_no_span() -> None:
    body = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "attributes": [
                                    {
                                        "key": "greenflash.event.type",
                                        "value": {"stringValue": "signup"},
                                    }
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (record,) = log_records_from_request(parse_logs(json.dumps(body).encode(), JSON))
    assert record.log_record.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert record.log_record.span_id == 0
    assert record.log_record.event_name is None


# -- malformed requests ----------------------------------------------------------------------


def span_json(**fields: Any) -> bytes:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
    span.update(fields)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, "not a valid protobuf ExportTraceServiceRequest"),
        (b"{not json", JSON, "not JSON"),
        (b"[1, 2]", JSON, "not a JSON object"),
        (b'{"resourceSpans": 5}', JSON, "not OTLP JSON"),
        (span_json(traceId="xyz"), JSON, "resourceSpans[0].scopeSpans[0].spans[0].traceId is not"),
        (span_json(spanId="abcd"), JSON, "span 0: span_id has 2 bytes; allowed: 8 bytes"),
        (span_json(traceId=""), JSON, "trace_id has 0 bytes; allowed: 16 bytes"),
        (span_json(traceId="0" * 32), JSON, "trace_id is all zeros"),
        (span_json(parentSpanId="abc"), JSON, "parentSpanId is not a hex string"),
        (span_json(parentSpanId="abcd"), JSON, "parent_span_id has 2 bytes"),
        (b"{}", "text/plain", "unsupported Content-Type 'text/plain'"),
        (b"{}", "", "unsupported Content-Type '(none)'"),
    ],
)
def test_malformed_trace_requests(body: bytes, content_type: str, expected: str) -> None:
    with pytest.raises(MalformedRequestError) as raised:
        spans_from_request(parse_traces(body, content_type))
    assert expected in str(raised.value)


def test_malformed_log_request_names_the_record() -> None:
    body = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{}, {"traceId": "0af7", "spanId": "b7ad6b7169203331"}]}]}
        ]
    }
    with pytest.raises(MalformedRequestError, match=r"log record 1: trace_id has 2 bytes"):
        log_records_from_request(parse_logs(json.dumps(body).encode(), JSON))
    with pytest.raises(
        MalformedRequestError, match="not a valid protobuf ExportLogsServiceRequest"
    ):
        parse_logs(b"\x0a\xff", PROTOBUF)


# -- status messages on the wire ---------------------------------------------------------------


def test_status_and_retry_info_read_by_googles_own_messages() -> None:
    detail = any_message(RETRY_INFO_TYPE_URL, retry_info(2.5))
    status = RpcStatus.FromString(status_protobuf(14, "spool full ü", (detail,)))
    assert (status.code, status.message) == (14, "spool full ü")
    info = RetryInfo()
    assert status.details[0].Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (2, 500_000_000)
    assert RetryInfo.FromString(retry_info(0)).retry_delay.seconds == 0
    assert json.loads(status_json(3, "bad")) == {"code": 3, "message": "bad"}
