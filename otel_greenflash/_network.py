"""Network settings: the Events API URL, the proxy the environment names, and whether the
API key may cross the network in clear.

Pure parsing and checks beneath :mod:`otel_greenflash._config`, which calls them while it
resolves the settings; :func:`proxy_from_environment` is also read at delivery (the proxy is
taken from the environment when the transport is built). Messages never quote a URL: even a
malformed one may carry a password or a token.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError

DEFAULT_BASE_URL = "https://www.greenflash.ai/api/v1"


class Endpoint(Protocol):
    """What :func:`check_transport_security` reads of the resolved settings."""

    @property
    def events_url(self) -> str: ...
    @property
    def api_key(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def allow_insecure_http(self) -> bool: ...
    @property
    def http_client(self) -> str: ...


def check_base_url(name: str, value: object) -> str:
    """The Events API base URL. Messages never quote it: even a malformed URL may carry a
    password or a token."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} has type {type(value).__name__}; allowed: a string")
    url = value.strip()
    try:
        address(url, ("http", "https"))
    except BadUrlError as problem:
        raise ConfigurationError(f"{name}: {problem}") from None
    if urlsplit(url).path.rstrip("/").endswith("/events"):
        raise ConfigurationError(
            f"{name}: the path ends with /events, but events go to {{base_url}}/events; "
            f"allowed: the API's base URL, e.g. {DEFAULT_BASE_URL!r}"
        )
    return url


@dataclass(frozen=True, slots=True)
class Address:
    """What a message may show of a checked URL: never user:password@, path or query."""

    scheme: str
    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port is None else f":{self.port}")


class BadUrlError(Exception):
    """What is wrong with a URL, in words that never quote it."""


def address(url: str, schemes: tuple[str, ...], *, credentials: bool = False) -> Address:
    """Check ``scheme://host[:port][/path]`` (``user:password@`` only when ``credentials``)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BadUrlError(
            "the URL contains whitespace or control characters; allowed: none "
            "(percent-encode them in the path)"
        )
    scheme, separator, rest = url.partition("://")
    # Credentials sit in the authority; an '@' in the path is just a path. Without '://' the
    # URL is refused below anyway, never quoted.
    if "@" in rest.partition("/")[0] and not credentials:
        raise BadUrlError(
            "the URL contains credentials (user:password@) or an '@'; allowed: a URL without "
            "them (use custom_headers / GREENFLASH_CUSTOM_HEADERS for extra authentication)"
        )
    if not separator:
        raise BadUrlError(
            "the value is not an absolute URL; allowed: scheme://host[:port][/path] with "
            f"scheme {' or '.join(schemes)}, e.g. {DEFAULT_BASE_URL!r}"
        )
    if scheme.lower() not in schemes:
        shown = f"scheme {scheme!r}" if _is_scheme(scheme) else "the URL's scheme"
        raise BadUrlError(f"{shown} is not supported; allowed: {' or '.join(schemes)}")
    if "?" in rest or "#" in rest:
        raise BadUrlError(
            "the URL has a query string or fragment; allowed: scheme://host[:port][/path]"
        )
    authority = rest.partition("/")[0]
    if credentials:
        authority = authority.rpartition("@")[2]
    host, port_text = _split_authority(authority)
    return Address(scheme.lower(), host.lower(), _port(port_text))


def _is_scheme(text: str) -> bool:
    return (
        0 < len(text) <= 16
        and text[0].isascii()
        and text[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "+-.") for c in text)
    )


def _split_authority(authority: str) -> tuple[str, str | None]:
    """``host[:port]`` or ``[ipv6][:port]`` → the host (no brackets) and the port text."""
    allowed = "allowed: a host name, an IPv4 address or [an IPv6 address]"
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket:
            raise BadUrlError(f"the host has a '[' without its ']'; {allowed}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadUrlError(f"the host in [ ] is not an IPv6 address; {allowed}") from None
        if after and not after.startswith(":"):
            raise BadUrlError(f"characters follow the host's ']'; {allowed}, then :port")
        return host, after[1:] if after else None
    host, colon, port_text = authority.partition(":")
    if not host:
        raise BadUrlError(f"the URL has no host; {allowed}")
    if not _is_host(host):
        raise BadUrlError(f"the host is not a valid host name or address; {allowed}")
    return host, port_text if colon else None


def _is_host(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    if all(c.isdigit() or c == "." for c in name):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return False
        return True
    labels = name.split(".")
    if len(name) > 253 or not all(0 < len(label) <= 63 for label in labels):
        return False
    if not all(c.isalnum() or c in "-_" for label in labels for c in label):
        return False
    if not name.isascii():
        try:
            name.encode("idna")
        except UnicodeError:
            return False
    return True


def _port(text: str | None) -> int | None:
    if not text:
        return None
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        raise BadUrlError("the port is not a number; allowed: 1-65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise BadUrlError(f"port {port} is out of range; allowed: 1-65535")
    return port


def check_transport_security(
    endpoint: Endpoint,
    environ: Mapping[str, str],
    *,
    base_url_name: str,
    insecure_variable: str,
    http_client_variable: str,
) -> None:
    """The API key crosses the network in clear only over a plain-http hop: refused unless
    that hop stays on this machine, or allow_insecure_http says so. The names are the
    settings' as messages show them."""
    events = address(endpoint.events_url, ("http", "https"))
    proxy = (
        proxy_from_environment(endpoint.events_url, environ)
        if endpoint.enabled and not endpoint.dry_run
        else None
    )
    proxy_address = (
        check_proxy(proxy, endpoint.http_client, events, http_client_variable) if proxy else None
    )
    if (
        events.scheme != "http"
        or not endpoint.api_key
        or endpoint.dry_run
        or endpoint.allow_insecure_http
    ):
        # An https:// events URL through any proxy is safe: the proxy only tunnels the TLS
        # connection (CONNECT), so the key stays encrypted end to end.
        return
    insecure = f"allow_insecure_http=True / {insecure_variable}=true"
    if not is_loopback(events.host):
        raise ConfigurationError(
            f"{base_url_name}: refusing to send the API key over plain http:// to {events}; "
            f"allowed: https://, a loopback host, or {insecure}"
        )
    if (
        proxy
        and proxy_address
        and proxy_address.scheme != "https"
        and not is_loopback(proxy_address.host)
    ):
        # Through a proxy, a plain-http request (key included) travels as sent.
        raise ConfigurationError(
            f"{proxy.variable}: refusing to send the API key over plain http:// through "
            f"the proxy {proxy_address} (for {events}, from {base_url_name}); allowed: an "
            f"https:// or loopback proxy, {events.host} in NO_PROXY, an https:// "
            f"{base_url_name}, or {insecure}"
        )


