"""The ``otel-greenflash`` command: ``check``, ``serve``, ``send``, ``spool`` and ``gateway``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from . import attributes as attr
from ._config import (
    ENV_API_KEY,
    ENV_LINK_EXTRA_ALIASES,
    ENV_PRODUCT_ID,
    ENV_SPOOL_DIR,
    ConfigurationError,
    GreenflashConfig,
)
from ._deliver.engine import DeliveryEngine
from ._deliver.http import transport_for
from ._deliver.transport import user_agent
from ._event import BusinessEvent
from ._link.status import read_statuses, status_dir
from ._map.mapper import UNLINKED_REASONS
from ._map.rules import map_event_attributes
from ._stats import DeliveryStats
from ._version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        return int(arguments.run(arguments))
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-greenflash",
        description="Business events from OpenTelemetry spans to Greenflash.",
    )
    parser.add_argument("--version", action="version", version=f"otel-greenflash {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="show the configuration and test the connection")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    check.set_defaults(run=_check)

    serve = commands.add_parser("serve", help="run the local Events API server and print events")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--api-key", default=None, help="key to accept (default: a local key)")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    serve.set_defaults(run=_serve)

    send = commands.add_parser("send", help="send one event (a smoke test)")
    send.add_argument("event_type")
    send.add_argument("value")
    send.add_argument("--value-type", choices=["currency", "numeric", "text", "boolean", "count"])
    send.add_argument("--influence", choices=["positive", "negative", "neutral"])
    send.add_argument("--product-id")
    send.add_argument("--conversation-id")
    send.add_argument("--external-conversation-id")
    send.add_argument("--user-external-id")
    send.add_argument("--organization-external-id")
    send.add_argument("--insert-id")
    send.add_argument(
        "--property", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    send.add_argument("--dry-run", action="store_true", help="print the body instead of sending")
    send.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to keep trying (default 10)"
    )
    send.set_defaults(run=_send)

    spool = commands.add_parser("spool", help="inspect, deliver or delete a durable spool")
    spool.add_argument("action", choices=["inspect", "drain", "purge"])
    spool.add_argument("directory", nargs="?", default=None, help="default: GREENFLASH_SPOOL_DIR")
    spool.add_argument("--timeout", type=float, default=60.0, help="drain: seconds (default 60)")
    spool.set_defaults(run=_spool)

    from . import gateway as gateway_module  # its flags only: needs no extra to import

    gateway = commands.add_parser(
        "gateway", help="receive OTLP (HTTP and gRPC) and report the business events in it"
    )
    gateway_module.add_arguments(gateway)
    gateway.set_defaults(run=gateway_module.run)
    return parser


# -- check -------------------------------------------------------------------------------------


def _check(arguments: argparse.Namespace) -> int:
    config = GreenflashConfig.resolve()
    problems: list[str] = []
    print(f"otel-greenflash {__version__}")
    _row("enabled", "yes" if config.enabled else "no (GREENFLASH_ENABLED / OTEL_SDK_DISABLED)")
    _row("dry run", "yes: events are printed, not sent" if config.dry_run else "no")
    _row("api key", f"{config.api_key_redacted} ({ENV_API_KEY})")
    if not config.api_key and not config.dry_run:
        problems.append(f"{ENV_API_KEY} is not set: nothing will be sent")
    if config.product_id:
        _row("product id", f"{config.product_id} (valid UUID)")
    else:
        _row("product id", f"not set ({ENV_PRODUCT_ID}); events must carry greenflash.product.id")
    _row("events url", config.events_url)
    if config.custom_headers:
        _row("custom headers", ", ".join(config.custom_header_names))
    _row(
        "delivery",
        f"queue {config.max_queue_size} records or {config.max_queue_bytes / 2**20:.4g} MiB, "
        f"batch {config.max_export_batch_size}, "
        f"every {config.schedule_delay_seconds:g} s, up to {config.max_concurrency} in flight "
        f"({config.http_client}), request timeout {config.timeout_seconds:g} s, retry window "
        f"{config.export_timeout_seconds:g} s",
    )
    if not config.dry_run:
        reachable, detail = _probe(config, arguments.timeout)
        _row("connection", detail)
        if not reachable:
            problems.append(detail)
    _linking_rows()
    for problem in problems:
        print(f"problem: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _linking_rows() -> None:
    """How the last events of each running process of this user were linked. Said, not a
    problem: other processes' traffic must not change this check's exit status."""
    statuses = read_statuses()
    if not statuses:
        _row("linking", f"no running process has sent events yet (status in {status_dir()})")
        return
    for status in statuses:
        events, linked = int(status.get("events", 0)), int(status.get("linked", 0))
        unlinked: dict[str, int] = status.get("unlinked") or {}
        detail = f"process {status.get('pid')}: {linked} of its last {events} events linked"
        if unlinked:
            reasons = ", ".join(
                f"{count} {UNLINKED_REASONS.get(reason, reason).split(';')[0]}"
                for reason, count in sorted(unlinked.items())
            )
            detail += f"; without a conversation id: {reasons}"
            keys = status.get("id_like_keys") or []
            if keys:
                detail += (
                    f"; keys that look like one: {', '.join(keys)} (map one with "
                    f"{ENV_LINK_EXTRA_ALIASES}; docs/linking.md: Linking in GenAI stacks)"
                )
            else:
                detail += " (docs/linking.md: Linking in GenAI stacks)"
        _row("linking", detail)


def _row(name: str, value: str) -> None:
    print(f"  {name + ':':<16}{value}")


def _probe(config: GreenflashConfig, timeout: float) -> tuple[bool, str]:
    """POST an empty object: the API rejects it without creating anything, but its status
    tells whether the URL answers and whether the key is accepted."""
    import httpx  # only for the probe: the other commands start without it

    headers = {"User-Agent": user_agent(), **config.custom_headers}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    try:
        response = httpx.post(config.events_url, json={}, headers=headers, timeout=timeout)
    except httpx.HTTPError as error:
        return False, f"unreachable ({type(error).__name__})"
    status = response.status_code
    if status == 401:
        return False, "reachable, but the API key was rejected (HTTP 401)"
    if status == 403:
        return False, "reachable, but the key's plan does not allow events (HTTP 403)"
    if status == 404:
        return False, "reachable, but there is no events endpoint there (HTTP 404)"
    if status >= 500:
        return False, f"reachable, but the server failed (HTTP {status})"
    return True, f"reachable; key accepted (HTTP {status} for an empty test body)"


# -- serve -------------------------------------------------------------------------------------


def _serve(arguments: argparse.Namespace) -> int:
    from .testing import DEFAULT_API_KEY, TEST_PRODUCT_ID, EventsApiServer

    def print_event(event: Mapping[str, Any]) -> None:
        print(json.dumps(event, sort_keys=True), flush=True)

    server = EventsApiServer(
        arguments.api_key or DEFAULT_API_KEY,
        host=arguments.host,
        port=arguments.port,
        on_event=print_event,
        latency_seconds=arguments.latency_ms / 1000,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"Local Greenflash Events API on {server.base_url}", file=sys.stderr)
        print(
            "In another shell, point your app (or `otel-greenflash send`) at it:\n"
            f"  export GREENFLASH_BASE_URL={server.base_url} "
            f"GREENFLASH_API_KEY={server.api_key} "
            f"GREENFLASH_PRODUCT_ID={TEST_PRODUCT_ID}\n"
            "  otel-greenflash send upgrade_purchased 149 --value-type currency "
            "--external-conversation-id chat-1",
            file=sys.stderr,
            flush=True,
        )
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    return 0


# -- send --------------------------------------------------------------------------------------


def _send(arguments: argparse.Namespace) -> int:
    config = GreenflashConfig.resolve(
        product_id=arguments.product_id, dry_run=True if arguments.dry_run else None
    )
    attributes: dict[str, Any] = {attr.EVENT_TYPE: arguments.event_type}
    attributes[attr.EVENT_VALUE] = arguments.value
    optional = {
        attr.EVENT_VALUE_TYPE: arguments.value_type,
        attr.EVENT_INFLUENCE: arguments.influence,
        attr.CONVERSATION_ID: arguments.conversation_id,
        attr.CONVERSATION_EXTERNAL_ID: arguments.external_conversation_id,
        attr.USER_EXTERNAL_ID: arguments.user_external_id,
        attr.ORGANIZATION_EXTERNAL_ID: arguments.organization_external_id,
        attr.EVENT_INSERT_ID: arguments.insert_id,
    }
    attributes.update({key: value for key, value in optional.items() if value is not None})
    for item in arguments.property:
        key, separator, value = item.partition("=")
        if not separator or not key:
            print(f"--property {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        attributes[attr.EVENT_PROPERTIES_PREFIX + key] = value
    result = map_event_attributes(
        attributes,
        source_name="otel-greenflash send",
        insert_id=f"cli-{uuid.uuid4()}",
        time_ns=time.time_ns(),
        default_product_id=config.product_id,
    )
    for problem in result.invalid:
        print(f"invalid: {problem.describe()}", file=sys.stderr)
    if not result.events:
        return 2
    if not config.api_key and not config.dry_run:
        print(f"{ENV_API_KEY} is not set (use --dry-run to print the body)", file=sys.stderr)
        return 2
    if not (0 < arguments.timeout < 86_400):  # also refuses nan and inf
        print("--timeout must be a number of seconds between 0 and 86400", file=sys.stderr)
        return 2
    return _deliver(config, result.events[0], arguments.timeout)


def _deliver(config: GreenflashConfig, event: BusinessEvent, timeout: float) -> int:
    """Send one event, retrying for at most ``timeout`` seconds, and say what happened."""
    stats = DeliveryStats()
    errors: list[Exception] = []
    engine = DeliveryEngine(
        transport_for(config),
        stats,
        max_concurrency=1,
        retry_window_seconds=timeout,
        timeout_seconds=min(config.timeout_seconds, timeout),
        on_error=lambda error, events: errors.append(error),
    )
    if not config.dry_run:
        print(
            f"sending {event.event_type!r} to {config.events_url}, retrying for up to "
            f"{timeout:g} s (--timeout)",
            file=sys.stderr,
            flush=True,
        )
    engine.submit([event])
    engine.flush(timeout + 1)
    engine.shutdown(0)
    if stats.snapshot()["sent"]:
        if not config.dry_run:
            print(f"sent {event.event_type!r} (insertId {event.insert_id})")
        return 0
    reason = errors[0] if errors else f"no answer within {timeout:g} s"
    print(f"not sent: {reason}", file=sys.stderr)
    return 1


# -- spool -------------------------------------------------------------------------------------


def _spool(arguments: argparse.Namespace) -> int:
    from ._lane import spool as spool_files
    from .processor import GreenflashSpanProcessor

    directory = arguments.directory or GreenflashConfig.resolve().spool_dir
    if not directory:
        print(f"no spool directory: pass one or set {ENV_SPOOL_DIR}", file=sys.stderr)
        return 2
    if arguments.action == "inspect":
        summaries = spool_files.inspect(directory)
        for summary in summaries:
            owner = "live process" if summary.owned_by_live_process else "orphaned"
            age = f"{summary.oldest_age_seconds:.0f} s" if summary.oldest_age_seconds else "-"
            state = (
                f"{summary.pending} pending, {summary.rejected} rejected"
                if summary.pending >= 0
                else "unreadable (not a spool file of this version)"
            )
            where = f", for {summary.endpoint}" if summary.endpoint else ""
            print(f"{summary.path.name}: {state}, oldest {age}, {owner}{where}")
        total = sum(max(summary.pending, 0) for summary in summaries)
        print(f"{len(summaries)} file(s), {total} event(s) pending")
        return 0
    if arguments.action == "purge":
        print(f"deleted {spool_files.purge(directory)} orphaned spool file(s)")
        return 0
    if not GreenflashConfig.resolve().api_key:
        print(f"{ENV_API_KEY} is not set: nothing can be delivered", file=sys.stderr)
        return 2
    processor = GreenflashSpanProcessor(spool_dir=directory)  # adopts orphans at start
    delivered = processor.force_flush(int(arguments.timeout * 1000))
    stats = processor.stats()
    processor.shutdown(int(arguments.timeout * 1000))
    left = sum(max(summary.pending, 0) for summary in spool_files.inspect(directory))
    print(f"sent {stats['sent']}, failed {stats['failed']}, still pending {left}")
    return 0 if delivered and not stats["failed"] and not left else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
