"""OTLP/HTTP request bodies inflated in bounded steps: ``gzip`` (or ``x-gzip``) and ``deflate``.

The gateway inflates every body itself (aiohttp's own inflation is off: it ran on the event
loop and kept all it inflated until the size check). :func:`inflate` asks zlib for at most
:data:`CHUNK_BYTES` at a time and gives up as soon as the total passes the limit, so a body
inflating to gigabytes costs the limit plus one chunk, never more. It is pure: the gateway
runs it off the event loop, on one thread of its own, one body at a time.

``deflate`` is accepted both zlib-wrapped (RFC 1950: what the OpenTelemetry SDKs and the
Collector send) and raw (RFC 1951: what some HTTP clients send), and ``zlib`` as ``deflate``
(the Collector's ``compression: zlib``); ``gzip`` may hold several members, as RFC 1952
allows. ``zstd``, ``br``, anything else, and stacked codings (``gzip, gzip``) are refused
before the body is read.
"""

from __future__ import annotations

import zlib

from ._decode import MalformedRequestError, RequestTooLargeError

__all__ = [
    "CHUNK_BYTES",
    "DEFLATE",
    "GZIP",
    "IDENTITY",
    "UnsupportedEncodingError",
    "content_coding",
    "inflate",
]

IDENTITY = ""
GZIP = "gzip"
DEFLATE = "deflate"
CHUNK_BYTES = 1024 * 1024
"""The most zlib is asked to inflate in one step."""
_INPUT_BYTES = 64 * 1024
_CODINGS = {
    "": IDENTITY,
    "identity": IDENTITY,
    "gzip": GZIP,
    "x-gzip": GZIP,
    "deflate": DEFLATE,
    "zlib": DEFLATE,  # what the Collector sends for `compression: zlib`
}
_ALLOWED = "gzip, x-gzip, deflate, zlib or none"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


class UnsupportedEncodingError(ValueError):
    """A ``Content-Encoding`` the gateway does not inflate (answer 415); the message says so."""


def content_coding(header: str) -> str:
    """The coding named by a ``Content-Encoding`` header: :data:`IDENTITY`, :data:`GZIP` or
    :data:`DEFLATE`; :class:`UnsupportedEncodingError` for any other or for several."""
    name = header.strip().lower()
    coding = _CODINGS.get(name)
    if coding is None:
        raise UnsupportedEncodingError(
            f"unsupported Content-Encoding {name!r}; allowed: {_ALLOWED}"
        )
    return coding


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` decoded from ``coding`` (an empty body stays empty), at most ``limit`` bytes:
    :class:`RequestTooLargeError` above it (found out having inflated ``limit`` +
    :data:`CHUNK_BYTES` at most), :class:`MalformedRequestError` when it is not ``coding``."""
    if coding == IDENTITY or not body:
        return body
    if coding == GZIP:
        return _inflate(body, _GZIP_WBITS, "gzip", limit)
    if coding == DEFLATE:
        wbits = _ZLIB_WBITS if _is_zlib_header(body) else _RAW_WBITS
        return _inflate(body, wbits, "deflate", limit)
    raise UnsupportedEncodingError(f"unsupported Content-Encoding {coding!r}; allowed: {_ALLOWED}")


def _inflate(body: bytes, wbits: int, name: str, limit: int) -> bytes:
    parts: list[bytes] = []
    try:
        _inflate_into(parts, body, wbits, name, limit)
    except BaseException:
        parts.clear()  # the error's traceback keeps this frame: it must not keep what was inflated
        raise
    return parts[0] if len(parts) == 1 else b"".join(parts)  # a moment at twice the size


def _inflate_into(parts: list[bytes], body: bytes, wbits: int, name: str, limit: int) -> None:
    """Inflate ``body`` into ``parts``, handing zlib :data:`_INPUT_BYTES` at a time (so what it
    has not consumed yet, which it copies at every step, stays small)."""
    size, position, end = 0, 0, len(body)
    whole = memoryview(body)
    inflater = zlib.decompressobj(wbits)
    pending: bytes | memoryview = b""
    try:
        while True:
            if not pending and position < end:
                pending = whole[position : position + _INPUT_BYTES]
                position += len(pending)
            piece = inflater.decompress(pending, CHUNK_BYTES)
            size += len(piece)
            if size > limit:
                raise RequestTooLargeError(limit)
            if piece:
                parts.append(piece)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                pending = inflater.unused_data
                if not pending and position == end:
                    return
                if wbits != _GZIP_WBITS:
                    raise MalformedRequestError(f"the body has data after its {name} stream")
                inflater = zlib.decompressobj(wbits)  # the next gzip member
            elif not pending and position == end and len(piece) < CHUNK_BYTES:
                raise MalformedRequestError(f"the body is not valid {name} (it ends too early)")
    except zlib.error:
        raise MalformedRequestError(f"the body is not valid {name}") from None


def _is_zlib_header(body: bytes) -> bool:
    """True when ``body`` starts with a zlib header (RFC 1950: deflate, a window of at most
    32 KiB, check bits); a raw deflate stream otherwise."""
    if len(body) < 2:
        return False
    method, flags = body[0], body[1]
    return method & 0x0F == 8 and method >> 4 <= 7 and (method << 8 | flags) % 31 == 0
