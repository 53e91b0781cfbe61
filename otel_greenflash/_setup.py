"""One-call setup (:func:`configure`) and the ``opentelemetry-instrument`` hook."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, cast

from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk.trace import TracerProvider

from ._config import ENV_INSTALL_PROCESSOR, ConfigurationError, _parse_bool
from ._logging import logger
from ._providers import ProviderFinder, takes_processors, watch_new_providers
from .logs import GreenflashLogRecordProcessor
from .processor import GreenflashSpanProcessor

_lock = threading.Lock()


class _Installed:
    """Providers configure() installed on, found by identity (proxies such as Logfire's are
    dataclasses: unhashable, so no weak-keyed dictionary)."""

    def __init__(self) -> None:
        self._entries: list[tuple[weakref.ref[Any], Any, dict[str, Any]]] = []

    def get(self, provider: object) -> tuple[Any, dict[str, Any]] | None:
        self._entries = [entry for entry in self._entries if entry[0]() is not None]
        for reference, installed, settings in self._entries:
            if reference() is provider:
                return installed, settings
        return None

    def add(self, provider: object, installed: Any, settings: dict[str, Any]) -> None:
        self._entries.append((weakref.ref(provider), installed, settings))


_installed = _Installed()
_installed_on_logs = _Installed()
_finder: ProviderFinder | None = None


def provider_finder() -> ProviderFinder | None:
    """What puts the processor configure() made on providers found in its traces."""
    return _finder


def configure(**settings: Any) -> GreenflashSpanProcessor | None:
    """Install a :class:`GreenflashSpanProcessor` on the global tracer provider, and a
    :class:`GreenflashLogRecordProcessor` (sharing its pipeline) on the global logger provider
    when one is set.

    Settings are the processor's keyword arguments; anything not given comes from the
    ``GREENFLASH_*`` environment variables. Any provider with ``add_span_processor`` takes it:
    the SDK's, and proxies wrapping one (Logfire's). Creates and registers an SDK
    ``TracerProvider`` only when none is set; never creates or replaces a ``LoggerProvider``,
    nor replaces yours. Other SDK providers get the processor's hooks too: those created after
    this call as they are created (Logfire configured later, a library's own provider), older
    ones when a span of theirs shows up in a trace next to ours. Idempotent: later calls return
    the span processor installed first.

    A global provider that takes no span processor gets none (a warning says what to do);
    the processor is still returned, live, so ``track()`` and log records reach Greenflash.
    """
    global _finder
    with _lock:
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
        existing = _installed.get(provider)
        if existing is not None:
            if settings:
                logger.debug("otel_greenflash.configure(): already configured; settings ignored")
            # A LoggerProvider set since the first call gets the same settings.
            _install_on_logger_provider(existing[1])
            return cast(GreenflashSpanProcessor, existing[0])
        processor = GreenflashSpanProcessor(**settings)
        if takes_processors(provider):
            provider.add_span_processor(processor)  # type: ignore[attr-defined]
        else:
            logger.warning(
                "otel_greenflash.configure(): the global tracer provider (%s) takes no span "
                "processor; SDK providers created from now on, and those found in traces, get "
                "its hooks; for any other, pass the processor configure() returns to it "
                "(provider.add_span_processor(processor)). Meanwhile track() and log-based "
                "events are sent directly, linked through their trace and baggage",
                type(provider).__name__,
            )
        _installed.add(provider, processor, settings)
        if _finder is None:
            _finder = ProviderFinder(processor)
            processor._find_unseen_parents(_finder.parent_of)
            watch_new_providers(_finder)
        _install_on_logger_provider(settings)
        return processor


def _install_on_logger_provider(settings: dict[str, Any]) -> None:
    """Log records too, when the application set a logger provider that takes processors
    (the SDK's, or a proxy that passes them on); called with the lock held. The same settings
    make it share the span processor's pipeline."""
    provider = get_logger_provider()
    if not callable(getattr(provider, "add_log_record_processor", None)):
        return
    if _installed_on_logs.get(provider) is not None:
        return
    log_processor = GreenflashLogRecordProcessor(**settings)
    provider.add_log_record_processor(log_processor)  # type: ignore[attr-defined]
    _installed_on_logs.add(provider, log_processor, settings)


def install_from_environment() -> None:
    """``opentelemetry_post_instrument`` hook: runs after ``opentelemetry-instrument`` set up the
    SDK; installs the processor when ``GREENFLASH_INSTALL_PROCESSOR=true``. Never raises."""
    try:
        if not _parse_bool(ENV_INSTALL_PROCESSOR, os.environ.get(ENV_INSTALL_PROCESSOR, "")):
            return
        for variable in ("OTEL_TRACES_EXPORTER", "OTEL_LOGS_EXPORTER"):
            exporters = os.environ.get(variable, "")
            if "greenflash" in {name.strip() for name in exporters.split(",")}:
                logger.warning(
                    "both %s=greenflash and %s=true are set: events are sent twice (the API "
                    "keeps one per insertId); choose one",
                    variable,
                    ENV_INSTALL_PROCESSOR,
                )
        configure()
    except ConfigurationError as error:
        logger.error("otel_greenflash not installed: %s", error)
    except Exception:
        logger.exception("otel_greenflash not installed")
