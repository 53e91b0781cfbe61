"""The library's errors: :class:`ConfigurationError` is raised by constructors for a bad
setting; the others are passed to ``on_error`` callbacks and never raised into application code.
"""

from __future__ import annotations


class GreenflashError(Exception):
    """Base class of this library's errors."""


class ConfigurationError(ValueError):
    """A setting has a value the library cannot use. Raised at construction only."""


class DeliveryError(GreenflashError):
    """Events could not be delivered. ``status`` is the last HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(DeliveryError):
    """401: the API key was rejected."""


class PermissionDeniedError(DeliveryError):
    """403: the key's plan does not allow the Events API."""


class EventRejectedError(DeliveryError):
    """A 4xx other than 401/403/408/429: the API refused the event; retrying would not help."""


class RetriesExhaustedError(DeliveryError):
    """Retryable failures (5xx, 408, 429, network) lasted past the event's deadline."""
