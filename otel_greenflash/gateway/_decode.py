"""OTLP requests (protobuf or OTLP JSON) → the SDK's finished spans and log records.

Decoding is pure: bytes in, :class:`~opentelemetry.sdk.trace.ReadableSpan` and
:class:`~opentelemetry.sdk._logs.ReadableLogRecord` out, or :class:`MalformedRequestError` with a
message that says what is wrong (never the payload's values, except ids that are not hex).

Parents: a span with a ``parent_span_id`` gets a parent :class:`SpanContext` with
``is_remote=False`` even when its parent ran in another service. The gateway sees the spans of a
whole distributed trace, so the only trace root is the span without a parent span id, and events
waiting for their conversation id wait for that real root, not for each service's entry span.
Span links are not decoded: linking follows the trace id and parent ids only.

The gateway decodes with :func:`decode_spans`: only a span that may carry a business event (its
encoded form mentions ``greenflash.event``) becomes a ``ReadableSpan``; every other span is
reduced to what the link stage reads of it (:class:`~otel_greenflash._records.LinkingSpan`),
and a span that is neither a trace root nor carries an id key is validated and then dropped
(linking does nothing with it). With conversation capture on, a span that mentions one of the
GenAI marker keys (an LLM call) is decoded in full too.
"""

from __future__ import annotations

import base64
import bisect
import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope as Scope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from .._records import LinkingSpan

