"""A span processor and a log record processor (one pipeline) across ``os.fork``.

The parent emits log-record events before and after forking children; each child emits its
own and leaves with ``os._exit``. Prints one JSON line: what the receiver got, and exit codes.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashLogRecordProcessor, GreenflashSpanProcessor
from otel_greenflash.testing import EventsApiServer

PRODUCT_ID = "123e4567-e89b-12d3-a456-426614174000"


def main() -> None:
    with EventsApiServer() as server:
        settings: dict[str, Any] = {
            "api_key": server.api_key,
            "base_url": server.base_url,
            "product_id": PRODUCT_ID,
            "schedule_delay_seconds": 5.0,  # everything is still held at each fork
            "send_delay_seconds": 5.0,  # (a queued record no longer wakes the worker at once)
        }
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        span_processor = GreenflashSpanProcessor(**settings)
        tracer_provider.add_span_processor(span_processor)
        logger_provider = LoggerProvider(shutdown_on_exit=False)
        logger_provider.add_log_record_processor(GreenflashLogRecordProcessor(**settings))
        tracer = tracer_provider.get_tracer("app")
        logger = logger_provider.get_logger("app")

        def emit(label: str) -> None:
            with tracer.start_as_current_span("request") as root:
                with tracer.start_as_current_span("work"):
                    logger.emit(
                        event_name="greenflash.event",
                        attributes={"greenflash.event.type": "t", "greenflash.event.value": label},
                    )
                root.set_attribute("greenflash.conversation.external_id", f"chat-{label}")

        codes = []
        expected = []
        for child in range(3):
            emit(f"p{child}")
            expected.append(f"p{child}")
            pid = os.fork()
            if pid == 0:
                try:
                    emit(f"c{child}")
                finally:
                    os._exit(0)
            expected.append(f"c{child}")
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        flushed = span_processor.force_flush(20_000)
        events = server.events
        values = Counter(str(event["value"]) for event in events)
        linked = all(
            event.get("externalConversationId") == f"chat-{event['value']}" for event in events
        )
        print(
            json.dumps(
                {
                    "codes": codes,
                    "flushed": flushed,
                    "values": dict(values),
                    "expected": expected,
                    "duplicates": server.duplicates,
                    "linked": linked,
                    "stats": span_processor.stats(),
                }
            )
        )
        tracer_provider.shutdown()
        logger_provider.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
