"""One-call setup (:func:`configure`) and the ``opentelemetry-instrument`` hook."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from ._config import ENV_INSTALL_PROCESSOR, ConfigurationError, _parse_bool
from ._logging import logger
from .logs import GreenflashLogRecordProcessor
from .processor import GreenflashSpanProcessor

_lock = threading.Lock()
_installed: weakref.WeakKeyDictionary[TracerProvider, GreenflashSpanProcessor] = (
    weakref.WeakKeyDictionary()
)
_settings_used: weakref.WeakKeyDictionary[TracerProvider, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_installed_on_logs: weakref.WeakKeyDictionary[LoggerProvider, GreenflashLogRecordProcessor] = (
    weakref.WeakKeyDictionary()
)


def configure(**settings: Any) -> GreenflashSpanProcessor | None:
    """Install a :class:`GreenflashSpanProcessor` on the global SDK ``TracerProvider``, and a
    :class:`GreenflashLogRecordProcessor` (sharing its pipeline) on the global SDK
    ``LoggerProvider`` when one is set.

    Settings are the processor's keyword arguments; anything not given comes from the
    ``GREENFLASH_*`` environment variables. Creates and registers an SDK ``TracerProvider``
    only when none is set; never creates or replaces a ``LoggerProvider``, nor replaces yours.
    Idempotent: later calls return the span processor installed first. Returns None (with a
    warning) when the global tracer provider is not the SDK's.
    """
    with _lock:
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            logger.warning(
                "otel_greenflash.configure(): the global tracer provider is %s, not the "
                "OpenTelemetry SDK's TracerProvider; no processor was installed",
                type(provider).__name__,
            )
            return None
        existing = _installed.get(provider)
        if existing is not None:
            if settings:
                logger.debug("otel_greenflash.configure(): already configured; settings ignored")
            # A LoggerProvider set since the first call gets the same settings.
            _install_on_logger_provider(_settings_used.get(provider, {}))
            return existing
        processor = GreenflashSpanProcessor(**settings)
        provider.add_span_processor(processor)
        _installed[provider] = processor
        _settings_used[provider] = settings
        _install_on_logger_provider(settings)
        return processor


def _install_on_logger_provider(settings: dict[str, Any]) -> None:
    """Log records too, when the application set an SDK ``LoggerProvider`` (called with the
    lock held; the same settings make it share the span processor's pipeline)."""
    provider = get_logger_provider()
    if not isinstance(provider, LoggerProvider) or provider in _installed_on_logs:
        return
    log_processor = GreenflashLogRecordProcessor(**settings)
    provider.add_log_record_processor(log_processor)
    _installed_on_logs[provider] = log_processor


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
