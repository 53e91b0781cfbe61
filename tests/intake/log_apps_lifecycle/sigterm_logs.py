"""Business events as log records only (no span intake), held when SIGTERM comes.

``processor``: a GreenflashLogRecordProcessor. ``exporter``: a GreenflashLogRecordExporter behind
the SDK's BatchLogRecordProcessor (an hour's schedule delay: every record is still in its queue).
Records come from Python ``logging`` through the SDK's LoggingHandler. Settings from GREENFLASH_*.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

from otel_greenflash import GreenflashLogRecordExporter, GreenflashLogRecordProcessor


def main(mode: str, count: int) -> None:
    provider = LoggerProvider()
    if mode == "processor":
        provider.add_log_record_processor(GreenflashLogRecordProcessor())
    else:
        provider.add_log_record_processor(
            BatchLogRecordProcessor(GreenflashLogRecordExporter(), schedule_delay_millis=3_600_000)
        )
    set_logger_provider(provider)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    logging.getLogger().addHandler(handler)
    billing = logging.getLogger("billing")
    for index in range(count):
        billing.warning(
            "upgrade %d",
            index,
            extra={
                "greenflash.event.type": "upgrade_purchased",
                "greenflash.event.value": index,
                "greenflash.event.properties.index": index,
            },
        )
    print("ready", flush=True)
    time.sleep(120)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
