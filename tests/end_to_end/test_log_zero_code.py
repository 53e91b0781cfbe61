"""Log-based events with zero code: ``OTEL_LOGS_EXPORTER=greenflash`` under
``opentelemetry-instrument``, the SDK's logging auto-instrumentation, and ``configure()`` on
an SDK ``LoggerProvider``; each run in a real subprocess, the way users run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otel_greenflash.testing import EventsApiServer
from tests.support.common import CONVERSATION_ID, PRODUCT_ID
from tests.support.processes import clean_env, command, run_script

pytest.importorskip("opentelemetry.distro")

# Application code that knows nothing of this library: only the OpenTelemetry API.
LOGS_API_APP = """
from opentelemetry import _logs, trace

tracer = trace.get_tracer("shop")
events = _logs.get_logger("shop")
with tracer.start_as_current_span("chat") as root:
    with tracer.start_as_current_span("billing.upgrade"):
        events.emit(
            event_name="greenflash.event",
            body="upgrade purchased",
            attributes={
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": 149,
                "greenflash.event.value_type": "currency",
            },
        )
        events.emit(body="an ordinary log line", attributes={"http.route": "/upgrade"})
    # learned at the end of the chat, after the record was emitted:
    root.set_attribute("greenflash.conversation.id", "CONVERSATION_ID")
print("app done")
""".replace("CONVERSATION_ID", CONVERSATION_ID)

# Only the standard library's logging (plus a span around it).
LOGGING_APP = """
import logging
from opentelemetry import trace

log = logging.getLogger("shop.billing")
log.setLevel(logging.INFO)
tracer = trace.get_tracer("shop")
with tracer.start_as_current_span("chat") as root:
    root.set_attribute("session.id", "chat-77")
    with tracer.start_as_current_span("billing.upgrade"):
        log.info("checkout page shown")
        log.info(
            "upgrade purchased",
            extra={
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": "149.00",
                "greenflash.event.properties.plan": "pro",
            },
        )
print("app done")
"""


def instrument_env(server: EventsApiServer, **extra: str) -> dict[str, str]:
    return clean_env(
        **{
            "GREENFLASH_API_KEY": server.api_key,
            "GREENFLASH_BASE_URL": server.base_url,
            "GREENFLASH_PRODUCT_ID": PRODUCT_ID,
            "GREENFLASH_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "shop",
            **extra,
        }
    )


def instrument(server: EventsApiServer, tmp_path: Path, app: str, **env: str) -> str:
    result = run_script(
        tmp_path, app, instrument_env(server, **env), command("opentelemetry-instrument")
    )
    assert result.returncode == 0, result.stderr
    assert "app done" in result.stdout
    return result.stderr


def test_logs_exporter_named_in_otel_logs_exporter_links_through_the_traces_exporter(
    server: EventsApiServer, tmp_path: Path
) -> None:
    """Both exporters named: the log record waits for its trace's root (reported by the span
    exporter, which shares the pipeline) and is delivered at exit without explicit shutdown."""
    instrument(
        server,
        tmp_path,
        LOGS_API_APP,
        OTEL_TRACES_EXPORTER="greenflash",
        OTEL_LOGS_EXPORTER="console,greenflash",
    )
    [event] = server.events
    assert event["eventType"] == "upgrade_purchased"
    assert event["value"] == "149.00"
    assert event["conversationId"] == CONVERSATION_ID  # set on the root after the record
    assert event["insertId"].startswith("otel-log-")
    assert len(server.requests) == 1  # the ordinary log line and the spans were not sent


def test_logs_exporter_alone_sends_the_record_with_its_own_ids(
    server: EventsApiServer, tmp_path: Path
) -> None:
    app = LOGS_API_APP.replace(
        '"greenflash.event.value": 149,', '"greenflash.event.value": 149, "user.id": "u-1",'
    )
    instrument(server, tmp_path, app, OTEL_LOGS_EXPORTER="greenflash")
    [event] = server.events
    assert event["externalUserId"] == "u-1"
    assert "conversationId" not in event  # no span intake: nothing reports the root's end


def test_python_logging_auto_instrumentation_feeds_the_logs_exporter(
    server: EventsApiServer, tmp_path: Path
) -> None:
    stderr = instrument(
        server,
        tmp_path,
        LOGGING_APP,
        OTEL_TRACES_EXPORTER="greenflash",
        OTEL_LOGS_EXPORTER="greenflash",
        OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
    )
    assert "Traceback" not in stderr
    [event] = server.events
    assert event["eventType"] == "upgrade_purchased"
    assert event["properties"] == {"plan": "pro"}  # dotted `extra` keys survive
    assert event["externalConversationId"] == "chat-77"  # the root's id, through the trace
    assert len(server.requests) == 1


def test_the_post_instrument_hook_installs_the_log_record_processor_too(
    server: EventsApiServer, tmp_path: Path
) -> None:
    """``GREENFLASH_INSTALL_PROCESSOR=true``: ``configure()`` finds the SDK LoggerProvider set
    by ``opentelemetry-instrument`` and adds a log record processor sharing the span
    processor's pipeline; the record links through baggage (only a processor sees it)."""
    app = (
        "from opentelemetry import baggage, context\n"
        'context.attach(baggage.set_baggage("greenflash.user.external_id", "u-7"))\n' + LOGS_API_APP
    )
    instrument(
        server,
        tmp_path,
        app,
        GREENFLASH_INSTALL_PROCESSOR="true",
        OTEL_LOGS_EXPORTER="console",
    )
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID
    assert event["externalUserId"] == "u-7"


