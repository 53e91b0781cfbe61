"""Run ``billing_service.py`` as a real second service and call it the way service A would:
over HTTP, with the W3C ``traceparent`` and ``baggage`` headers of A's current context."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.processes import clean_env

APP = Path(__file__).resolve().parent / "billing_service.py"
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


class BillingService:
    """``billing_service.py <mode>`` in a subprocess, aimed at ``base_url`` with ``api_key``."""

    def __init__(self, mode: str, *, api_key: str, base_url: str, product_id: str) -> None:
        env = clean_env(
            GREENFLASH_API_KEY=api_key,
            GREENFLASH_BASE_URL=base_url,
            GREENFLASH_PRODUCT_ID=product_id,
            GREENFLASH_BSP_SCHEDULE_DELAY="50",
            OTEL_SERVICE_NAME="billing",
        )
        self._process = subprocess.Popen(
            [sys.executable, str(APP), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        first = self._process.stdout.readline()
        if not first.startswith("port "):
            self._process.kill()
            _, stderr = self._process.communicate(timeout=30)
            raise AssertionError(f"billing service did not start: {first!r}\n{stderr}")
        self.port = int(first.split()[1])
        self.stderr = ""

    def call(self, path: str, value: str, **headers: str) -> int:
        """POST ``path`` with the current context's ``traceparent``/``baggage`` headers."""
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=b"",
            method="POST",
            headers={**carrier, "X-Value": value, **headers},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)

    def stop(self) -> dict[str, Any]:
        """Ask the service to quit (its providers shut down, delivering what is left); return
        the stats it printed."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/quit", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=30):
            pass
        stdout, self.stderr = self._process.communicate(timeout=60)
        assert self._process.returncode == 0, self.stderr
        stats: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return stats

    def __enter__(self) -> BillingService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate(timeout=30)
