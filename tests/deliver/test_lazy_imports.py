"""``import otel_greenflash`` loads nothing of the HTTP stack: httpx, aiohttp and their adapter
(a quarter of a second) are imported when a processor starts delivering, in a real interpreter."""

from __future__ import annotations

import json
from pathlib import Path

from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID
from tests.support.processes import clean_env, run_script

NETWORK_MODULES = ("httpx", "httpcore", "aiohttp", "httpx_aiohttp")

APP = """
import json, sys
NETWORK = {network!r}

def loaded():
    return sorted(name for name in NETWORK if name in sys.modules)

import opentelemetry.sdk.trace
import otel_greenflash
import otel_greenflash.cli
import otel_greenflash.testing
after_import = loaded()

from opentelemetry.sdk.trace import TracerProvider
processor = otel_greenflash.GreenflashSpanProcessor(
    api_key={api_key!r}, base_url={base_url!r}, product_id={product_id!r}
)
provider = TracerProvider()
provider.add_span_processor(processor)
with provider.get_tracer("app").start_as_current_span("signup") as span:
    span.set_attribute("greenflash.event.type", "signup")
    span.set_attribute("greenflash.event.value", "1")
    span.set_attribute("greenflash.conversation.external_id", "chat-1")
flushed = processor.force_flush(60_000)
print(json.dumps({{
    "after_import": after_import,
    "delivering": loaded(),
    "flushed": flushed,
    "sent": processor.stats()["sent"],
}}))
provider.shutdown()
"""


def test_the_http_stack_is_imported_when_a_processor_starts_delivering_not_before(
    tmp_path: Path, server: EventsApiServer
) -> None:
    source = APP.format(
        network=NETWORK_MODULES,
        api_key=server.api_key,
        base_url=server.base_url,
        product_id=PRODUCT_ID,
    )
    result = run_script(tmp_path, source, clean_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert {"httpx", "aiohttp"} <= set(report["delivering"])  # the default http_client
    assert report["flushed"] is True
    assert report["sent"] == 1
    assert server.wait_for_events(1, timeout_seconds=30)
    assert [event["eventType"] for event in server.events] == ["signup"]
