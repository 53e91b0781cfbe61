"""Scenario 4: ``shutdown(timeout_millis=2000)`` against a server that never answers.
Fresh interpreter: ``python -m benchmarks.shutdown_hang BASE_URL API_KEY``."""

from __future__ import annotations

import sys

from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor

from ._common import PRODUCT_ID, emit_json, now


def main() -> None:
    base_url, api_key = sys.argv[1:3]
    processor = GreenflashSpanProcessor(
        api_key=api_key, base_url=base_url, product_id=PRODUCT_ID, timeout_seconds=60
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    for index in range(200):
        with tracer.start_as_current_span("task") as span:
            span.set_attributes({"greenflash.event.type": "t", "greenflash.event.value": index})
    processor.force_flush(300)  # requests are now hanging on the server
    start = now()
    processor.shutdown(timeout_millis=2000)
    emit_json(
        {
            "shutdown_seconds": now() - start,
            "dropped": processor.stats()["dropped"].get("shutdown", 0),
        }
    )


if __name__ == "__main__":
    main()