@dataclass(frozen=True, slots=True)
class ProxySetting:
    """The proxy the environment names for a URL, and the variable that names it."""

    variable: str
    url: str = field(repr=False)
    """``scheme://[user:password@]host[:port]`` (``http://`` added when the value has no
    scheme, as httpx and curl do)."""


def proxy_from_environment(url: str, environ: Mapping[str, str]) -> ProxySetting | None:
    """``<scheme>_PROXY``, else ``ALL_PROXY``, unless ``NO_PROXY`` covers the URL's host: the
    proxy the transport uses, read as ``urllib.request`` reads it (lower-case names win;
    ``HTTP_PROXY`` is ignored in a CGI request)."""
    parts = urlsplit(url)
    proxies = _environment_proxies(environ)
    no_proxy = proxies.get("no")
    if no_proxy is not None and _bypasses_proxy(parts.hostname or "", no_proxy[1]):
        return None
    found = proxies.get(parts.scheme) or proxies.get("all")
    if found is None:
        return None
    variable, value = found
    value = value.strip()
    return ProxySetting(variable, value if "://" in value else f"http://{value}")


def _environment_proxies(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``urllib.request.getproxies_environment()`` over any mapping, keeping each variable's
    name: scheme → (variable, value)."""
    proxies: dict[str, tuple[str, str]] = {}
    for name, value in environ.items():
        key = name.lower()
        if value and key.endswith("_proxy"):
            proxies[key[:-6]] = (name, value)
    if "REQUEST_METHOD" in environ:  # CVE-2016-1000110: a client's "Proxy:" header
        proxies.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy"):  # lower-case names win
            if value:
                proxies[name.lower()[:-6]] = (name, value)
            else:
                proxies.pop(name.lower()[:-6], None)
    return proxies


def _bypasses_proxy(host: str, no_proxy: str) -> bool:
    """``urllib.request.proxy_bypass_environment``: ``*``, or the host or a domain suffix."""
    if no_proxy == "*":
        return True
    host = host.lower()
    for name in no_proxy.split(","):
        name = name.strip().lstrip(".").lower()
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def check_proxy(
    proxy: ProxySetting, http_client: str, events: Address, http_client_variable: str
) -> Address:
    schemes: tuple[str, ...] = ("http", "https")
    if http_client == "httpx" and importlib.util.find_spec("socksio") is not None:
        schemes += ("socks5", "socks5h")
    scheme = proxy.url.partition("://")[0].lower()
    if scheme in ("socks5", "socks5h") and scheme not in schemes:
        raise ConfigurationError(
            f"{proxy.variable} (the proxy for {events}): a {scheme} proxy needs "
            f"http_client='httpx' / {http_client_variable}=httpx and the socksio package; "
            "allowed: an http:// or https:// proxy"
        )
    try:
        return address(proxy.url, schemes, credentials=True)
    except BadUrlError as problem:
        raise ConfigurationError(f"{proxy.variable} (the proxy for {events}): {problem}") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
