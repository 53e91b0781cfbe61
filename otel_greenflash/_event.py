"""Value objects passed along the pipeline: a mapped event and an invalid attribute; and the
one rule for text that leaves the process (JSON bodies, the spool's SQLite columns)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

REPLACEMENT_CHARACTER = "\ufffd"

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def is_clean_text(text: str) -> bool:
    """True when ``text`` is valid Unicode text without NUL: it encodes as UTF-8 and no
    server has to drop or reject any of its characters. Python strings (and so span names
    and attributes the OpenTelemetry SDK accepts) may hold lone surrogates, which UTF-8
    cannot encode, and NUL, which most databases cannot store."""
    if text.isascii():  # O(1): the common case costs one memchr
        return "\x00" not in text
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """``text`` unchanged when it is clean; otherwise a surrogate pair is joined into the
    character it encodes (as a JSON parser reading the escaped pair would), and every lone
    surrogate and every NUL becomes U+FFFD, the replacement character (as ``errors="replace"``
    does when decoding bytes that are not UTF-8)."""
    if is_clean_text(text):
        return text
    return _NOT_TEXT.sub(REPLACEMENT_CHARACTER, join_surrogate_pairs(text))


def join_surrogate_pairs(text: str) -> str:
    """``text`` with each high+low surrogate pair replaced by the one character it encodes;
    lone surrogates are left as they are."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


@dataclass(frozen=True, slots=True, repr=False)
class BusinessEvent:
    """One Events API request body, ready to send.

    ``body`` holds application data, so ``repr`` shows only where the event came from.
    ``span_name`` is kept as clean text (see :func:`clean_text`): it is logged and stored.
    """

    body: Mapping[str, object]
    insert_id: str
    span_name: str

    def __post_init__(self) -> None:
        if not is_clean_text(self.span_name):
            object.__setattr__(self, "span_name", clean_text(self.span_name))

    @property
    def event_type(self) -> str:
        return str(self.body["eventType"])

    @property
    def loggable_insert_id(self) -> str:
        """The insertId when this library generated it (trace and span ids only); a user's own
        ``greenflash.event.insert_id`` may carry business data, so it is not shown."""
        generated = self.insert_id.startswith(("otel-", "track-", "cli-"))
        return self.insert_id if generated else "<custom>"

    def __repr__(self) -> str:
        return f"BusinessEvent(span_name={self.span_name!r}, insert_id={self.loggable_insert_id!r})"


@dataclass(frozen=True, slots=True)
class InvalidAttribute:
    """Why one business event could not be built. Never holds the offending value."""

    span_name: str
    attribute: str
    problem: str
    allowed: str
    source: str = "span"
    """What carried the event: ``span`` (span attributes, span events, ``track()``) or
    ``log record`` (then ``span_name`` is the record's event name)."""

    def __post_init__(self) -> None:
        for name in ("span_name", "attribute"):
            text = getattr(self, name)
            if not is_clean_text(text):
                object.__setattr__(self, name, clean_text(text))

    def describe(self) -> str:
        return (
            f"business event on {self.source} {self.span_name!r} not sent: attribute "
            f"{self.attribute!r} {self.problem}; allowed: {self.allowed}"
        )
