"""401/403: one error line, then no requests for a while, then one probe. Pure state, no I/O."""

from __future__ import annotations

from .._exceptions import AuthenticationError, DeliveryError, PermissionDeniedError
from .._logging import logger

AUTH_PAUSE_SECONDS = 300.0
"""After a 401/403, events fail without a request for this long, then one request probes."""


class AuthGate:
    """Decides whether an event may be sent while the API key is refused."""

    def __init__(self, pause_seconds: float = AUTH_PAUSE_SECONDS) -> None:
        self._pause_seconds = pause_seconds
        self.error: DeliveryError | None = None
        self._paused_until = 0.0
        self._probing = False

    def refusal(self, now: float) -> DeliveryError | None:
        """The error to fail an event with instead of sending it, or None: send it (the first
        event after the pause goes out alone, as a probe)."""
        if self.error is None:
            return None
        if now < self._paused_until or self._probing:
            return self.error
        self._probing = True
        return None

    def answered(self, status: int | None) -> None:
        """Any answer but 401/403 means the key works again; a probe that got no answer at
        all (network error, timeout) lets the next event probe."""
        if self.error is None:
            return
        if status is None:
            self._probing = False
        elif status not in (401, 403):
            self._probing = False
            self.error = None
            logger.warning("Greenflash accepts the API key again; sending resumes")

    def refused(self, status: int, now: float) -> DeliveryError:
        """The API answered 401 or 403: pause, say so once, return the events' error."""
        error: DeliveryError
        if status == 401:
            error = AuthenticationError("the API key was rejected (HTTP 401)", status=401)
            cause = "the API key was rejected; check GREENFLASH_API_KEY"
        else:
            error = PermissionDeniedError("the API key may not send events (HTTP 403)", status=403)
            cause = "the API key's plan does not allow the Events API"
        first = self.error is None
        self.error = error
        self._paused_until = now + self._pause_seconds
        self._probing = False
        if first:
            logger.error(
                "Greenflash answered HTTP %s: %s. Business events fail without being sent "
                "for the next %d s, then one request checks again.",
                status,
                cause,
                self._pause_seconds,
            )
        return error
