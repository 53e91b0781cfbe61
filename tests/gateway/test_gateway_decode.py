"""Decoding OTLP (protobuf and OTLP JSON) into the SDK's spans and log records.

Payloads come from the SDK itself (real spans and log records, encoded by the OTLP exporters'
own encoder) or are written by hand in OTLP JSON as the specification shows it.
"""

from __future__ import annotations

import ast
import base64
import json
import random
import time
from collections.abc import Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped, unused-ignore]
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped, unused-ignore]
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_greenflash import GreenflashConfig
from otel_greenflash._deliver.transport import SendOutcome
from otel_greenflash._event import Endpoint
from otel_greenflash._link.linker import Linker
from otel_greenflash._link.rules import LinkKeys
from otel_greenflash._records import LinkingSpan, count_business_events
from otel_greenflash.attributes import GENAI_SPAN_MARKERS
from otel_greenflash.gateway._decode import (
    JSON,
    PROTOBUF,
    MalformedRequestError,
    _field_starts,
    decode_spans,
    log_records_from_request,
    parse_logs,
    parse_traces,
    spans_from_request,
)
from otel_greenflash.gateway._intake import DurableIntake, NotAccepted
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


def _deep_request(levels: int) -> ExportTraceServiceRequest:
    """One span whose attribute is a kvlist in a kvlist ... ``levels`` deep."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = b"\x01" * 16, b"\x02" * 8
    pair = span.attributes.add()
    pair.key = "deep"
    value = pair.value
    for _ in range(levels):
        inner = value.kvlist_value.values.add()
        inner.key = "k"
        value = inner.value
    value.string_value = "leaf"
    return request


@pytest.mark.parametrize("levels", [31, 32, 60])
def test_json_nesting_is_bounded_where_protobuf_bounds_it(levels: int) -> None:
    """OTLP JSON is refused (malformed, never an internal error) exactly where the same
    request in protobuf is: protobuf's parser allows 100 nested messages; 31 kvlists in a span
    attribute are within that, 32 are not."""
    request = _deep_request(levels)
    outcomes = []
    for body, media_type in (
        (request.SerializeToString(), PROTOBUF),
        (to_otlp_json(request), JSON),
    ):
        try:
            spans_from_request(parse_traces(body, media_type))
            outcomes.append("ok")
        except MalformedRequestError:
            outcomes.append("malformed")
    assert outcomes == (["ok", "ok"] if levels == 31 else ["malformed", "malformed"])


def test_json_deeper_than_python_can_recurse_is_malformed() -> None:
    body = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MalformedRequestError, match="nests objects more than 100 deep"):
        parse_traces(body, JSON)
    body = b'{"resourceSpans": [' + b'{"x": ' * 2000 + b"1" + b"}" * 2000 + b"]}"
    with pytest.raises(MalformedRequestError, match="nests objects more than 100 deep"):
        parse_traces(body, JSON)


def test_a_log_record_without_observed_time_keeps_it_absent() -> None:
    """``observedTimeUnixNano`` is optional: absent stays absent (the insertId digests it, so
    the gateway's clock there would make a replayed request a new event)."""
    record = {
        "timeUnixNano": "1700000000000000000",
        "eventName": "greenflash.event",
        "attributes": [{"key": "greenflash.event.type", "value": {"stringValue": "x"}}],
    }
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()
    (decoded,) = log_records_from_request(parse_logs(body, JSON))
    assert decoded.log_record.observed_timestamp is None
    assert decoded.log_record.timestamp == 1_700_000_000_000_000_000


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


# -- the gateway's decode: linking facts for spans without business events ------------------

LINK_KEYS = LinkKeys(None).all_keys
"""The default id keys and aliases (``gen_ai.conversation.id``, ``session.id``, ``user.id``,
``enduser.id``), as the gateway passes them."""


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _unknown_fields(*, group: bool) -> bytes:
    """Fields no OTLP message defines (numbers 100-103), of every wire type; optionally a
    (deprecated) group, which the walk over the encoding does not handle."""
    fields = (
        _varint(101 << 3 | 5)
        + b"abcd"
        + _varint(102 << 3 | 1)
        + b"12345678"
        + _varint(103 << 3 | 0)
        + _varint(300)
        + _varint(2000 << 3 | 2)
        + _varint(3)
        + b"xyz"
    )
    if group:
        fields += _varint(100 << 3 | 3) + _varint(1 << 3 | 0) + b"\x05" + _varint(100 << 3 | 4)
    return fields


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, tuple):
        array = ArrayValue(values=[AnyValue(string_value=item) for item in value])
        return KeyValue(key=key, value=AnyValue(array_value=array))
    if isinstance(value, dict):
        kvlist = KeyValueList(values=[_kv(k, v) for k, v in value.items()])
        return KeyValue(key=key, value=AnyValue(kvlist_value=kvlist))
    return KeyValue(key=key, value=AnyValue(string_value=value))


