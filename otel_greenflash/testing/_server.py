"""A local Greenflash API server on loopback: validates, records, deduplicates, injects faults.

It serves ``POST /events``, ``POST /messages`` and ``POST /ratings`` under ``/api/v1``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from ._contract import (
    MESSAGE_ROLES,
    validate_event_body,
    validate_messages_body,
    validate_rating_body,
)

DEFAULT_API_KEY = "gf-local-test-key"
"""The key the local server accepts unless told otherwise."""

ENDPOINTS = ("events", "messages", "ratings")
"""The endpoints the local server serves, as :meth:`EventsApiServer.inject` names them."""


@dataclass(frozen=True, slots=True)
class Fault:
    """What the server does instead of (or before) answering one request.

    ``status`` answers with that code (``retry_after``/``headers`` added); ``delay_seconds``
    sleeps first; ``drop`` closes the connection without any answer; ``lose_response``
    processes the request normally (the event is accepted) and then closes the connection
    instead of answering, as when a response is lost on the way back.
    """

    status: int | None = None
    delay_seconds: float = 0.0
    drop: bool = False
    lose_response: bool = False
    retry_after: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server saw and how it answered (status ``None``: connection dropped)."""

    method: str
    path: str
    status: int | None
    insert_id: str | None
    headers: Mapping[str, str]
    errors: tuple[str, ...] = ()
    at: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the request was handled."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message the server stored in a conversation (deduplicated re-sends are not stored)."""

    message_id: str
    """The server's id for it (``messageId`` in the answer)."""
    message_type: str
    """``messageType`` as sent, or the one its ``role`` stands for (``user_message``...)."""
    content: str
    external_message_id: str | None
    parent_message_id: str | None
    """The parent's server id: ``parentMessageId`` as sent, or the id of the message in this
    conversation whose ``externalMessageId`` is ``parentExternalMessageId`` (``None`` if the
    parent is not stored here)."""
    parent_external_message_id: str | None
    body: Mapping[str, Any]
    """The message object as sent."""


@dataclass(frozen=True, slots=True)
class StoredConversation:
    """A conversation as ``POST /messages`` built it: its stored messages in arrival order."""

    conversation_id: str
    product_id: str | None
    external_conversation_id: str | None
    external_user_id: str
    """From the request that created the conversation."""
    messages: tuple[StoredMessage, ...]

    def by_external_id(self, external_message_id: str) -> StoredMessage:
        """The stored message with this ``externalMessageId`` (``KeyError`` if none)."""
        for message in self.messages:
            if message.external_message_id == external_message_id:
                return message
        raise KeyError(external_message_id)


@dataclass(slots=True)
class _Conversation:
    conversation_id: str
    product_id: str | None
    external_conversation_id: str | None
    external_user_id: str
    messages: list[StoredMessage] = field(default_factory=list)
    by_external_id: dict[str, StoredMessage] = field(default_factory=dict)

    def snapshot(self) -> StoredConversation:
        return StoredConversation(
            self.conversation_id,
            self.product_id,
            self.external_conversation_id,
            self.external_user_id,
            tuple(self.messages),
        )


