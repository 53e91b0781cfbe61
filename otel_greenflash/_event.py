"""Value objects passed along the pipeline: a mapped event, a Messages or Ratings API request,
and an invalid attribute; and the one rule for text that leaves the process (JSON bodies, the
spool's SQLite columns)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

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


class Endpoint(str, Enum):
    """The API an item is posted to: ``{base_url}/<value>``. The value is also what the spool
    stores and the key of its counters in ``stats()``."""

    EVENTS = "events"
    MESSAGES = "messages"
    RATINGS = "ratings"

    def __str__(self) -> str:
        return self.value


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

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.EVENTS

    @property
    def key(self) -> str:
        """Its identity in the spool and the delivery ledger: the insertId itself."""
        return self.insert_id

    @property
    def origin(self) -> str:
        return self.span_name

    def __repr__(self) -> str:
        return f"BusinessEvent(span_name={self.span_name!r}, insert_id={self.loggable_insert_id!r})"


MESSAGES_KEY_PREFIX: Final = "messages:"
RATINGS_KEY_PREFIX: Final = "ratings:"
"""Keys of :class:`ApiRequest` items: a prefix, then 64 hex digits of a digest (messages) or 32
of a random UUID (ratings), so no insertId a person picks meets one by chance."""


@dataclass(frozen=True, slots=True, repr=False)
class ApiRequest:
    """One ``POST /messages`` or ``POST /ratings`` body, ready to send (the sibling of
    :class:`BusinessEvent` for the other two endpoints).

    ``key`` is its identity in the spool and the delivery ledger, never sent: for messages a
    digest of the body's ids (the API stores each ``externalMessageId`` of a conversation once,
    so the same request sent twice is stored once, and the spool keeps one row for it); for
    ratings a random key of our own (the API has none: two equal ratings are two ratings).
    Make them with :meth:`messages` and :meth:`rating`. ``repr`` shows no body (it holds
    conversation content and user feedback).
    """

    endpoint: Endpoint
    body: Mapping[str, object]
    key: str
    origin: str
    """What it came from (a span or log record name): logged and stored, kept clean text."""
    after: str | None = None
    """A rating of a message: the key of the Messages API request that carries that message,
    which the delivery loop settles first (in this process; not kept in the spool)."""

    def __post_init__(self) -> None:
        if self.endpoint is Endpoint.EVENTS:
            raise ValueError("an Events API body is a BusinessEvent")
        if self.endpoint is Endpoint.MESSAGES:
            messages_key(self.body)  # raises unless every message has its externalMessageId
        if not is_clean_text(self.origin):
            object.__setattr__(self, "origin", clean_text(self.origin))

    @classmethod
    def messages(cls, body: Mapping[str, object], origin: str) -> ApiRequest:
        """A ``POST /messages`` request keyed by its ids (see :func:`messages_key`); raises
        ValueError unless every message has an ``externalMessageId``."""
        return cls(Endpoint.MESSAGES, body, messages_key(body), origin)

    @classmethod
    def rating(
        cls, body: Mapping[str, object], origin: str, *, after: str | None = None
    ) -> ApiRequest:
        """A ``POST /ratings`` request under a new random key (``after``: see the field)."""
        key = RATINGS_KEY_PREFIX + uuid.uuid4().hex
        return cls(Endpoint.RATINGS, body, key, origin, after)

    @property
    def span_name(self) -> str:
        """The name of the span or record it came from (as :attr:`BusinessEvent.span_name`)."""
        return self.origin

    def __repr__(self) -> str:
        return f"ApiRequest(endpoint={self.endpoint.value!r}, origin={self.origin!r})"


DeliveryItem = BusinessEvent | ApiRequest
"""What the lane and deliver stages carry: one request body for one endpoint."""

_CONVERSATION_FIELDS = ("conversationId", "externalConversationId", "productId")


def messages_key(body: Mapping[str, object]) -> str:
    """A stable key for a Messages API body: a digest of its conversation target, its user and
    the ``externalMessageId`` of each message in order (what makes the request idempotent).
    Raises ValueError when a message has none: the API would not deduplicate such a request,
    so a retry could store it twice."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ValueError("a Messages API body needs a list of messages")
    ids = [m.get("externalMessageId") if isinstance(m, Mapping) else None for m in messages]
    if not all(isinstance(value, str) and value for value in ids):
        raise ValueError("every message of a Messages API body needs an externalMessageId")
    target = [body.get(name) for name in _CONVERSATION_FIELDS]
    identity = [1, target, body.get("externalUserId"), ids]
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return MESSAGES_KEY_PREFIX + digest


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