_PLAIN_ATTRIBUTES: list[tuple[str, Any]] = [
    ("http.request.method", "POST"),
    ("server.port", 8080),
    ("app.retry", False),
    ("app.ratio", 0.5),
    ("app.tags", ("a", "b")),
    ("app.map", {"k": "v"}),
    ("note", "mentions user.id in a value only"),  # an alias in a value: read, finds nothing
    ("greenflash.event.value", "149.00"),  # mentions greenflash.event, is no event
]
_ID_ATTRIBUTES: list[tuple[str, Any]] = [
    ("gen_ai.conversation.id", "chat-1"),
    ("session.id", "s-1"),
    ("user.id", 42),
    ("enduser.id", "u-2"),
    ("greenflash.conversation.id", "123e4567-e89b-12d3-a456-426614174000"),
    ("greenflash.user.external_id", ("not", "an", "id")),
    ("greenflash.organization.external_id", "org-1"),
]


_GENAI_ATTRIBUTES: list[tuple[str, Any]] = [
    ("gen_ai.operation.name", "chat"),
    ("gen_ai.input.messages", '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]'),
    ("gen_ai.output.messages", "[]"),
    ("openinference.span.kind", "LLM"),
    ("llm.request.type", "chat"),
    ("gen_ai.prompt.0.content", "hi"),
    ("gen_ai.completion.0.role", "assistant"),
    ("gen_ai.request.model", "gpt-4o-mini"),  # a GenAI key that marks no LLM call
    ("note", "a value that names gen_ai.operation.name"),  # a marker in a value only
]


def _random_span(
    rng: random.Random, trace_id: bytes, root_id: bytes, index: int, *, genai: bool = False
) -> Span:
    attributes = [_kv(k, v) for k, v in rng.sample(_PLAIN_ATTRIBUTES, rng.randint(0, 4))]
    if genai and rng.random() < 0.3:  # drawn only for GenAI requests: the others stay as they were
        attributes += [_kv(k, v) for k, v in rng.sample(_GENAI_ATTRIBUTES, rng.randint(1, 2))]
    if rng.random() < 0.3:
        attributes += [_kv(k, v) for k, v in rng.sample(_ID_ATTRIBUTES, rng.randint(1, 3))]
    if rng.random() < 0.1:  # a repeated key: the last value wins, as in a full decode
        attributes += [_kv("session.id", "first"), _kv("session.id", "second")]
    if rng.random() < 0.05:  # more than 16 KiB: a three-byte length in the encoding
        attributes.append(_kv("payload", "x" * 20_000))
    kind = rng.random()
    if kind < 0.05:
        attributes.append(_kv("greenflash.event.type", "task_success"))
    events: list[Span.Event] = []
    if 0.05 <= kind < 0.08:
        events.append(Span.Event(name="greenflash.event", time_unix_nano=5))
    elif 0.08 <= kind < 0.1:
        typed = _kv("greenflash.event.type", "step")
        events.append(Span.Event(name="step", time_unix_nano=6, attributes=[typed]))
    elif rng.random() < 0.2:
        events.append(Span.Event(name="retry", attributes=[_kv("attempt", 2)]))
    if index == 0:
        parent = b""
    elif rng.random() < 0.05:
        parent = bytes(8)  # all zeros: no parent either
    else:
        parent = root_id
    span = Span(
        trace_id=trace_id,
        span_id=root_id if index == 0 else rng.randbytes(7) + b"\x01",
        parent_span_id=parent,
        name=f"span-{index}",
        kind=rng.choice([Span.SPAN_KIND_SERVER, Span.SPAN_KIND_INTERNAL]),
        start_time_unix_nano=1_000,
        end_time_unix_nano=2_000,
        attributes=attributes,
        events=events,
    )
    if rng.random() < 0.1:
        span = Span.FromString(span.SerializeToString() + _unknown_fields(group=False))
    return span