class EventsApiServer:
    """Real HTTP/1.1 on ``127.0.0.1`` (ephemeral port by default), shaped like the Greenflash API.

    Serves ``POST /events``, ``POST /messages`` and ``POST /ratings``, each checked against its
    contract (a violation gets a 422 naming the field). Use as a context manager or call
    :meth:`start`/:meth:`stop`. ``base_url`` is what to pass as
    ``base_url=``/``GREENFLASH_BASE_URL``.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_event: Callable[[Mapping[str, Any]], None] | None = None,
        latency_seconds: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.latency_seconds = latency_seconds
        """Added before every answer, to imitate a distant API."""
        self._on_event = on_event
        self._lock = threading.Condition()
        self._callback_lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._event_ids: dict[str, str] = {}
        self._requests: list[RecordedRequest] = []
        self._messages: list[dict[str, Any]] = []
        self._conversations: dict[str, _Conversation] = {}
        self._conversation_keys: dict[tuple[str | None, str], str] = {}
        self._stored_messages = 0
        self._deduplicated_messages = 0
        self._ratings: list[dict[str, Any]] = []
        self._faults: list[tuple[str | None, Fault]] = []
        self._duplicates = 0
        self._in_progress = 0
        self._peak = 0
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}/api/v1"

    def start(self) -> EventsApiServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="greenflash-local-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> EventsApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what happened -----------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Accepted events in arrival order, each once (duplicates by insertId excluded)."""
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Request bodies accepted on ``POST /messages``, one per request, re-sends included.

        The messages as stored (each once, per conversation) are in :meth:`conversations`.
        """
        with self._lock:
            return list(self._messages)

    def conversations(self) -> list[StoredConversation]:
        """Every conversation ``POST /messages`` created, in creation order, with its messages."""
        with self._lock:
            return [conversation.snapshot() for conversation in self._conversations.values()]

    def conversation(
        self, external_conversation_id: str, product_id: str | None = None
    ) -> StoredConversation:
        """The one conversation with this ``externalConversationId`` (and ``productId``, if given).

        Raises ``LookupError`` when there is none, or more than one (different products).
        """
        found = [
            conversation
            for conversation in self.conversations()
            if conversation.external_conversation_id == external_conversation_id
            and (product_id is None or conversation.product_id == product_id)
        ]
        if len(found) != 1:
            raise LookupError(
                f"{len(found)} conversations with externalConversationId "
                f"{external_conversation_id!r}"
                + (f" in product {product_id}" if product_id else "")
            )
        return found[0]

    @property
    def stored_message_count(self) -> int:
        """Messages stored across all conversations (each once)."""
        with self._lock:
            return self._stored_messages

    @property
    def deduplicated_messages(self) -> int:
        """Messages answered ``deduplicated``: their ``externalMessageId`` was already stored."""
        with self._lock:
            return self._deduplicated_messages

    @property
    def ratings(self) -> list[dict[str, Any]]:
        """Bodies accepted on ``POST /ratings`` in arrival order: every one, as the API keeps
        every rating (there is no deduplication: a retried rating is stored twice)."""
        with self._lock:
            return list(self._ratings)

    @property
    def duplicates(self) -> int:
        """Requests whose insertId had already been accepted."""
        with self._lock:
            return self._duplicates

    def wait_for_events(self, count: int, timeout_seconds: float = 10.0) -> bool:
        """Block until at least ``count`` events were accepted; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            while len(self._events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def wait_for_messages(self, count: int, timeout_seconds: float = 10.0) -> bool:
        """Block until at least ``count`` messages are stored (all conversations); False on
        timeout."""
        return self._wait(lambda: self._stored_messages >= count, timeout_seconds)

    def wait_for_ratings(self, count: int, timeout_seconds: float = 10.0) -> bool:
        """Block until at least ``count`` ratings were accepted; False on timeout."""
        return self._wait(lambda: len(self._ratings) >= count, timeout_seconds)

    def _wait(self, done: Callable[[], bool], timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def reset(self) -> None:
        """Forget events, messages, conversations, ratings, requests and pending faults."""
        with self._lock:
            self._events.clear()
            self._event_ids.clear()
            self._requests.clear()
            self._messages.clear()
            self._conversations.clear()
            self._conversation_keys.clear()
            self._stored_messages = 0
            self._deduplicated_messages = 0
            self._ratings.clear()
            self._faults.clear()
            self._duplicates = 0

    # -- fault injection ---------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1, *, endpoint: str | None = None) -> None:
        """Apply ``fault`` to the next ``times`` requests (after faults already queued).

        ``endpoint`` (``"events"``, ``"messages"`` or ``"ratings"``) keeps the fault for requests
        to that endpoint; requests to the others pass it by. Without it, any request takes it.
        """
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
        with self._lock:
            self._faults.extend([(endpoint, fault)] * times)

    # -- request handling (called on server threads) -----------------------------------------

    @property
    def peak_concurrency(self) -> int:
        """Most requests handled at the same time so far."""
        with self._lock:
            return self._peak

    def _enter_request(self) -> None:
        with self._lock:
            self._in_progress += 1
            self._peak = max(self._peak, self._in_progress)

    def _leave_request(self) -> None:
        with self._lock:
            self._in_progress -= 1

    def _next_fault(self, endpoint: str | None) -> Fault | None:
        with self._lock:
            for index, (target, fault) in enumerate(self._faults):
                if target is None or target == endpoint:
                    del self._faults[index]
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _accept_event(self, body: dict[str, Any]) -> tuple[str, bool]:
        insert_id = body.get("insertId")
        with self._lock:
            if isinstance(insert_id, str) and insert_id in self._event_ids:
                self._duplicates += 1
                return self._event_ids[insert_id], False
            event_id = str(uuid.uuid4())
            if isinstance(insert_id, str):
                self._event_ids[insert_id] = event_id
            self._events.append(body)
            self._lock.notify_all()
        return event_id, True

    def _accept_messages(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a valid ``POST /messages`` body; return the answer."""
        answers: list[dict[str, Any]] = []
        with self._lock:
            self._messages.append(body)
            conversation = self._conversation_for(body)
            for message in body["messages"]:
                external_id = message.get("externalMessageId")
                stored = conversation.by_external_id.get(external_id) if external_id else None
                if stored is not None:
                    self._deduplicated_messages += 1
                    status = "deduplicated"
                else:
                    stored = _stored_message(message, conversation)
                    conversation.messages.append(stored)
                    if external_id:
                        conversation.by_external_id[external_id] = stored
                    self._stored_messages += 1
                    status = "created"
                answers.append(
                    {
                        "messageId": stored.message_id,
                        "messageType": stored.message_type,
                        "status": status,
                        "externalMessageId": external_id,
                    }
                )
            self._lock.notify_all()
        return {
            "success": True,
            "conversationId": conversation.conversation_id,
            "messages": answers,
            "systemPromptComponentIds": [],
            "systemPromptPromptId": str(uuid.uuid4()),
        }

    def _conversation_for(self, body: Mapping[str, Any]) -> _Conversation:
        """The conversation a body names (``conversationId`` first), created when new; call
        with the lock held.

        A (``productId``, ``externalConversationId``) pair always maps to the same conversation,
        whose id is derived from the pair (the same on every server); a body with only
        ``productId`` starts a new conversation every time.
        """
        product_id = body.get("productId")
        external_id = body.get("externalConversationId")
        key = (product_id, external_id) if external_id is not None else None
        conversation_id = body.get("conversationId")
        if conversation_id is None and key is not None:
            conversation_id = self._conversation_keys.get(key)
        if conversation_id is None:
            conversation_id = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"greenflash-local:{product_id}:{external_id}")
                if key is not None
                else uuid.uuid4()
            )
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            conversation = _Conversation(
                conversation_id, product_id, external_id, body["externalUserId"]
            )
            self._conversations[conversation_id] = conversation
        if key is not None:
            self._conversation_keys.setdefault(key, conversation_id)
        return conversation

    def _accept_rating(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._ratings.append(body)
            self._lock.notify_all()

    def _event_accepted(self, body: Mapping[str, Any]) -> None:
        if self._on_event is not None:
            with self._callback_lock:  # one call at a time, whatever the server thread
                self._on_event(body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: EventsApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing kept-alive connections are normal here; stay quiet about them."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: the server records requests instead

    def do_POST(self) -> None:
        owner = self.server.owner
        owner._enter_request()
        try:
            self._handle_post(owner)
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)
        finally:
            owner._leave_request()

    def do_GET(self) -> None:
        """``GET .../_local/stats``: counts, for benchmarks driving a server in another process."""
        owner = self.server.owner
        self._lose_response = False
        if not self.path.rstrip("/").endswith("/_local/stats"):
            self._answer(404, {"success": False, "error": "not found"})
            return
        with owner._lock:
            counts = {
                "events": len(owner._events),
                "duplicates": owner._duplicates,
                "requests": len(owner._requests),
                "messages": owner._stored_messages,
                "deduplicated_messages": owner._deduplicated_messages,
                "ratings": len(owner._ratings),
            }
        self._answer(200, counts)

    def _handle_post(self, owner: EventsApiServer) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        headers.pop("authorization", None)  # never keep the key around
        if owner.latency_seconds:
            time.sleep(owner.latency_seconds)
        self._lose_response = False
        path = self.path.split("?", 1)[0].rstrip("/")
        endpoint = next((name for name in ENDPOINTS if path.endswith("/v1/" + name)), None)
        fault = owner._next_fault(endpoint)
        if fault is not None:
            if fault.delay_seconds:
                time.sleep(fault.delay_seconds)
            insert_id = _insert_id_of(raw)
            if fault.drop:
                owner._record(RecordedRequest("POST", self.path, None, insert_id, headers))
                self._hang_up()
                return
            if fault.status is not None:
                extra = dict(fault.headers)
                if fault.retry_after is not None:
                    extra["Retry-After"] = fault.retry_after
                owner._record(RecordedRequest("POST", self.path, fault.status, insert_id, headers))
                self._answer(fault.status, {"success": False, "error": "injected fault"}, extra)
                return
            self._lose_response = fault.lose_response

        if self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            owner._record(RecordedRequest("POST", self.path, 401, None, headers))
            self._answer(401, {"success": False, "error": "invalid API key"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            owner._record(RecordedRequest("POST", self.path, 400, None, headers, ("bad JSON",)))
            self._answer(400, {"success": False, "error": "body is not JSON"})
            return

        if endpoint == "events":
            self._handle_event(owner, body, headers)
        elif endpoint == "messages":
            if self._valid(owner, validate_messages_body(body), headers):
                answer = owner._accept_messages(body)
                owner._record(RecordedRequest("POST", self.path, 200, None, headers))
                self._answer(200, answer)
        elif endpoint == "ratings":
            if self._valid(owner, validate_rating_body(body), headers):
                owner._accept_rating(body)
                owner._record(RecordedRequest("POST", self.path, 200, None, headers))
                self._answer(200, {"success": True})
        else:
            owner._record(RecordedRequest("POST", self.path, 404, None, headers))
            self._answer(404, {"success": False, "error": "not found"})

    def _valid(
        self,
        owner: EventsApiServer,
        errors: list[str],
        headers: Mapping[str, str],
        insert_id: str | None = None,
    ) -> bool:
        """Answer 422 with every contract violation (and the Content-Type's); False if any."""
        if not headers.get("content-type", "").startswith("application/json"):
            errors.append("Content-Type must be application/json")
        if not errors:
            return True
        owner._record(RecordedRequest("POST", self.path, 422, insert_id, headers, tuple(errors)))
        self._answer(422, {"success": False, "error": "; ".join(errors)})
        return False

    def _handle_event(self, owner: EventsApiServer, body: Any, headers: Mapping[str, str]) -> None:
        insert_id = body.get("insertId") if isinstance(body, dict) else None
        insert_id = insert_id if isinstance(insert_id, str) else None
        if not self._valid(owner, validate_event_body(body), headers, insert_id):
            return
        event_id, is_new = owner._accept_event(body)
        owner._record(RecordedRequest("POST", self.path, 200, insert_id, headers))
        if is_new:
            owner._event_accepted(body)
        self._answer(200, {"success": True, "eventId": event_id})

    def _hang_up(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        if self._lose_response:
            self._hang_up()
            return
        data = json.dumps(payload).encode()
        self.send_response(status, HTTPStatus(status).phrase if status in _KNOWN else "")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


_KNOWN = {status.value for status in HTTPStatus}


def _insert_id_of(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    insert_id = body.get("insertId") if isinstance(body, dict) else None
    return insert_id if isinstance(insert_id, str) else None


def _stored_message(message: Mapping[str, Any], conversation: _Conversation) -> StoredMessage:
    """A valid message as the conversation stores it, its parent resolved where possible."""
    role = message.get("role")
    message_type = f"{role}_message" if role in MESSAGE_ROLES else str(message["messageType"])
    parent_id: str | None = message.get("parentMessageId")
    parent_external_id: str | None = message.get("parentExternalMessageId")
    if parent_id is None and parent_external_id is not None:
        parent = conversation.by_external_id.get(parent_external_id)
        parent_id = parent.message_id if parent is not None else None
    return StoredMessage(
        message_id=str(uuid.uuid4()),
        message_type=message_type,
        content=message["content"],
        external_message_id=message.get("externalMessageId"),
        parent_message_id=parent_id,
        parent_external_message_id=parent_external_id,
        body=message,
    )
