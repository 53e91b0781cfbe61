"""401/403: one error line, then no requests for a while, then one probe. Pure state, no I/O.
One gate per endpoint: a plan may allow one API and not another."""

from __future__ import annotations

from .._event import Endpoint
from .._exceptions import AuthenticationError, DeliveryError, PermissionDeniedError
from .._logging import logger

AUTH_PAUSE_SECONDS = 300.0
"""After a 401/403, events fail without a request for this long, then one request probes."""


class AuthGate:
    """Decides whether a request to one endpoint may be sent while the API key is refused
    there."""

    def __init__(
        self, pause_seconds: float = AUTH_PAUSE_SECONDS, endpoint: Endpoint = Endpoint.EVENTS
    ) -> None:
        self._pause_seconds = pause_seconds
        self._endpoint = endpoint
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
            logger.warning("Greenflash accepts the API key again; sending resumes%s", self._where)

    def refused(self, status: int, now: float) -> DeliveryError:
        """The API answered 401 or 403: pause, say so once, return the events' error."""
        error: DeliveryError
        if status == 401:
            error = AuthenticationError("the API key was rejected (HTTP 401)", status=401)
            cause = "the API key was rejected; check GREENFLASH_API_KEY"
        elif self._endpoint is Endpoint.EVENTS:
            error = PermissionDeniedError("the API key may not send events (HTTP 403)", status=403)
            cause = "the API key's plan does not allow the Events API"
        else:
            api = _API_NAMES[self._endpoint]
            error = PermissionDeniedError(
                f"the API key may not use the {api} (HTTP 403)", status=403
            )
            cause = f"the API key's plan does not allow the {api}"
        first = self.error is None
        self.error = error
        self._paused_until = now + self._pause_seconds
        self._probing = False
        if first:
            logger.error(
                "Greenflash answered HTTP %s: %s. %s fail without being sent for the next "
                "%d s, then one request checks again.",
                status,
                cause,
                _FAILING[self._endpoint],
                self._pause_seconds,
            )
        return error

    @property
    def _where(self) -> str:
        return "" if self._endpoint is Endpoint.EVENTS else f" to /{self._endpoint}"


_API_NAMES = {
    Endpoint.EVENTS: "Events API",
    Endpoint.MESSAGES: "Messages API",
    Endpoint.RATINGS: "Ratings API",
}
_FAILING = {
    Endpoint.EVENTS: "Business events",
    Endpoint.MESSAGES: "Messages API requests",
    Endpoint.RATINGS: "Ratings",
}