def _random_request(
    rng: random.Random, *, group: bool = False, genai: bool = False
) -> ExportTraceServiceRequest:
    """Several resources and scopes, traces of 1-8 spans, children before roots; with
    ``genai``, some spans carry GenAI keys (LLM-call markers or not)."""
    request = ExportTraceServiceRequest()
    for _ in range(rng.randint(1, 3)):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.append(_kv("service.name", "svc"))
        for _ in range(rng.randint(0, 3)):
            spans: list[Span] = []
            for _ in range(rng.randint(0, 6)):
                trace_id, root_id = rng.randbytes(15) + b"\x01", rng.randbytes(7) + b"\x01"
                trace = [
                    _random_span(rng, trace_id, root_id, i, genai=genai)
                    for i in range(rng.randint(1, 8))
                ]
                spans += reversed(trace)
            scope_spans = ScopeSpans(spans=spans)
            scope_spans.scope.name = "scope"
            encoded = scope_spans.SerializeToString()
            if group or rng.random() < 0.2:
                encoded += _unknown_fields(group=group)
            resource_spans.scope_spans.append(ScopeSpans.FromString(encoded))
    return request


def _same_span(decoded: ReadableSpan, full: ReadableSpan) -> None:
    assert (decoded.name, decoded.context, decoded.parent) == (full.name, full.context, full.parent)
    assert (decoded.kind, decoded.start_time, decoded.end_time) == (
        full.kind,
        full.start_time,
        full.end_time,
    )
    assert decoded.status.status_code == full.status.status_code
    assert dict(decoded.attributes or {}) == dict(full.attributes or {})
    assert [(e.name, dict(e.attributes or {}), e.timestamp) for e in decoded.events] == [
        (e.name, dict(e.attributes or {}), e.timestamp) for e in full.events
    ]
    assert decoded.resource.attributes == full.resource.attributes
    assert decoded.instrumentation_scope == full.instrumentation_scope


