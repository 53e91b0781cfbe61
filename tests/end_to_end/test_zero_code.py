"""Zero-code paths, run the way users run them: ``opentelemetry-instrument`` in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_greenflash.testing import EventsApiServer
from tests.support.common import CONVERSATION_ID, PRODUCT_ID
from tests.support.processes import clean_env, command, run_script

pytest.importorskip("opentelemetry.distro")

# Application code that knows nothing of this library: only the OpenTelemetry API.
APP = """
from opentelemetry import baggage, context, trace

tracer = trace.get_tracer("shop")
with tracer.start_as_current_span("chat") as root:
    with tracer.start_as_current_span("billing.upgrade") as span:
        span.set_attributes({
            "greenflash.event.type": "upgrade_purchased",
            "greenflash.event.value": 149,
            "greenflash.event.value_type": "currency",
        })
    # learned at the end of the chat, after the event span ended:
    root.set_attribute("greenflash.conversation.id", "CONVERSATION_ID")
    root.set_attribute("gen_ai.conversation.id", "thread-42")
print("app done")
""".replace("CONVERSATION_ID", CONVERSATION_ID)


def instrument_env(server: EventsApiServer, **extra: str) -> dict[str, str]:
    return clean_env(
        **{
            "GREENFLASH_API_KEY": server.api_key,
            "GREENFLASH_BASE_URL": server.base_url,
            "GREENFLASH_PRODUCT_ID": PRODUCT_ID,
            "GREENFLASH_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "shop",
            **extra,
        }
    )


def test_exporter_named_in_otel_traces_exporter(server: EventsApiServer, tmp_path: Path) -> None:
    env = instrument_env(server, OTEL_TRACES_EXPORTER="console,greenflash")
    result = run_script(tmp_path, APP, env, command("opentelemetry-instrument"))

    assert result.returncode == 0, result.stderr
    assert "app done" in result.stdout
    assert '"name": "chat"' in result.stdout  # the console exporter still got every span
    [event] = server.events
    assert event["eventType"] == "upgrade_purchased"
    assert event["value"] == "149.00"
    assert event["conversationId"] == CONVERSATION_ID  # linked through the later root span
    assert event["externalConversationId"] == "thread-42"
    assert len(server.requests) == 1  # non-event spans were not exported


def test_processor_installed_by_the_post_instrument_hook(
    server: EventsApiServer, tmp_path: Path
) -> None:
    env = instrument_env(server, OTEL_TRACES_EXPORTER="none", GREENFLASH_INSTALL_PROCESSOR="true")
    app = APP.replace(
        'with tracer.start_as_current_span("chat") as root:',
        'token = context.attach(baggage.set_baggage("greenflash.user.external_id", "u-7"))\n'
        'with tracer.start_as_current_span("chat") as root:',
    )
    result = run_script(tmp_path, app, env, command("opentelemetry-instrument"))

    assert result.returncode == 0, result.stderr
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID
    assert event["externalUserId"] == "u-7"  # baggage: only the processor sees start contexts


def test_hook_does_nothing_unless_enabled(server: EventsApiServer, tmp_path: Path) -> None:
    env = instrument_env(server, OTEL_TRACES_EXPORTER="none")
    result = run_script(tmp_path, APP, env, command("opentelemetry-instrument"))
    assert result.returncode == 0, result.stderr
    assert server.requests == []


def test_otel_sdk_disabled_is_respected(server: EventsApiServer, tmp_path: Path) -> None:
    env = instrument_env(
        server,
        OTEL_TRACES_EXPORTER="greenflash",
        GREENFLASH_INSTALL_PROCESSOR="true",
        OTEL_SDK_DISABLED="true",
    )
    result = run_script(tmp_path, APP, env, command("opentelemetry-instrument"))
    assert result.returncode == 0, result.stderr
    assert server.requests == []


def test_sampler_from_the_environment_keeps_events_at_ratio_zero(
    server: EventsApiServer, tmp_path: Path
) -> None:
    env = instrument_env(
        server,
        OTEL_TRACES_EXPORTER="console",
        GREENFLASH_INSTALL_PROCESSOR="true",
        OTEL_TRACES_SAMPLER="greenflash_parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
    )
    result = run_script(tmp_path, APP, env, command("opentelemetry-instrument"))
    assert result.returncode == 0, result.stderr
    assert '"name": "chat"' not in result.stdout  # sampled out for the other exporters
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID


def test_configure_creates_a_provider_only_when_none_is_set(
    server: EventsApiServer, tmp_path: Path
) -> None:
    script = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    import otel_greenflash

    first = otel_greenflash.configure()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert otel_greenflash.configure() is first  # idempotent
    with trace.get_tracer("t").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    provider.shutdown()
    print("ok")
    """
    result = run_script(tmp_path, script, instrument_env(server))
    assert result.returncode == 0, result.stderr
    assert len(server.events) == 1


def test_configure_keeps_the_users_provider(server: EventsApiServer, tmp_path: Path) -> None:
    script = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    import otel_greenflash

    mine = TracerProvider()
    trace.set_tracer_provider(mine)
    otel_greenflash.configure(linger_seconds=0.1)
    assert trace.get_tracer_provider() is mine
    with trace.get_tracer("t").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    mine.shutdown()
    """
    result = run_script(tmp_path, script, instrument_env(server))
    assert result.returncode == 0, result.stderr
    assert len(server.events) == 1


def test_exit_without_explicit_shutdown_still_delivers(
    server: EventsApiServer, tmp_path: Path
) -> None:
    script = """
    from opentelemetry import trace
    import otel_greenflash

    otel_greenflash.configure(schedule_delay_seconds=60, send_delay_seconds=60)
    with trace.get_tracer("t").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    """  # the SDK's atexit shutdown flushes the processor
    result = run_script(tmp_path, script, instrument_env(server))
    assert result.returncode == 0, result.stderr
    assert len(server.events) == 1


def test_dry_run_prints_events_without_a_key(tmp_path: Path) -> None:
    script = """
    from opentelemetry import trace
    import otel_greenflash

    otel_greenflash.configure()
    with trace.get_tracer("t").start_as_current_span("e") as span:
        span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": 1})
    """
    env = clean_env(GREENFLASH_DRY_RUN="true", GREENFLASH_PRODUCT_ID=PRODUCT_ID)
    result = run_script(tmp_path, script, env)
    assert result.returncode == 0, result.stderr
    assert '"eventType":"t"' in result.stdout


def test_exporter_and_hook_together_warn_and_still_keep_each_event_once(
    server: EventsApiServer, tmp_path: Path
) -> None:
    env = instrument_env(
        server, OTEL_TRACES_EXPORTER="greenflash", GREENFLASH_INSTALL_PROCESSOR="true"
    )
    result = run_script(tmp_path, APP, env, command("opentelemetry-instrument"))
    assert result.returncode == 0, result.stderr
    assert "choose one" in result.stderr
    assert len(server.events) == 1  # sent twice under one insertId, kept once
    assert server.duplicates == 1
