"""``google.rpc.Status`` and ``RetryInfo`` on the wire, encoded by hand.

OTLP error answers carry a ``google.rpc.Status`` (HTTP body, protobuf or JSON); gRPC retry
hints carry a ``RetryInfo`` (the Collector reads it from ``grpc-status-details-bin``, the Python
SDK's exporter from ``google.rpc.retryinfo-bin``). Three tiny messages do not justify a
dependency on ``googleapis-common-protos``.
"""

from __future__ import annotations

import json
import math

RETRY_INFO_TYPE_URL = "type.googleapis.com/google.rpc.RetryInfo"


def status_protobuf(code: int, message: str, details: tuple[bytes, ...] = ()) -> bytes:
    """``google.rpc.Status{code, message, details}``; each detail an encoded ``Any``."""
    out = bytearray()
    if code:
        out += _tag(1, 0) + _varint(code)
    if message:
        out += _length_delimited(2, message.encode("utf-8"))
    for detail in details:
        out += _length_delimited(3, detail)
    return bytes(out)


def status_json(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode("utf-8")


def retry_info(seconds: float) -> bytes:
    """``google.rpc.RetryInfo{retry_delay: Duration}``."""
    whole = math.floor(max(seconds, 0.0))
    nanos = round((max(seconds, 0.0) - whole) * 1e9)
    duration = bytearray()
    if whole:
        duration += _tag(1, 0) + _varint(whole)
    if nanos:
        duration += _tag(2, 0) + _varint(nanos)
    return _length_delimited(1, bytes(duration))


def any_message(type_url: str, value: bytes) -> bytes:
    """``google.protobuf.Any{type_url, value}``."""
    return _length_delimited(1, type_url.encode("ascii")) + _length_delimited(2, value)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