def _check_decode_spans(
    request: ExportTraceServiceRequest, llm_call_keys: Collection[str] = ()
) -> tuple[int, int, int]:
    """decode_spans against the full decode: a span with a business event (or any span whose
    encoding mentions ``greenflash.event``, or one of ``llm_call_keys``) comes in full; every
    other span that is a root or carries an id key comes as its linking facts; the rest not at
    all; in request order. Returns how many spans came in full, as facts, and not at all."""
    full = spans_from_request(request)
    decoded = decode_spans(request, linking_keys=LINK_KEYS, llm_call_keys=llm_call_keys)
    full_needles = [b"greenflash.event", *(key.encode() for key in llm_call_keys)]
    assert decoded.count == len(full)
    encodings = [
        span.SerializeToString()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    items = iter(decoded.items)
    item = next(items, None)
    counts = [0, 0, 0]
    for span, encoded in zip(full, encodings, strict=True):
        assert span.context is not None
        root = span.parent is None
        ids = {k: v for k, v in (span.attributes or {}).items() if k in LINK_KEYS}
        if any(needle in encoded for needle in full_needles):
            assert isinstance(item, ReadableSpan)
            _same_span(item, span)
            counts[0] += 1
        elif root or ids:
            assert count_business_events(span) == 0
            expected = LinkingSpan(span.context.trace_id, span.context.span_id, root, ids)
            assert item == expected
            assert list(item.ids) == list(ids)  # same order: the first value recorded wins
            counts[1] += 1
        else:
            assert count_business_events(span) == 0
            counts[2] += 1
            continue  # nothing for this span
        item = next(items, None)
    assert item is None
    return counts[0], counts[1], counts[2]


@pytest.mark.parametrize("seed", range(12))
def test_decode_spans_keeps_what_the_pipeline_reads(seed: int) -> None:
    request = _random_request(random.Random(seed))
    for resource_spans in request.resource_spans:  # no group: every scope can be walked
        for scope_spans in resource_spans.scope_spans:
            starts = _field_starts(scope_spans.SerializeToString(), 0x12)
            assert starts is not None
            assert len(starts) == len(scope_spans.spans)
    _check_decode_spans(request)


def test_decode_spans_covers_every_kind_of_span() -> None:
    """Across the random requests, spans come in full, as facts, and not at all."""
    totals = [0, 0, 0]
    for seed in range(12):
        for index, count in enumerate(_check_decode_spans(_random_request(random.Random(seed)))):
            totals[index] += count
    assert all(total > 20 for total in totals), totals


@pytest.mark.parametrize("seed", range(4))
def test_decode_spans_without_the_walk_over_the_encoding(seed: int) -> None:
    """A scope with an unknown group field cannot be walked: each span is looked at on its
    own, with the same result."""
    request = _random_request(random.Random(seed), group=True)
    scope_spans = request.resource_spans[0].scope_spans
    if scope_spans and scope_spans[0].spans:
        encoded = scope_spans[0].SerializeToString()
        assert _field_starts(encoded, 0x12) is None
    _check_decode_spans(request)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("group", [False, True])
def test_decode_spans_with_capture_decodes_llm_spans_in_full(seed: int, group: bool) -> None:
    """With the GenAI marker keys (conversation capture on), a span that mentions one comes in
    full, whether the scope's encoding is walked or each span is looked at on its own."""
    request = _random_request(random.Random(seed), group=group, genai=True)
    _check_decode_spans(request, GENAI_SPAN_MARKERS)


def test_decode_spans_without_capture_takes_llm_spans_for_linking_only() -> None:
    """Capture off: the same spans come as before, LLM spans as linking facts or not at all."""
    totals = [0, 0, 0]
    for seed in range(8):
        request = _random_request(random.Random(seed), genai=True)
        for index, count in enumerate(_check_decode_spans(request)):
            totals[index] += count
    with_capture = [0, 0, 0]
    for seed in range(8):
        request = _random_request(random.Random(seed), genai=True)
        for index, count in enumerate(_check_decode_spans(request, GENAI_SPAN_MARKERS)):
            with_capture[index] += count
    assert with_capture[0] > totals[0]  # the LLM spans, in full only with capture on


def test_decode_spans_from_the_sdk_and_otlp_json(sdk_spans: list[ReadableSpan]) -> None:
    request = encode_spans(sdk_spans)
    for body, encoding in ((request.SerializeToString(), PROTOBUF), (to_otlp_json(request), JSON)):
        parsed = parse_traces(body, encoding)
        _check_decode_spans(parsed)
        items = decode_spans(parsed, linking_keys=LINK_KEYS).items
        names = [item.name if isinstance(item, ReadableSpan) else item for item in items]
        root = next(span for span in sdk_spans if span.name == "chat.turn")
        assert root.context is not None
        facts = LinkingSpan(
            root.context.trace_id, root.context.span_id, True, {"gen_ai.conversation.id": "chat-1"}
        )
        assert names == ["billing.upgrade", facts]  # worker.task: not a root, no ids


def test_field_starts_reads_every_wire_type() -> None:
    span = b"\x0a\x02ab"
    long_span = b"x" * 300  # a two-byte length whose low byte has bit 7 set
    huge_span = b"y" * 20_000
    encoded = (
        b"\x0a\x01s"  # scope
        + b"\x12"
        + _varint(len(span))
        + span
        + _unknown_fields(group=False)
        + b"\x12"
        + _varint(len(long_span))
        + long_span
        + b"\x12"
        + _varint(len(huge_span))
        + huge_span
    )
    starts = _field_starts(encoded, 0x12)
    assert starts is not None
    assert [encoded[at : at + 1] for at in starts] == [b"\x0a", b"x", b"y"]
    assert _field_starts(encoded[:-1], 0x12) is None  # cut short
    assert _field_starts(encoded + _unknown_fields(group=True), 0x12) is None
    assert _field_starts(b"", 0x12) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"traceId": "xyz0"},
        {"spanId": "abcd"},
        {"traceId": ""},
        {"traceId": "0" * 32},
        {"spanId": "0" * 16},
        {"parentSpanId": "abcd"},
        {"parentSpanId": "abcd", "spanId": "ab"},
    ],
)
def test_decode_spans_refuses_bad_ids_as_the_full_decode_does(fields: dict[str, str]) -> None:
    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                                    "spanId": "b7ad6b7169203331",
                                }
                            ]
                        }
                    ]
                },
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                                    "spanId": "b7ad6b7169203332",
                                    **fields,
                                }
                            ]
                        }
                    ]
                },
            ]
        }
    ).encode()
    try:
        request = parse_traces(body, JSON)
    except MalformedRequestError:
        return  # not hex: refused while parsing, before either decode
    with pytest.raises(MalformedRequestError) as full:
        spans_from_request(request)
    with pytest.raises(MalformedRequestError) as fast:
        decode_spans(request, linking_keys=LINK_KEYS)
    assert str(fast.value) == str(full.value)
    assert str(fast.value).startswith("resourceSpans[1] span 0: ")