def test_logs_exporter_and_hook_together_warn_and_keep_the_event_once(
    server: EventsApiServer, tmp_path: Path
) -> None:
    stderr = instrument(
        server,
        tmp_path,
        LOGS_API_APP,
        GREENFLASH_INSTALL_PROCESSOR="true",
        OTEL_LOGS_EXPORTER="greenflash",
    )
    assert "OTEL_LOGS_EXPORTER=greenflash" in stderr
    assert "choose one" in stderr
    assert len(server.events) == 1  # sent by both intakes under one insertId, kept once
    assert server.duplicates == 1
    assert server.events[0]["conversationId"] == CONVERSATION_ID


def test_configure_installs_the_log_processor_on_the_sdk_logger_provider_once(
    server: EventsApiServer, tmp_path: Path
) -> None:
    script = """
    import json
    from opentelemetry import _logs, trace
    from opentelemetry.sdk._logs import LoggerProvider
    import otel_greenflash

    mine = LoggerProvider()
    _logs.set_logger_provider(mine)
    first = otel_greenflash.configure()
    assert otel_greenflash.configure() is first  # idempotent
    with trace.get_tracer("shop").start_as_current_span("chat") as root:
        _logs.get_logger("shop").emit(
            event_name="greenflash.event",
            attributes={"greenflash.event.type": "upgrade", "greenflash.event.value": 1},
        )
        root.set_attribute("gen_ai.conversation.id", "thread-3")
    processors = mine._multi_log_record_processor._log_record_processors
    print(json.dumps([type(processor).__name__ for processor in processors]))
    """  # no shutdown: the SDK's atexit hooks deliver
    result = run_script(tmp_path, script, instrument_env(server))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["GreenflashLogRecordProcessor"]
    [event] = server.events
    assert event["eventType"] == "upgrade"
    assert event["externalConversationId"] == "thread-3"  # linked through the span processor


def test_configure_never_creates_a_logger_provider(server: EventsApiServer, tmp_path: Path) -> None:
    script = """
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    import otel_greenflash

    assert otel_greenflash.configure() is not None
    assert not isinstance(_logs.get_logger_provider(), LoggerProvider)
    _logs.get_logger("shop").emit(
        event_name="greenflash.event",
        attributes={"greenflash.event.type": "upgrade", "greenflash.event.value": 1},
    )
    print("ok")
    """
    result = run_script(tmp_path, script, instrument_env(server))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert server.requests == []  # the API's no-op logger: nothing to send
