"""Scenario 6: what the durable spool adds per event (sqlite writes on the worker thread).

Fresh interpreter: ``python -m benchmarks.spool_cost MODE COUNT`` (MODE ``spool``/``memory``).
Delivery costs nothing here (a discarding transport), so the figure is the pipeline's own CPU.
"""

from __future__ import annotations

import sys
import tempfile

from opentelemetry.sdk.trace import TracerProvider

from otel_greenflash import GreenflashSpanProcessor

from ._common import PRODUCT_ID, cpu_seconds, emit_json, now
from .overhead import DiscardTransport


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as directory:
        processor = GreenflashSpanProcessor(
            api_key="bench",
            product_id=PRODUCT_ID,
            base_url="http://127.0.0.1:9/api/v1",
            transport=DiscardTransport(),
            max_queue_size=count,
            schedule_delay_seconds=0.05,
            spool_dir=directory if mode == "spool" else None,
        )
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("bench")
        cpu_start, wall_start = cpu_seconds(), now()
        for index in range(count):
            with tracer.start_as_current_span("task") as span:
                span.set_attributes(
                    {"greenflash.event.type": "task_success", "greenflash.event.value": index}
                )
        processor.force_flush(600_000)
        spooled = bool(processor.stats()["spool"])
        sent = processor.stats()["sent"]
        provider.shutdown()  # included: the last deletions and the file's removal
        emit_json(
            {
                "cpu_us_per_event": (cpu_seconds() - cpu_start) / count * 1e6,
                "seconds": now() - wall_start,
                "sent": float(sent),
                "spooled": float(spooled),
            }
        )


if __name__ == "__main__":
    main()
