"""The gateway's counters, as JSON (``/stats``) and Prometheus text (``/metrics``).

Counters are only touched on the event loop's thread, so they need no lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any


class GatewayMetrics:
    """Requests by protocol, signal and outcome; spans, log records and events taken in.

    Outcomes: ``ok``, ``partial`` (some business events invalid), ``malformed`` (400/415,
    INVALID_ARGUMENT), ``too_large`` (413), ``unauthenticated`` (401), ``unavailable`` (503,
    UNAVAILABLE: spool full or unusable, shutting down, timeout), ``over_budget`` (gRPC
    UNAVAILABLE: the gateway, or the peer, holds as many calls as allowed).
    """

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.spans = 0
        self.log_records = 0
        self.events_accepted = 0
        self.events_rejected = 0

    def request(self, protocol: str, signal: str, outcome: str) -> None:
        self.requests[(protocol, signal, outcome)] += 1

    def accepted(self, signal: str, items: int, events: int, invalid: int) -> None:
        if signal == "traces":
            self.spans += items
        else:
            self.log_records += items
        self.events_accepted += events
        self.events_rejected += invalid

    def snapshot(
        self, pipeline: Mapping[str, Any], ready: tuple[bool, str], queue: Mapping[str, int]
    ) -> dict[str, Any]:
        """Everything ``/stats`` shows: the gateway's counters, the pipeline's, and the depth
        of its queue (``queue``: ``queue_depth``, ``queue_capacity``, ``spool_capacity``)."""
        requests: dict[str, dict[str, dict[str, int]]] = {}
        for (protocol, signal, outcome), count in sorted(self.requests.items()):
            requests.setdefault(protocol, {}).setdefault(signal, {})[outcome] = count
        return {
            "ready": ready[0],
            "ready_reason": ready[1],
            "received": {"spans": self.spans, "log_records": self.log_records},
            "events": {"accepted": self.events_accepted, "rejected": self.events_rejected},
            "requests": requests,
            "queue": {
                "depth": queue.get("queue_depth", 0),
                "capacity": queue.get("queue_capacity", 0),
            },
            "spool": {
                "depth": dict(pipeline.get("spool") or {}).get("pending", 0),
                "capacity": queue.get("spool_capacity", 0),
            },
            "pipeline": dict(pipeline),
        }

    def prometheus(
        self, pipeline: Mapping[str, Any], ready: tuple[bool, str], queue: Mapping[str, int]
    ) -> str:
        """Prometheus text exposition format 0.0.4."""
        return "".join(_lines(self, pipeline, ready, queue))


def _lines(
    metrics: GatewayMetrics,
    pipeline: Mapping[str, Any],
    ready: tuple[bool, str],
    queue: Mapping[str, int],
) -> Iterator[str]:
    prefix = "greenflash_gateway_"

    def family(name: str, kind: str, help_text: str) -> str:
        return f"# HELP {prefix}{name} {help_text}\n# TYPE {prefix}{name} {kind}\n"

    def single(name: str, kind: str, help_text: str, value: object) -> str:
        return f"{family(name, kind, help_text)}{prefix}{name} {_number(value)}\n"

    yield single("up", "gauge", "1 while the gateway runs.", 1)
    yield single(
        "ready",
        "gauge",
        "1 when the gateway accepts data (spool usable, API key set).",
        int(ready[0]),
    )
    yield family("requests_total", "counter", "OTLP export requests by protocol, signal, outcome.")
    for (protocol, signal, outcome), count in sorted(metrics.requests.items()):
        labels = f'protocol="{protocol}",signal="{signal}",outcome="{outcome}"'
        yield f"{prefix}requests_total{{{labels}}} {count}\n"
    yield single(
        "received_spans_total", "counter", "Spans taken in (events or linking only).", metrics.spans
    )
    yield single(
        "received_log_records_total", "counter", "Log records taken in.", metrics.log_records
    )
    yield single(
        "events_accepted_total",
        "counter",
        "Business events acknowledged (spooled).",
        metrics.events_accepted,
    )
    yield single(
        "events_rejected_total",
        "counter",
        "Invalid business events (OTLP partial success).",
        metrics.events_rejected,
    )
    for key, help_text in (
        ("queued", "Business events taken by the pipeline."),
        ("sent", "Business events the Events API accepted."),
        ("failed", "Business events refused by the API or out of retries."),
        ("invalid", "Business events with invalid attributes."),
    ):
        yield single(f"events_{key}_total", "counter", help_text, pipeline.get(key))
    yield family("events_dropped_total", "counter", "Business events dropped, by reason.")
    for reason, count in sorted(dict(pipeline.get("dropped") or {}).items()):
        yield f'{prefix}events_dropped_total{{reason="{_label(reason)}"}} {_number(count)}\n'
    yield single(
        "queue_depth",
        "gauge",
        "Records in the pipeline's queue, not linked yet.",
        queue.get("queue_depth"),
    )
    yield single(
        "queue_capacity",
        "gauge",
        "Records the pipeline's queue holds at most.",
        queue.get("queue_capacity"),
    )
    yield single(
        "events_waiting",
        "gauge",
        "Business events waiting for their trace's root span.",
        pipeline.get("waiting"),
    )
    spool = dict(pipeline.get("spool") or {})
    yield single(
        "spool_pending",
        "gauge",
        "Business events in the spool, not delivered yet.",
        spool.get("pending"),
    )
    yield single(
        "spool_capacity",
        "gauge",
        "Business events the spool holds at most.",
        queue.get("spool_capacity"),
    )
    yield single(
        "spool_rejected",
        "gauge",
        "Business events kept in the spool after a refusal.",
        spool.get("rejected"),
    )
    yield single(
        "spool_evicted_total",
        "counter",
        "Business events evicted from a full spool.",
        spool.get("evicted"),
    )
    yield from _request_lines(prefix, pipeline)


def _request_lines(prefix: str, pipeline: Mapping[str, Any]) -> Iterator[str]:
    """Messages and ratings requests (conversation capture; ratings from ``greenflash.rating``
    records too), by endpoint: none until the pipeline made one of either."""
    endpoints = [
        (name, dict(pipeline[name])) for name in ("messages", "ratings") if name in pipeline
    ]
    if not endpoints:
        return
    name = f"{prefix}api_requests_total"
    yield f"# HELP {name} Messages and ratings requests by endpoint and outcome.\n"
    yield f"# TYPE {name} counter\n"
    for endpoint, counts in endpoints:
        for outcome in ("sent", "failed", "retried", "unconfirmed"):
            labels = f'endpoint="{endpoint}",outcome="{outcome}"'
            yield f"{name}{{{labels}}} {_number(counts.get(outcome))}\n"
    name = f"{prefix}api_requests_dropped_total"
    yield f"# HELP {name} Messages and ratings requests not sent, by endpoint and reason.\n"
    yield f"# TYPE {name} counter\n"
    for endpoint, counts in endpoints:
        for reason, count in sorted(dict(counts.get("dropped") or {}).items()):
            labels = f'endpoint="{endpoint}",reason="{_label(reason)}"'
            yield f"{name}{{{labels}}} {_number(count)}\n"


def _number(value: object) -> int | float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
