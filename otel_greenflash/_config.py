"""Configuration: explicit argument, then environment variable, then default."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ENV_API_KEY = "GREENFLASH_API_KEY"
"""Greenflash API key, sent as ``Authorization: Bearer``. No default: without it nothing is sent."""

ENV_PRODUCT_ID = "GREENFLASH_PRODUCT_ID"
"""Default ``productId`` (UUID) for events whose spans carry no ``greenflash.product.id``."""

ENV_BASE_URL = "GREENFLASH_BASE_URL"
"""Events API base URL; events go to ``{base_url}/events``."""

DEFAULT_BASE_URL = "https://www.greenflash.ai/api/v1"
DEFAULT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class GreenflashConfig:
    """Resolved settings shared by the processor and the exporter. The key never appears in repr."""

    api_key: str | None = field(repr=False)
    product_id: str | None
    base_url: str
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def events_url(self) -> str:
        return self.base_url.rstrip("/") + "/events"

    @property
    def api_key_redacted(self) -> str:
        if not self.api_key:
            return "<not set>"
        return "****" + self.api_key[-4:] if len(self.api_key) >= 12 else "****"

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | None = None,
        product_id: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> GreenflashConfig:
        """Build a config from explicit arguments, falling back to ``environ`` (``os.environ``).

        Raises ``ValueError`` naming the setting when a value cannot be used.
        """
        env = os.environ if environ is None else environ
        key = api_key if api_key is not None else (env.get(ENV_API_KEY) or None)
        product = product_id if product_id is not None else (env.get(ENV_PRODUCT_ID) or None)
        url = base_url if base_url is not None else (env.get(ENV_BASE_URL) or DEFAULT_BASE_URL)
        timeout = DEFAULT_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds

        if key is not None:
            key = key.strip() or None
        if product is not None:
            try:
                product = str(uuid.UUID(product.strip()))
            except ValueError:
                raise ValueError(
                    f"product_id / {ENV_PRODUCT_ID} is not a UUID; expected a Greenflash "
                    "product id such as '123e4567-e89b-12d3-a456-426614174000'"
                ) from None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url / {ENV_BASE_URL} is not an absolute http(s) URL; "
                f"expected something like {DEFAULT_BASE_URL!r}"
            )
        if not timeout > 0:
            raise ValueError("timeout_seconds must be a positive number of seconds")
        return cls(api_key=key, product_id=product, base_url=url, timeout_seconds=timeout)
