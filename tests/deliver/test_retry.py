"""The retry policy, as pure functions."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from otel_greenflash._deliver.retry import RetryPolicy, is_retryable_status, server_retry_delay

NOW = 1_800_000_000.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_other_client_errors_are_not_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_backoff_doubles_up_to_the_cap_with_jitter_below_the_base() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=8.0, jitter=0.25)
    assert [policy.backoff(n, rand=lambda: 0.0) for n in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
    ]
    assert policy.backoff(3, rand=lambda: 1.0) == pytest.approx(1.5)


def test_retry_after_seconds() -> None:
    assert server_retry_delay({"retry-after": "7"}, NOW) == 7.0


def test_retry_after_http_date() -> None:
    moment = datetime.fromtimestamp(NOW + 12, tz=timezone.utc)
    assert server_retry_delay({"retry-after": format_datetime(moment, usegmt=True)}, NOW) == (
        pytest.approx(12.0)
    )


def test_retry_after_date_in_the_past_means_now() -> None:
    moment = datetime.fromtimestamp(NOW - 100, tz=timezone.utc)
    assert server_retry_delay({"retry-after": format_datetime(moment, usegmt=True)}, NOW) == 0.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert server_retry_delay({"retry-after-ms": "250", "retry-after": "9"}, NOW) == 0.25


@pytest.mark.parametrize("value", ["soon", "-3", "nan", ""])
def test_unparsable_hints_are_ignored(value: str) -> None:
    assert server_retry_delay({"retry-after": value}, NOW) is None


def test_policy_uses_the_hint_capped_else_backoff() -> None:
    policy = RetryPolicy(max_server_delay=30.0)
    assert policy.delay(1, {"retry-after": "3"}, NOW) == 3.0
    assert policy.delay(1, {"retry-after": "3600"}, NOW) == 30.0
    assert policy.delay(2, {}, NOW, rand=lambda: 0.0) == 1.0
