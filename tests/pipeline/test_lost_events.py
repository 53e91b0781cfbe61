"""One entry point for every lost event: ``LostEvents.record`` counts it under its stats key,
says its warning, and hands the events to ``on_drop`` with the reason as a plain string."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from otel_greenflash import BusinessEvent
from otel_greenflash._logging import RateLimitedLog
from otel_greenflash._stats import DeliveryStats, DropReason, LossWarning, LostEvents

EVENT = BusinessEvent({"eventType": "ok"}, insert_id="otel-1", span_name="work")


def recorder() -> tuple[LostEvents, DeliveryStats, list[tuple[list[BusinessEvent], object]]]:
    stats = DeliveryStats()
    handed: list[tuple[list[BusinessEvent], object]] = []

    def on_drop(events: Sequence[BusinessEvent], reason: str) -> None:
        handed.append((list(events), reason))

    return LostEvents(stats, RateLimitedLog(), on_drop), stats, handed


def test_a_drop_is_counted_under_its_reason_and_handed_to_on_drop() -> None:
    lost, stats, handed = recorder()
    lost.record(DropReason.SHUTDOWN, 1, events=[EVENT])
    lost.record(DropReason.QUEUE_FULL, 3)
    assert stats.snapshot()["dropped"] == {"shutdown": 1, "queue_full": 3}
    assert handed == [([EVENT], "shutdown")]
    assert type(handed[0][1]) is str  # on_drop's reason stays a plain string


def test_invalid_and_failed_count_under_their_own_keys_and_never_reach_on_drop() -> None:
    lost, stats, handed = recorder()
    lost.record(DropReason.INVALID, 2, events=[EVENT])
    lost.record(DropReason.FAILED, 1, events=[EVENT])
    snapshot = stats.snapshot()
    assert (snapshot["invalid"], snapshot["failed"], snapshot["dropped"]) == (2, 1, {})
    assert handed == []


def test_the_warning_is_said_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    lost, _, _ = recorder()
    warning = LossWarning("spool-full", "spool is full: %d evicted", (5,))
    with caplog.at_level(logging.WARNING, logger="otel_greenflash"):
        lost.record(DropReason.SPOOL_FULL, 5, warning=warning)
        lost.record(DropReason.SPOOL_FULL, 5, warning=warning)
    assert [record.getMessage() for record in caplog.records] == ["spool is full: 5 evicted"]


def test_every_reason_is_a_stats_key_string() -> None:
    assert {str(reason) for reason in DropReason} == {reason.value for reason in DropReason}
    assert DropReason("span_event_limit") is DropReason.SPAN_EVENT_LIMIT