def test_linking_span_ended_does_what_finished_span_does() -> None:
    """Two linkers fed the same spans, one as SDK spans, one as linking facts, in a random
    order with events waiting on some traces: the same releases and the same linking state."""
    rng = random.Random(3)
    config = GreenflashConfig.resolve(environ={}, max_traces=8)
    keys = LinkKeys(None)
    full, facts = Linker(config, keys), Linker(config, keys)
    for linker in (full, facts):
        linker.sees_span_ends = True
        linker.notes_every_root = True
    traces = [rng.getrandbits(128) | 1 for _ in range(12)]
    for step in range(4000):
        trace_id = rng.choice(traces)
        if rng.random() < 0.1:  # an event of this trace is queued and waits for its root
            for linker in (full, facts):
                linker.expect_root(trace_id)
                linker.trace_ids.wait(trace_id)
            continue
        root = rng.random() < 0.3
        span_id = rng.getrandbits(64) | 1
        attributes = dict(rng.sample(_PLAIN_ATTRIBUTES[:6], rng.randint(0, 2)))
        if rng.random() < 0.4:
            attributes.update(rng.sample(_ID_ATTRIBUTES, rng.randint(1, 2)))
        parent = None if root else SpanContext(trace_id, rng.getrandbits(64) | 1, False)
        span = ReadableSpan(
            name="s",
            context=SpanContext(trace_id, span_id, False),
            parent=parent,
            attributes=attributes,
        )
        item, released = full.finished_span(span)
        assert item is None
        ids = {k: v for k, v in attributes.items() if k in keys.all_keys}
        assert facts.linking_span_ended(trace_id, span_id, root=root, ids=ids) is released, step
        assert list(full.event_traces) == list(facts.event_traces)
        assert list(full.recent_roots) == list(facts.recent_roots)
        assert full.ended_waiting == facts.ended_waiting
        for known in traces:
            assert (known in full.trace_ids) is (known in facts.trace_ids)
            assert full.trace_ids.ids(known) == facts.trace_ids.ids(known)
            assert full.trace_ids.is_open(known) is facts.trace_ids.is_open(known)
        assert full.trace_ids.span_ids(trace_id, span_id) == facts.trace_ids.span_ids(
            trace_id, span_id
        )


def test_linking_facts_of_roots_and_other_spans() -> None:
    """What the link stage keeps of the spans the gateway gives as facts: a root's ids outrank
    those of other spans of the trace (whichever ended first), every root's end is noted
    (log records arriving later need not wait), and a root releases the records waiting."""
    config = GreenflashConfig.resolve(environ={})
    linker = Linker(config, LinkKeys(None))
    linker.sees_span_ends = True
    linker.notes_every_root = True  # as for the gateway's intake
    trace_id, other_trace = 0xA1, 0xB2
    linker.expect_root(trace_id)
    assert linker.trace_ids.wait(trace_id) == "wait"  # an event of the trace waits
    assert not linker.linking_span_ended(
        trace_id, 2, root=False, ids={"gen_ai.conversation.id": "from-a-child", "user.id": 7}
    )
    assert linker.trace_ids.is_open(trace_id)
    assert linker.linking_span_ended(
        trace_id, 1, root=True, ids={"gen_ai.conversation.id": "from-the-root"}
    )
    assert linker.ended_waiting == [trace_id]
    assert trace_id not in linker.event_traces
    assert not linker.trace_ids.is_open(trace_id)
    assert linker.trace_ids.ids(trace_id) == {
        "greenflash.conversation.external_id": "from-the-root",
        "greenflash.user.external_id": 7,
    }
    assert linker.trace_ids.span_ids(trace_id, 2) == {
        "greenflash.conversation.external_id": "from-a-child",
        "greenflash.user.external_id": 7,
    }
    assert list(linker.recent_roots) == [trace_id]
    # a root without ids, of a trace nobody waits for: only its end is noted
    assert not linker.linking_span_ended(other_trace, 3, root=True, ids={})
    assert list(linker.recent_roots) == [trace_id, other_trace]
    assert other_trace not in linker.trace_ids
    assert linker.ended_waiting == [trace_id]