__all__ = [
    "DecodedSpans",
    "MalformedRequestError",
    "RequestTooLargeError",
    "decode_spans",
    "log_records_from_request",
    "parse_logs",
    "parse_traces",
    "spans_from_request",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_KINDS = {
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {1: StatusCode.OK, 2: StatusCode.ERROR}
_UNSET = Status(StatusCode.UNSET)
_TRACE_FLAGS = {0: TraceFlags(0), 1: TraceFlags(1)}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_EMPTY_CONTEXT = Context()
_GREENFLASH = "greenflash."
_EVENT_NEEDLE = b"greenflash.event"
"""In the encoded form of every span that carries a business event: the ``greenflash.event.type``
key (of the span or of a span event) or the ``greenflash.event`` span event name."""
_NO_TRACE = bytes(16)
_NO_SPAN = bytes(8)
_NO_IDS: Mapping[str, Any] = MappingProxyType({})
_SPANS_FIELD = 0x12
"""The key of ``ScopeSpans.spans`` in the encoding: field 2, length-delimited."""
_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value", "bytes_value"})


class MalformedRequestError(ValueError):
    """The request body is not a valid OTLP export request; the message says why."""


class RequestTooLargeError(ValueError):
    """The request body, once inflated, is larger than the gateway's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the gateway's limit of {limit} bytes")
        self.limit = limit


class _BadIdError(ValueError):
    """An id of the wrong size; the caller adds where it is."""


# -- entry points --------------------------------------------------------------------------------


def parse_traces(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Parse an OTLP/HTTP traces body (``application/x-protobuf`` or ``application/json``)."""
    request = ExportTraceServiceRequest()
    _parse(request, body, content_type)
    return request


def parse_logs(body: bytes, content_type: str) -> ExportLogsServiceRequest:
    """Parse an OTLP/HTTP logs body (``application/x-protobuf`` or ``application/json``)."""
    request = ExportLogsServiceRequest()
    _parse(request, body, content_type)
    return request


def spans_from_request(
    request: ExportTraceServiceRequest, *, linking_keys: Collection[str] | None = None
) -> list[ReadableSpan]:
    """Every span of the request as a finished SDK span, with its resource and scope.

    With ``linking_keys`` (the pipeline's id keys and aliases), a span whose encoded form
    mentions none of them and no ``greenflash.`` key or event is decoded for linking only: ids,
    parent, name, kind, status and times, without attributes or span events. The pipeline reads
    nothing else from such a span, and never forwards it; skipping the attributes of the
    (many) ordinary spans is most of the decoding cost.
    """
    needles = None if linking_keys is None else _needles(linking_keys)
    spans: list[ReadableSpan] = []
    append = spans.append
    for resource_index, resource_spans in enumerate(request.resource_spans):
        resource = _resource(resource_spans.resource, resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            scope = _scope(scope_spans.scope, scope_spans.schema_url)
            for index, span in enumerate(scope_spans.spans):
                try:
                    append(_span(span, resource, scope, needles))
                except _BadIdError as error:
                    where = f"resourceSpans[{resource_index}] span {index}"
                    raise MalformedRequestError(f"{where}: {error}") from None
    return spans


@dataclass(frozen=True, slots=True)
class DecodedSpans:
    """A traces request as the gateway's intake takes it (see :func:`decode_spans`)."""

    count: int
    """Spans in the request."""
    items: list[ReadableSpan | LinkingSpan]
    """In request order: each span that may carry a business event in full, and what linking
    needs of the others that are trace roots or carry an id key (the rest need nothing)."""


def decode_spans(
    request: ExportTraceServiceRequest,
    *,
    linking_keys: Collection[str],
    llm_call_keys: Collection[str] = (),
) -> DecodedSpans:
    """Decode a traces request for the pipeline, doing per span only what the pipeline reads.

    ``linking_keys``: the pipeline's id keys and aliases. A span whose encoded form mentions
    ``greenflash.event`` is decoded in full (as :func:`spans_from_request` does); any other span
    carries no business event, so the link stage reads only its trace and span ids, whether it
    is a trace root, and its attributes under ``linking_keys``: such a span becomes a
    :class:`LinkingSpan` (attributes read only when the encoded form mentions one of the keys),
    or nothing when it is not a root and has none of them. Ids are checked for every span, with
    the same errors as :func:`spans_from_request`.

    ``llm_call_keys`` (the GenAI marker keys, given only with conversation capture on): a span
    whose encoded form mentions one of them may be an LLM call, and is decoded in full as well.
    Without them the search is exactly the one above.
    """
    keys = frozenset(linking_keys)
    needles = _needles(keys)
    call_needles = _distinct_needles(llm_call_keys) if llm_call_keys else ()
    call_prefixes = _by_prefix(call_needles) if call_needles else ()
    count = 0
    items: list[ReadableSpan | LinkingSpan] = []
    append = items.append
    for resource_index, resource_spans in enumerate(request.resource_spans):
        resource: Resource | None = None
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            if not spans:
                continue
            count += len(spans)
            scope: Scope | None = None
            marked = _marked_spans(scope_spans, len(spans), needles, call_prefixes)
            for index, span in enumerate(spans):
                trace_raw = span.trace_id
                span_raw = span.span_id
                parent_raw = span.parent_span_id
                if (
                    len(trace_raw) != 16
                    or trace_raw == _NO_TRACE
                    or len(span_raw) != 8
                    or span_raw == _NO_SPAN
                    or (parent_raw and len(parent_raw) != 8)
                ):
                    try:  # raises, with the same message as a full decode
                        _id(trace_raw, 16, "trace_id")
                        _id(span_raw, 8, "span_id")
                        _id(parent_raw, 8, "parent_span_id", optional=True)
                    except _BadIdError as error:
                        where = f"resourceSpans[{resource_index}] span {index}"
                        raise MalformedRequestError(f"{where}: {error}") from None
                if marked is None:  # one span at a time
                    encoded = span.SerializeToString()
                    full = _EVENT_NEEDLE in encoded
                    if call_needles and not full:
                        full = _mentions(encoded, call_needles)
                    mentions_ids = not full and _mentions(encoded, needles)
                else:
                    full = index in marked[0]
                    mentions_ids = index in marked[1]
                if full:
                    if resource is None:
                        resource = _resource(resource_spans.resource, resource_spans.schema_url)
                    if scope is None:
                        scope = _scope(scope_spans.scope, scope_spans.schema_url)
                    append(_span(span, resource, scope, None))
                    continue
                root = not parent_raw or parent_raw == _NO_SPAN
                ids = _ids(span.attributes, keys) if mentions_ids else _NO_IDS
                if root or ids:
                    trace_id = int.from_bytes(trace_raw, "big")
                    append(LinkingSpan(trace_id, int.from_bytes(span_raw, "big"), root, ids))
    return DecodedSpans(count, items)


def log_records_from_request(request: ExportLogsServiceRequest) -> list[ReadableLogRecord]:
    """Every log record of the request as the SDK's readable record, with resource and scope."""
    records: list[ReadableLogRecord] = []
    append = records.append
    for resource_index, resource_logs in enumerate(request.resource_logs):
        resource = _resource(resource_logs.resource, resource_logs.schema_url)
        for scope_logs in resource_logs.scope_logs:
            scope = _scope(scope_logs.scope, scope_logs.schema_url)
            for index, record in enumerate(scope_logs.log_records):
                try:
                    append(_log_record(record, resource, scope))
                except _BadIdError as error:
                    where = f"resourceLogs[{resource_index}] log record {index}"
                    raise MalformedRequestError(f"{where}: {error}") from None
    return records


# -- bodies --------------------------------------------------------------------------------------


def _parse(
    request: ExportTraceServiceRequest | ExportLogsServiceRequest, body: bytes, content_type: str
) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError:
            raise MalformedRequestError(
                f"the body is not a valid protobuf {type(request).__name__}"
            ) from None
        return
    if media_type == JSON:
        _parse_json(request, body)
        return
    raise MalformedRequestError(
        f"unsupported Content-Type {media_type or '(none)'!r}; allowed: {PROTOBUF} or {JSON}"
    )


def _parse_json(request: ExportTraceServiceRequest | ExportLogsServiceRequest, body: bytes) -> None:
    """OTLP JSON: protobuf JSON with hex trace and span ids (the JSON mapping wants base64).

    Nesting is bounded as protobuf's binary parser bounds it (:data:`MAX_NESTING` messages),
    so a JSON body is refused exactly where the same request in protobuf would be."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise MalformedRequestError(_TOO_DEEP) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedRequestError(f"the body is not JSON ({error})") from None
    if not isinstance(document, dict):
        raise MalformedRequestError("the body is not a JSON object")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise MalformedRequestError(f"the body is not OTLP JSON: {error}") from None
    except RecursionError:  # not reached: the nesting is checked above
        raise MalformedRequestError(_TOO_DEEP) from None


MAX_NESTING = 100
"""Messages nested in messages, at most: protobuf's own limit when it parses the binary
encoding (a deeper request is not a valid protobuf request)."""
_TOO_DEEP = f"the body nests objects more than {MAX_NESTING} deep (the protobuf limit)"


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """Rewrite every ``traceId``/``spanId``/``parentSpanId`` in place from hex to base64,
    and refuse objects nested more than :data:`MAX_NESTING` deep (each OTLP message is a
    JSON object). Iterative: no input can exhaust the stack here."""
    stack: list[tuple[Any, str, int]] = [(document, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_NESTING:
                raise MalformedRequestError(_TOO_DEEP)
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    node[key] = _hex_to_base64(value, f"{path}.{key}")
                elif isinstance(value, dict):
                    stack.append((value, f"{path}.{key}", depth + 1))
                elif isinstance(value, list):
                    stack.append((value, f"{path}.{key}", depth))
        else:  # a list: its objects are one level deeper than the object holding the list
            for index, item in enumerate(node):
                if isinstance(item, dict):
                    stack.append((item, f"{path}[{index}]", depth + 1))
                elif isinstance(item, list):
                    stack.append((item, f"{path}[{index}]", depth))


def _hex_to_base64(text: str, path: str) -> str:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise MalformedRequestError(
            f"{path.lstrip('.')} is not a hex string (OTLP JSON writes ids in hex)"
        ) from None
    return base64.b64encode(raw).decode("ascii")


# -- spans ---------------------------------------------------------------------------------------


def _span(
    span: Any, resource: Resource, scope: Scope, needles: tuple[bytes, ...] | None
) -> ReadableSpan:
    trace_id = _id(span.trace_id, 16, "trace_id")
    span_id = _id(span.span_id, 8, "span_id")
    flags = span.flags & 0xFF
    trace_flags = _TRACE_FLAGS[flags] if flags in _TRACE_FLAGS else TraceFlags(flags)
    trace_state = TraceState.from_header([span.trace_state]) if span.trace_state else None
    context = SpanContext(trace_id, span_id, False, trace_flags, trace_state)
    parent = None
    if span.parent_span_id:
        parent_id = _id(span.parent_span_id, 8, "parent_span_id", optional=True)
        if parent_id:
            parent = SpanContext(trace_id, parent_id, False, trace_flags, trace_state)
    start = span.start_time_unix_nano or None
    end = span.end_time_unix_nano or start or time.time_ns()
    status = _UNSET
    wire_status = span.status
    if wire_status.code or wire_status.message:
        code = _STATUS.get(wire_status.code, StatusCode.UNSET)
        message = wire_status.message or None
        status = Status(code, message) if code is StatusCode.ERROR else Status(code)
    attributes: dict[str, Any] = {}
    events: list[Event] = []
    if needles is None or _mentions(span.SerializeToString(), needles):
        attributes = _attributes(span.attributes)
        events = [
            Event(event.name, _attributes(event.attributes), event.time_unix_nano or end)
            for event in span.events
        ]
    return ReadableSpan(
        name=span.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=events,
        kind=_KINDS.get(span.kind, SpanKind.INTERNAL),
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


# -- log records ---------------------------------------------------------------------------------


def _log_record(record: Any, resource: Resource, scope: Scope) -> ReadableLogRecord:
    trace_id = _id(record.trace_id, 16, "trace_id", optional=True)
    span_id = _id(record.span_id, 8, "span_id", optional=True)
    flags = record.flags & 0xFF
    context = _EMPTY_CONTEXT
    if trace_id and span_id:
        span_context = SpanContext(trace_id, span_id, False, TraceFlags(flags))
        context = set_span_in_context(NonRecordingSpan(span_context), Context())
    severity = record.severity_number
    api_record = LogRecord(
        timestamp=record.time_unix_nano or None,
        context=context,
        severity_text=record.severity_text or None,
        severity_number=SeverityNumber(severity) if 0 <= severity <= 24 else None,
        body=_value(record.body) if record.HasField("body") else None,
        attributes=_attributes(record.attributes),
        event_name=record.event_name or None,
    )
    # As on the wire: absent is None, not the gateway's clock (the API's LogRecord fills it
    # in), because the insertId digests it and a replayed request must be the same event.
    api_record.observed_timestamp = record.observed_time_unix_nano or None  # type: ignore[assignment]
    if trace_id and not span_id:  # a record in a trace but outside any span
        api_record.trace_id = trace_id
        api_record.trace_flags = TraceFlags(flags)
    return ReadableLogRecord(log_record=api_record, resource=resource, instrumentation_scope=scope)


# -- shared pieces -------------------------------------------------------------------------------


def _needles(linking_keys: Collection[str]) -> tuple[bytes, ...]:
    """Byte strings of which an encoded span must contain one to matter beyond its ids: keys
    are encoded verbatim (UTF-8), so a span without them has no id or event attribute."""
    others = [key for key in linking_keys if not key.startswith(_GREENFLASH)]
    return (_GREENFLASH.encode(), *_distinct_needles(others))


def _distinct_needles(keys: Collection[str]) -> tuple[bytes, ...]:
    """``keys`` encoded, without those that contain another one (``enduser.id``, ``user.id``):
    a span that mentions the longer one mentions the shorter one too."""
    encoded = sorted({key.encode() for key in keys})
    return tuple(key for key in encoded if not any(o != key and o in key for o in encoded))


def _by_prefix(keys: tuple[bytes, ...]) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    """``keys`` grouped by their first dotted segment (``gen_ai.``): one search of the prefix,
    then a comparison per key where it is found, instead of one search per key."""
    groups: dict[bytes, list[bytes]] = {}
    for key in keys:
        head, dot, _ = key.partition(b".")
        groups.setdefault(head + dot, []).append(key)
    return tuple((prefix, tuple(group)) for prefix, group in groups.items())


def _marked_spans(
    scope_spans: ScopeSpans,
    count: int,
    needles: tuple[bytes, ...],
    call_prefixes: tuple[tuple[bytes, tuple[bytes, ...]], ...] = (),
) -> tuple[set[int], set[int]] | None:
    """The indexes of the spans of ``scope_spans`` to decode in full (their encoded form
    mentions ``greenflash.event``, or one of the keys of ``call_prefixes``: a prefix and the
    keys that start with it), and of the others that mention one of ``needles``; None when
    the encoding cannot be walked (then each span is looked at on its own).

    One encoding of the whole ``ScopeSpans`` is searched for each needle, and each position
    found is mapped to the span whose bytes hold it. Every mention inside a span's bytes is
    found; one outside (in the scope, or across two spans) can only mark a span that needed no
    marking, which then is decoded as a span that may matter (correct, only slower).
    """
    encoded = scope_spans.SerializeToString()
    starts = _field_starts(encoded, _SPANS_FIELD)
    if starts is None or len(starts) != count:
        return None
    full: set[int] = set()
    ids: set[int] = set()
    for needle in needles:
        at = encoded.find(needle)
        while at >= 0:
            index = bisect.bisect_right(starts, at) - 1
            if index >= 0:
                (full if encoded.startswith(_EVENT_NEEDLE, at) else ids).add(index)
            at = encoded.find(needle, at + 1)
    for prefix, keys in call_prefixes:  # none unless conversation capture is on
        at = encoded.find(prefix)
        while at >= 0:
            if encoded.startswith(keys, at):
                index = bisect.bisect_right(starts, at) - 1
                if index >= 0:
                    full.add(index)
            at = encoded.find(prefix, at + 1)
    ids -= full
    return full, ids


def _field_starts(encoded: bytes, tag: int) -> list[int] | None:
    """Where each length-delimited field with the (one-byte) ``tag`` starts in a protobuf
    message's encoding, in order; None for an encoding this walk does not handle (groups)."""
    starts: list[int] = []
    append = starts.append
    position = 0
    end = len(encoded)
    try:
        while position < end:
            key = encoded[position]
            if key == tag:  # the common case: a span of less than 16 KiB
                low = encoded[position + 1]
                if low < 0x80:
                    position += 2
                    append(position)
                    position += low
                    continue
                high = encoded[position + 2]
                if high < 0x80:
                    position += 3
                    append(position)
                    position += (low & 0x7F) | high << 7
                    continue
            key, position = _varint(encoded, position)
            wire_type = key & 7
            if wire_type == 0:
                _, position = _varint(encoded, position)
            elif wire_type == 2:
                length, position = _varint(encoded, position)
                if key == tag:
                    append(position)
                position += length
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            else:
                return None
    except IndexError:
        return None
    return starts if position == end else None


def _varint(encoded: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position``, and the position after it."""
    value = 0
    shift = 0
    while True:
        byte = encoded[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _mentions(raw: bytes, needles: tuple[bytes, ...]) -> bool:
    for needle in needles:  # noqa: SIM110 (a loop: no generator per span)
        if needle in raw:
            return True
    return False


def _id(raw: bytes, size: int, name: str, *, optional: bool = False) -> int:
    """An id as the SDK's int; empty (or all zero) is allowed only where ``optional``."""
    if len(raw) == size:
        value = int.from_bytes(raw, "big")
        if value or optional:
            return value
        raise _BadIdError(f"{name} is all zeros, which is not a valid id")
    if not raw and optional:
        return 0
    raise _BadIdError(f"{name} has {len(raw)} bytes; allowed: {size} bytes ({size * 2} hex digits)")


def _ids(pairs: Iterable[KeyValue], keys: frozenset[str]) -> dict[str, Any]:
    """The attributes under ``keys``, as :func:`_attributes` reads them (the last of repeated
    keys wins), in their order."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key = pair.key
        if key in keys:
            value = pair.value
            kind = value.WhichOneof("value")
            found[key] = getattr(value, kind) if kind in _SCALARS else _value(value)
    return found


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        value = pair.value
        kind = value.WhichOneof("value")
        if kind in _SCALARS:
            attributes[pair.key] = getattr(value, kind)
        else:
            attributes[pair.key] = _value(value)
    return attributes


def _value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value: arrays as tuples, key-value lists as dicts."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return {pair.key: _value(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind)


def _resource(message: ResourceMessage, schema_url: str) -> Resource:
    return Resource(_plain(_attributes(message.attributes)), schema_url or None)


def _scope(message: InstrumentationScope, schema_url: str) -> Scope:
    return Scope(
        message.name,
        message.version or None,
        schema_url or None,
        _plain(_attributes(message.attributes)) or None,
    )


def _plain(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Only the values the SDK's attribute types allow (resource and scope attributes are
    checked by the SDK, which would warn about each other one)."""
    return {key: value for key, value in attributes.items() if _is_plain(value)}


def _is_plain(value: object) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(isinstance(item, (str, bool, int, float)) for item in value)
    )
