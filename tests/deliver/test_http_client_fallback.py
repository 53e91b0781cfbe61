"""The pure-httpx fallback (``GREENFLASH_HTTP_CLIENT=httpx``) passes the fault-injection suite."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.processes import clean_env, run

ROOT = Path(__file__).resolve().parents[2]


def test_fault_injection_suite_passes_over_httpx_own_transport() -> None:
    env = clean_env(GREENFLASH_HTTP_CLIENT="httpx")
    result = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",  # this test's own worker runs it; no second set of workers
            "0",
            "tests/deliver/test_delivery.py",
        ],
        env,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "failed" not in result.stdout


def test_the_setting_reaches_the_transport() -> None:
    from otel_greenflash import GreenflashSpanProcessor

    processor = GreenflashSpanProcessor(
        api_key="k", base_url="http://127.0.0.1:9/v1", http_client="httpx"
    )
    try:
        transport = processor._shared.engine._transport
        connections = transport._connections  # type: ignore[attr-defined]
        assert connections._shared is None  # one httpx transport per request in flight, no pool
    finally:
        processor.shutdown(1000)
