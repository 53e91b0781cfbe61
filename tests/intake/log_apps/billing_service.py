"""Service B of the two-service tests: a real HTTP server that emits business events as
OpenTelemetry log records inside the trace it receives over W3C ``traceparent``/``baggage``.

``python billing_service.py processor``: ``otel_greenflash.configure()`` on SDK providers the
service set itself (a span processor and a log record processor sharing one pipeline).
``python billing_service.py exporter``: a ``GreenflashSpanProcessor`` and a
``BatchLogRecordProcessor(GreenflashLogRecordExporter())`` (the SDK clears each record's
context before the exporter sees it).

Settings come from ``GREENFLASH_*``. Prints ``port <n>`` once listening; ``POST /quit`` stops
the server, shuts the providers down and prints the pipeline's stats as one JSON line.

Endpoints (``POST``; the event's value is the ``X-Value`` header):

* ``/api``: the logs API, in a child span of the server span;
* ``/logging``: stdlib ``logging`` through the SDK's ``LoggingHandler`` with ``extra=``;
* ``/late``: like ``/api``, then the server span (the local root) learns the conversation
  id from ``X-Conversation-Id`` after the record was emitted;
* ``/no-span``: the logs API in the extracted context, with no local span at all.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import _logs, propagate, trace
from opentelemetry import context as context_api
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

import otel_greenflash

MODE = sys.argv[1]

tracer_provider = TracerProvider()
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider()
_logs.set_logger_provider(logger_provider)

intake: otel_greenflash.GreenflashSpanProcessor | otel_greenflash.GreenflashLogRecordExporter
if MODE == "processor":
    configured = otel_greenflash.configure()
    assert configured is not None
    intake = configured
elif MODE == "exporter":
    tracer_provider.add_span_processor(otel_greenflash.GreenflashSpanProcessor())
    intake = otel_greenflash.GreenflashLogRecordExporter()
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(intake, schedule_delay_millis=50)
    )
else:
    raise SystemExit(f"unknown mode {MODE!r}")

tracer = trace.get_tracer("billing")
events = _logs.get_logger("billing")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's LoggingHandler is deprecated
    handler = LoggingHandler(logger_provider=logger_provider)
log = logging.getLogger("billing")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False


def event(value: str) -> dict[str, str]:
    return {
        "greenflash.event.type": "upgrade_purchased",
        "greenflash.event.value": value,
        "greenflash.event.value_type": "currency",
    }


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/quit":
            self.answer(200)
            threading.Thread(target=self.server.shutdown).start()
            return
        value = self.headers.get("X-Value", "0")
        incoming = propagate.extract({name.lower(): v for name, v in self.headers.items()})
        token = context_api.attach(incoming)
        try:
            if self.path == "/no-span":
                events.emit(event_name="greenflash.event", attributes=event(value))
            else:
                with tracer.start_as_current_span(
                    "POST " + self.path, kind=trace.SpanKind.SERVER
                ) as server_span:
                    with tracer.start_as_current_span("charge"):
                        if self.path == "/logging":
                            log.info("upgrade purchased", extra=event(value))
                        else:
                            events.emit(event_name="greenflash.event", attributes=event(value))
                    if self.path == "/late":
                        server_span.set_attribute(
                            "greenflash.conversation.id", self.headers["X-Conversation-Id"]
                        )
        finally:
            context_api.detach(token)
        self.answer(204)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever(poll_interval=0.05)
server.server_close()
tracer_provider.shutdown()
logger_provider.shutdown()
print(json.dumps(intake.stats()), flush=True)
