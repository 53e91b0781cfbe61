"""An application process with a durable spool, run as a real subprocess by the spool tests.

``python -c EMITTER COUNT LABEL MODE``: emits COUNT business events (values LABEL0, LABEL1, …)
through the span processor configured from ``GREENFLASH_*``, prints ``ready`` once they are all
in the spool (or delivered), then in MODE ``hang`` sleeps until it is killed, in ``serve``
until its stdin closes (then shuts down), and in ``exit`` flushes and shuts down at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import clean_env

PRODUCT_ID = "123e4567-e89b-12d3-a456-426614174000"

EMITTER = """
import sys, time
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor

count, label, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
size = int(sys.argv[4]) if len(sys.argv) > 4 else 0
processor = GreenflashSpanProcessor(schedule_delay_seconds=0.05)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("app")
for index in range(count):
    with tracer.start_as_current_span("billing") as span:
        span.set_attributes({
            "greenflash.event.type": "upgrade_purchased",
            "greenflash.event.value": f"{label}{index}",
            "greenflash.event.properties.note": "n" * size,
        })
deadline = time.monotonic() + 60
def ready():
    stats = processor.stats()  # no spool counts until the worker opened the spool
    return "pending" in stats["spool"] and stats["spool"]["pending"] + stats["sent"] >= count
while not ready() and time.monotonic() < deadline:
    time.sleep(0.02)
print("ready", processor.stats()["spool"], flush=True)
if mode == "hang":
    time.sleep(3600)  # killed with SIGKILL by the test
if mode == "serve":
    sys.stdin.read()
processor.force_flush(30000)
processor.shutdown(30000)
print("stats", processor.stats(), flush=True)
"""


def start(
    spool: Path, key: str, base_url: str, *args: str, **env_extra: str
) -> subprocess.Popen[str]:
    """Start the emitter with this key, base URL and spool directory."""
    env = clean_env(
        GREENFLASH_API_KEY=key,
        GREENFLASH_BASE_URL=base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_SPOOL_DIR=str(spool),
        **env_extra,
    )
    return subprocess.Popen(
        [sys.executable, "-c", EMITTER, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(process: subprocess.Popen[str]) -> str:
    """The emitter's ``ready`` line (AssertionError with its stderr if it ended instead)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"emitter did not get ready: {line!r}\n{err}")
    return line


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL, as the OOM killer or a crashed host would end it."""
    process.kill()
    process.communicate(timeout=30)
