"""A local Events API server on loopback: validates, records, deduplicates, injects faults."""

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

from ._contract import validate_event_body

DEFAULT_API_KEY = "gf-local-test-key"
"""The key the local server accepts unless told otherwise."""


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


class EventsApiServer:
    """Real HTTP/1.1 on ``127.0.0.1`` (ephemeral port by default), shaped like the Events API.

    Use as a context manager or call :meth:`start`/:meth:`stop`. ``base_url`` is what to pass
    as ``base_url=``/``GREENFLASH_BASE_URL``.
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
        self._faults: list[Fault] = []
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
        """Bodies accepted on ``POST /messages``."""
        with self._lock:
            return list(self._messages)

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

    def reset(self) -> None:
        """Forget events, requests and pending faults."""
        with self._lock:
            self._events.clear()
            self._event_ids.clear()
            self._requests.clear()
            self._messages.clear()
            self._faults.clear()
            self._duplicates = 0

    # -- fault injection ---------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (after faults already queued)."""
        with self._lock:
            self._faults.extend([fault] * times)

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

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

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

    def _accept_message(self, body: dict[str, Any]) -> str:
        with self._lock:
            self._messages.append(body)
        conversation = body.get("conversationId")
        if isinstance(conversation, str):
            return conversation
        external = body.get("externalConversationId")
        if isinstance(external, str):
            return str(uuid.uuid5(uuid.NAMESPACE_URL, "greenflash-local:" + external))
        return str(uuid.uuid4())

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
        fault = owner._next_fault()
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

        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/v1/events"):
            self._handle_event(owner, body, headers)
        elif path.endswith("/v1/messages"):
            conversation_id = owner._accept_message(body if isinstance(body, dict) else {})
            owner._record(RecordedRequest("POST", self.path, 200, None, headers))
            self._answer(200, _message_response(conversation_id, body))
        else:
            owner._record(RecordedRequest("POST", self.path, 404, None, headers))
            self._answer(404, {"success": False, "error": "not found"})

    def _handle_event(self, owner: EventsApiServer, body: Any, headers: Mapping[str, str]) -> None:
        errors = validate_event_body(body)
        if not headers.get("content-type", "").startswith("application/json"):
            errors.append("Content-Type must be application/json")
        insert_id = body.get("insertId") if isinstance(body, dict) else None
        insert_id = insert_id if isinstance(insert_id, str) else None
        if errors:
            owner._record(
                RecordedRequest("POST", self.path, 422, insert_id, headers, tuple(errors))
            )
            self._answer(422, {"success": False, "error": "; ".join(errors)})
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


def _message_response(conversation_id: str, body: Any) -> dict[str, Any]:
    messages = body.get("messages") if isinstance(body, dict) else None
    count = len(messages) if isinstance(messages, list) else 0
    return {
        "success": True,
        "conversationId": conversation_id,
        "messages": [
            {"messageId": str(uuid.uuid4()), "messageType": "user_message", "status": "created"}
            for _ in range(count)
        ],
        "systemPromptComponentIds": [],
        "systemPromptPromptId": str(uuid.uuid4()),
    }
