"""Report business events from OpenTelemetry spans and log records to Greenflash.

Mark a span, a span event or a log record with ``greenflash.event.type`` (and friends, see
:mod:`otel_greenflash.attributes`), install :class:`GreenflashSpanProcessor` (and
:class:`GreenflashLogRecordProcessor` for log records), and each becomes one Events API call,
linked to the conversation found in its trace.
"""

from ._config import ConfigurationError, GreenflashConfig
from ._event import BusinessEvent, InvalidAttribute
from ._exceptions import (
    AuthenticationError,
    DeliveryError,
    EventRejectedError,
    GreenflashError,
    PermissionDeniedError,
    RetriesExhaustedError,
)
from ._helpers import ConversationScope, attach_conversation, conversation, rate, track
from ._lifecycle.termination import install_sigterm_handler
from ._link.rules import DEFAULT_ALIASES
from ._serverless import flush, flush_after
from ._setup import configure
from ._stats import StatsSnapshot
from ._version import __version__
from .exporter import GreenflashSpanExporter
from .logs import GreenflashLogRecordExporter, GreenflashLogRecordProcessor
from .processor import GreenflashSpanProcessor
from .sampling import GreenflashSampler

__all__ = [
    "DEFAULT_ALIASES",
    "AuthenticationError",
    "BusinessEvent",
    "ConfigurationError",
    "ConversationScope",
    "DeliveryError",
    "EventRejectedError",
    "GreenflashConfig",
    "GreenflashError",
    "GreenflashLogRecordExporter",
    "GreenflashLogRecordProcessor",
    "GreenflashSampler",
    "GreenflashSpanExporter",
    "GreenflashSpanProcessor",
    "InvalidAttribute",
    "PermissionDeniedError",
    "RetriesExhaustedError",
    "StatsSnapshot",
    "__version__",
    "attach_conversation",
    "configure",
    "conversation",
    "flush",
    "flush_after",
    "install_sigterm_handler",
    "rate",
    "track",
]
