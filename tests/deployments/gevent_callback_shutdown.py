"""A script patched by ``DEPLOY_PATCHER`` (``gevent``, ``eventlet`` or ``none``) whose
``on_error`` callback shuts the processor down.

It configures with ``on_error`` calling ``shutdown()``; emits ``DEPLOY_EVENTS`` events (uids
``<DEPLOY_UID_PREFIX>-<i>``) under a root span left open, so they wait for its conversation id,
then one event of its own trace, sent at once, which the receiver refuses (422); waits until the
callback's ``shutdown()`` has returned, prints ``shutdown asked`` and returns: the interpreter
exits at once, with the held events still to deliver. At exit, after the SDK's own shutdown, it
prints ``stats <json>``.
"""

from __future__ import annotations

import importlib
import os

# importlib: neither library ships type information. ``none``: the same script unpatched.
if os.environ.get("DEPLOY_PATCHER", "gevent") == "gevent":
    importlib.import_module("gevent.monkey").patch_all()
elif os.environ["DEPLOY_PATCHER"] == "eventlet":
    importlib.import_module("eventlet").monkey_patch()

import atexit  # after patching, as users do
import json
import time
from collections.abc import Sequence

from opentelemetry import trace

import otel_greenflash
from otel_greenflash import GreenflashSpanProcessor
from tests.deployments._events import emit

processors: list[GreenflashSpanProcessor] = []
asked: list[str] = []


def shut_down(error: Exception, events: Sequence[object]) -> None:
    processors[0].shutdown()
    asked.append(type(error).__name__)


def print_stats() -> None:  # registered first: runs after the SDK's atexit shutdown
    print(f"stats {json.dumps(processors[0].stats())}", flush=True)


def main() -> None:
    atexit.register(print_stats)
    processor = otel_greenflash.configure(on_error=shut_down)
    assert processor is not None
    processors.append(processor)
    prefix = os.environ["DEPLOY_UID_PREFIX"]
    tracer = trace.get_tracer("tests.deployments")
    turn = tracer.start_span("turn")  # open: its events wait for an id it might still set
    with trace.use_span(turn):
        for i in range(int(os.environ.get("DEPLOY_EVENTS", "20"))):
            with tracer.start_as_current_span("step") as span:
                span.set_attributes(
                    {
                        "greenflash.event.type": "held_step",
                        "greenflash.event.value": 1,
                        "greenflash.event.properties.uid": f"{prefix}-{i}",
                    }
                )
    emit("refused", f"{prefix}-refused")  # a trace of its own, sent at once: refused
    deadline = time.monotonic() + 30
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"shutdown asked by on_error({asked})", flush=True)


if __name__ == "__main__":
    main()
