"""The ``greenflash_events`` fixture, used from a user's own test suite in a subprocess."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from tests.support.processes import clean_env, run

USER_TESTS = """
from opentelemetry import trace

def upgrade(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("chat") as chat:
        chat.set_attribute("greenflash.conversation.external_id", "chat-1")
        with tracer.start_as_current_span("billing") as span:
            span.set_attributes({
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": 149,
                "greenflash.event.value_type": "currency",
            })

def test_upgrade_is_reported(greenflash_events):
    upgrade(greenflash_events.tracer)
    event = greenflash_events.one("upgrade_purchased", externalConversationId="chat-1")
    assert event["value"] == "149.00"

def test_each_test_starts_empty(greenflash_events):
    assert greenflash_events.events == []

def test_bad_attributes_are_not_captured(greenflash_events):
    with greenflash_events.tracer.start_as_current_span("x") as span:
        span.set_attributes({"greenflash.event.type": "t"})  # no value
    assert greenflash_events.events == []
    assert greenflash_events.processor.stats()["invalid"] == 1
"""


def test_users_can_capture_events_in_memory(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(textwrap.dedent(USER_TESTS))
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        clean_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_a_failing_one_shows_what_was_captured() -> None:
    from otel_greenflash.testing import CapturedEvents

    captured = CapturedEvents()
    try:
        with captured.tracer.start_as_current_span("billing") as span:
            span.set_attributes(
                {"greenflash.event.type": "upgrade_purchased", "greenflash.event.value": "99"}
            )
        with captured.tracer.start_as_current_span("bad") as span:
            span.set_attributes({"greenflash.event.type": "upgrade_purchased"})  # no value
        try:
            captured.one("upgrade_purchased", value="149")
        except AssertionError as error:
            message = str(error)
        else:
            raise AssertionError("one() found an event that does not exist")
    finally:
        captured.close()
    assert "expected one 'upgrade_purchased' event with value='149', found 0" in message
    assert '"value": "99"' in message  # what was captured instead
    assert "1 invalid event(s) not captured" in message