# -- the durable intake's room check -----------------------------------------------------------


class _Unavailable:
    """An Events API that answers 503 to everything: events stay in the spool."""

    def send(self, body: bytes, timeout_seconds: float | None = None) -> SendOutcome:
        return SendOutcome(503)

    def send_to(
        self, endpoint: str, body: bytes, timeout_seconds: float | None = None
    ) -> SendOutcome:
        return SendOutcome(503)  # messages stay in the spool too

    def close(self) -> None:
        return None


def _event_spans(first: int, count: int) -> list[ReadableSpan | LinkingSpan]:
    return [
        ReadableSpan(
            name="billing.upgrade",
            context=SpanContext(0xC0FFEE, number, False),
            attributes={"greenflash.event.type": "upgrade_purchased", "greenflash.event.value": 1},
            start_time=1,
            end_time=2,
        )
        for number in range(first, first + count)
    ]


def test_the_spool_is_counted_only_when_a_bound_does_not_settle_it(tmp_path: Path) -> None:
    """A request is refused exactly when the events not yet delivered plus its own would
    exceed the spool's bound; the spool (a scan of every row) is counted only when the bound
    kept since the last count (that count plus the rows written since) leaves room in doubt."""
    config = GreenflashConfig.resolve(
        environ={},
        api_key="bench-key-0123456789",
        product_id="123e4567-e89b-12d3-a456-426614174000",
        spool_dir=str(tmp_path),
        spool_max_events=12,
        handle_sigterm=False,
    )
    intake = DurableIntake(config, transport=_Unavailable())
    try:
        spool = intake.pipeline.feed.spool
        assert spool is not None
        counted: list[int] = []
        real_counts = spool.counts

        def counts() -> tuple[int, int]:
            found = real_counts()
            counted.append(found[0])
            return found

        spool.counts = counts  # type: ignore[method-assign]
        assert intake.accept(_event_spans(1, 5), (), 30).events == 5  # counted: 0 waiting
        assert intake.accept(_event_spans(6, 5), (), 30).events == 5  # bound 0 + 5 + 5
        assert counted == [0]
        with pytest.raises(NotAccepted, match=r"the spool is full \(10 of 12 events waiting\)"):
            intake.accept(_event_spans(11, 5), (), 30)  # bound 15: counted, really full
        assert counted == [0, 10]
        assert intake.accept(_event_spans(11, 2), (), 30).events == 2  # 10 + 2 fit exactly
        assert counted == [0, 10]  # nothing written since that count: the bound settles it
        with pytest.raises(NotAccepted, match=r"\(12 of 12 events waiting\)"):
            intake.accept(_event_spans(13, 1), (), 30)  # bound 10 + 2 written + 1: counted
        assert counted == [0, 10, 12]
        assert intake.accept([LinkingSpan(0xC0FFEE, 99, True, {})], (), 30).events == 0
        assert counted == [0, 10, 12]  # a request without events needs no room
        delivered = [event.key for _, event in spool.pending_after(0, 7)]
        spool.remove(delivered)  # as delivery does: the bound is loose until the next count
        assert intake.accept(_event_spans(14, 7), (), 30).events == 7
        assert counted == [0, 10, 12, 5]
        assert real_counts()[0] == 12
    finally:
        intake.shutdown(0)


