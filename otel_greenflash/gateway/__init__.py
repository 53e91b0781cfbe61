"""``otel-greenflash gateway``: OTLP in (HTTP and gRPC, traces and logs), business events out.

Every span and log record received goes through the library's pipeline, as in a process that
runs the processor: span attributes, span events and log-based business events become Events
API calls; other spans serve linking only and are never forwarded. With conversation capture
on (``GREENFLASH_CAPTURE_CONVERSATIONS``), LLM calls and evaluations become Messages and
Ratings API calls too. A request is acknowledged only once its business events are in the
durable spool.

Needs the ``gateway`` extra (``pip install 'otel-greenflash[gateway]'``); importing this package
does not, so the CLI can say so.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from .._config import ConfigurationError
from ._settings import GatewaySettings, add_arguments, resolve

__all__ = ["GatewaySettings", "add_arguments", "main", "run", "run_gateway"]

INSTALL_HINT = (
    "the gateway needs the 'gateway' extra (opentelemetry-proto and grpcio): "
    "pip install 'otel-greenflash[gateway]'"
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m otel_greenflash.gateway [flags]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="otel-greenflash gateway", description="Receive OTLP and report business events."
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


def run(arguments: argparse.Namespace) -> int:
    """Resolve settings from parsed flags and the environment, then run until SIGTERM."""
    try:
        import grpc  # type: ignore[import-untyped]  # noqa: F401
        import opentelemetry.proto  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    return run_gateway(resolve(arguments))


def run_gateway(settings: GatewaySettings) -> int:
    """Run the gateway with ``settings`` and the ``GREENFLASH_*`` pipeline settings."""
    from .. import GreenflashConfig
    from .._link.rules import LinkKeys
    from ._intake import DurableIntake
    from ._server import ListenError, serve

    _configure_logging()
    config = GreenflashConfig.resolve(spool_dir=settings.spool_dir, handle_sigterm=False)
    intake = DurableIntake(config)
    try:
        asyncio.run(serve(settings, intake, LinkKeys(config.aliases).all_keys))
    except ListenError as error:
        print(f"otel-greenflash gateway: {error}", file=sys.stderr)
        intake.shutdown(0)
        return 1
    return 0


def _configure_logging() -> None:
    """A service logs to stderr: INFO for the gateway, warnings for the library."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    logging.getLogger("otel_greenflash.gateway").setLevel(logging.INFO)
