"""The in-flight limit and endpoint pause (pure state), and the 401/403 gate."""

from __future__ import annotations

from otel_greenflash import AuthenticationError, PermissionDeniedError
from otel_greenflash._deliver.auth import AuthGate
from otel_greenflash._deliver.throttle import Throttle


def test_throttling_halves_once_per_round_and_successes_grow_it_back() -> None:
    throttle = Throttle(64)
    started = throttle.round
    for _ in range(30):  # 30 answers to requests of one round: one halving
        throttle.throttled(started, None)
    assert throttle.limit == 32
    throttle.throttled(throttle.round, None)  # a request started after the halving
    assert throttle.limit == 16
    for _ in range(100):
        throttle.succeeded()
    assert throttle.limit == 64  # never above the maximum


def test_the_limit_never_drops_below_one() -> None:
    throttle = Throttle(4)
    for _ in range(10):
        throttle.throttled(throttle.round, None)
    assert throttle.limit == 1
    assert throttle.has_room(0)
    assert not throttle.has_room(1)


def test_a_retry_after_pauses_until_the_latest_hint() -> None:
    throttle = Throttle(8)
    throttle.throttled(throttle.round, 110.0)
    throttle.throttled(throttle.round, 105.0)  # an earlier end does not shorten the pause
    assert throttle.paused(109.9)
    assert not throttle.paused(110.0)


def test_auth_gate_fails_events_during_the_pause_then_probes_once() -> None:
    gate = AuthGate(pause_seconds=10.0)
    assert gate.refusal(0.0) is None
    error = gate.refused(401, now=0.0)
    assert isinstance(error, AuthenticationError)
    assert gate.refusal(5.0) is error
    assert gate.refusal(10.0) is None  # the probe
    assert gate.refusal(10.0) is error  # only one probe at a time
    gate.answered(403)  # still refused: the probe's answer changes nothing by itself
    assert isinstance(gate.refused(403, now=10.5), PermissionDeniedError)
    assert gate.refusal(20.6) is None
    gate.answered(200)
    assert gate.error is None
    assert gate.refusal(20.7) is None


def test_a_probe_without_an_answer_lets_the_next_event_probe() -> None:
    gate = AuthGate(pause_seconds=1.0)
    error = gate.refused(401, now=0.0)
    assert gate.refusal(1.0) is None  # the probe goes out
    gate.answered(None)  # ...and meets a timeout or a reset: no verdict on the key
    assert gate.refusal(1.1) is None  # so the next event probes, instead of failing forever
    assert gate.error is error
    gate.answered(200)
    assert gate.refusal(1.2) is None
    assert gate.error is None