def _llm_spans(first: int, count: int) -> list[ReadableSpan | LinkingSpan]:
    """LLM calls (OpenTelemetry GenAI form), each the root of its trace and naming its
    conversation and user: mapped at once to one Messages API request each."""
    turn = [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}]
    return [
        ReadableSpan(
            name="chat gpt-4o-mini",
            context=SpanContext(0xCA11, number, False),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": json.dumps(turn),
                "gen_ai.output.messages": json.dumps(answer),
                "greenflash.conversation.external_id": f"chat-{number}",
                "greenflash.user.external_id": "user-1",
            },
            start_time=1,
            end_time=2,
        )
        for number in range(first, first + count)
    ]


def test_room_is_reserved_for_the_messages_an_llm_call_makes(tmp_path: Path) -> None:
    """Capture on: each LLM span may add a spool row (its Messages API request), so a batch
    reserves room for those too, and acknowledged events are never evicted to make room for
    messages; the answer still counts business events only. Capture off: LLM spans need none."""
    intake = _intake(tmp_path / "on", spool_max_events=6, capture_conversations=True)
    try:
        spool = intake.pipeline.feed.spool
        assert spool is not None
        assert intake.accept(_event_spans(1, 2) + _llm_spans(1, 2), (), 30).events == 2
        assert spool.counts_of(Endpoint.EVENTS)[0] == 2
        assert spool.counts_of(Endpoint.MESSAGES)[0] == 2  # one request per LLM call
        with pytest.raises(NotAccepted, match=r"the spool is full \(4 of 6 events waiting\)"):
            intake.accept(_event_spans(3, 1) + _llm_spans(3, 2), (), 30)  # 3 rows: 7 > 6
        assert intake.accept(_event_spans(3, 1) + _llm_spans(3, 1), (), 30).events == 1
        assert spool.counts()[0] == 6  # every row the bound counts, nothing evicted
        # stats()["messages"] appears once the delivery loop has tried a messages request (503
        # here): wait for that, so "nothing dropped" is read after the loop had its chance.
        deadline = time.monotonic() + 10
        while "messages" not in intake.stats() and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = intake.stats()
        assert stats["spool"] == {"pending": 3, "rejected": 0, "evicted": 0}
        assert stats["dropped"] == {}
        assert stats["messages"]["dropped"] == {}
    finally:
        intake.shutdown(0)
    intake = _intake(tmp_path / "off", spool_max_events=6)
    try:
        spool = intake.pipeline.feed.spool
        assert spool is not None
        assert intake.accept(_event_spans(1, 2) + _llm_spans(1, 4), (), 30).events == 2
        assert spool.counts()[0] == 2
        assert "messages" not in intake.stats()
    finally:
        intake.shutdown(0)


def _intake(tmp_path: Path, **settings: Any) -> DurableIntake:
    config = GreenflashConfig.resolve(
        environ={},
        api_key="bench-key-0123456789",
        product_id="123e4567-e89b-12d3-a456-426614174000",
        spool_dir=str(tmp_path),
        handle_sigterm=False,
        **settings,
    )
    return DurableIntake(config, transport=_Unavailable())


def test_a_batch_larger_than_the_queue_is_taken_whole(tmp_path: Path) -> None:
    """The queue holds 4 records; a batch of 10 events (and linking spans between them) is
    handed over in parts that fit, and accepted whole: nothing dropped, all 10 spooled."""
    intake = _intake(tmp_path, max_queue_size=4, max_export_batch_size=4)
    try:
        batch: list[ReadableSpan | LinkingSpan] = []
        for number, span in enumerate(_event_spans(1, 10)):
            batch += [span, LinkingSpan(0xC0FFEE, 1000 + number, False, {})]
        assert intake.accept(batch, (), 30).events == 10
        stats = intake.stats()
        assert stats["dropped"] == {}
        assert stats["spool"]["pending"] == 10
    finally:
        intake.shutdown(0)


