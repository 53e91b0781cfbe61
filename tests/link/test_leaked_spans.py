"""Spans that never end cost a small, bounded amount of memory (only what linking needs)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.processes import clean_env, run

SCRIPT = """
import gc
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash.testing import MemoryTransport

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")

processor = GreenflashSpanProcessor(
    product_id="123e4567-e89b-12d3-a456-426614174000", transport=MemoryTransport()
)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("leaky")
for _ in range(1000):  # warm up allocator and caches
    tracer.start_span("warm").end()
gc.collect()
before = rss_mb()
for index in range(100_000):
    span = tracer.start_span("never ends")  # dropped by the app without end()
    span.set_attribute("http.route", "/chat")
gc.collect()
print("growth_mb", round(rss_mb() - before, 1), "entries", len(processor._linker.live))
provider.shutdown()
"""


def test_100k_spans_that_never_end_cost_under_30_mb(tmp_path: Path) -> None:
    script = tmp_path / "leaky_app.py"
    script.write_text(SCRIPT)
    result = run([sys.executable, str(script)], clean_env(), timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    growth = float(words[words.index("growth_mb") + 1])
    entries = int(words[words.index("entries") + 1])
    assert entries <= 100_000  # bounded by max_spans
    assert growth < 30.0, result.stdout