def test_a_replayed_log_record_is_one_event_with_the_receipt_time(tmp_path: Path) -> None:
    """A record with neither timestamp, received twice (a client's retry): one event (the
    second is the same insertId), its eventAt the time the gateway first took it."""
    record = {
        "eventName": "greenflash.event",
        "attributes": [
            {"key": "greenflash.event.type", "value": {"stringValue": "replayed"}},
            {"key": "greenflash.event.value", "value": {"intValue": "1"}},
        ],
    }
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()
    intake = _intake(tmp_path)
    try:
        before = time.time_ns()
        for _ in range(2):
            records = log_records_from_request(parse_logs(body, JSON))
            assert intake.accept((), records, 30).events == 1
        after = time.time_ns()
        spool = intake.pipeline.feed.spool
        assert spool is not None
        (row,) = spool.pending_after(0, 10)
        event_at = row[1].body["eventAt"]
        assert isinstance(event_at, str)
        millis = int(datetime.fromisoformat(event_at.replace("Z", "+00:00")).timestamp() * 1000)
        assert before // 1_000_000 <= millis <= after // 1_000_000
        assert intake.stats()["dropped"] == {"duplicate_insert_id": 1}
    finally:
        intake.shutdown(0)


def test_acceptance_counts_the_spans_that_carry_invalid_events(tmp_path: Path) -> None:
    bad = {
        "greenflash.event.type": "bad",
        "greenflash.event.value": "not-money",
        "greenflash.event.value_type": "currency",
    }
    broken = ReadableSpan(
        name="broken",
        context=SpanContext(0xC0FFEE, 77, False),
        attributes=bad,
        events=[Event("greenflash.event", bad, 3), Event("greenflash.event", bad, 4)],
        start_time=1,
        end_time=2,
    )
    intake = _intake(tmp_path)
    try:
        acceptance = intake.accept([*_event_spans(1, 2), broken], (), 30)
        assert (acceptance.events, acceptance.invalid, acceptance.rejected_items) == (2, 3, 1)
    finally:
        intake.shutdown(0)


def test_invalid_events_of_records_waiting_for_their_root_are_reported_once(
    tmp_path: Path,
) -> None:
    """A child span and a log record whose trace's root has not arrived wait (held in the
    spool); their invalid events are in that batch's acceptance all the same (what the map
    stage found when it held them), and in no later batch's: the root's batch releases them
    without a word about them, and ``stats()`` counts each invalid event once."""
    bad = {
        "greenflash.event.type": "bad",
        "greenflash.event.value": "not-money",
        "greenflash.event.value_type": "currency",
    }
    root = SpanContext(0xBEEF, 1, False)
    valid_child = ReadableSpan(
        name="valid",
        context=SpanContext(0xBEEF, 2, False),
        parent=root,
        attributes={"greenflash.event.type": "upgrade_purchased", "greenflash.event.value": 1},
        start_time=1,
        end_time=2,
    )
    broken_child = ReadableSpan(
        name="broken",
        context=SpanContext(0xBEEF, 3, False),
        parent=root,
        attributes=bad,
        start_time=1,
        end_time=2,
    )
    log_record = {
        "eventName": "greenflash.event",
        "timeUnixNano": "5",
        "traceId": f"{0xBEEF:032x}",
        "spanId": f"{2:016x}",
        "attributes": [
            {"key": key, "value": {"stringValue": str(value)}} for key, value in bad.items()
        ],
    }
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [log_record]}]}]}).encode()
    intake = _intake(tmp_path)
    try:
        spans = intake.accept([valid_child, broken_child], (), 30)
        assert (spans.events, spans.invalid, spans.rejected_items) == (1, 1, 1)
        assert "greenflash.event.value" in spans.message
        logs = intake.accept((), log_records_from_request(parse_logs(body, JSON)), 30)
        assert (logs.events, logs.invalid, logs.rejected_items) == (0, 1, 1)
        assert intake.stats()["waiting"] == 3
        released = intake.accept([LinkingSpan(0xBEEF, 1, True, {})], (), 30)
        assert (released.events, released.invalid, released.message) == (0, 0, "")
        stats = intake.stats()
        assert stats["waiting"] == 0
        assert stats["invalid"] == 2
    finally:
        intake.shutdown(0)


def test_decoding_imports_only_the_record_types_of_this_package() -> None:
    """``gateway/_decode.py`` is pure: of this package it imports the finished-record types
    beneath the pipeline (``LinkingSpan``) and nothing of the intake, ingest or pipeline."""
    source = Path(decode_spans.__code__.co_filename).read_text(encoding="utf-8")
    relative = {
        (node.level, node.module)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level
    }
    assert relative == {(2, "_records")}
