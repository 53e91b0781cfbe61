"""Configuration values that cannot work fail at construction with a ConfigurationError naming
the setting, the problem and what is allowed: URLs, proxies, the spool directory, headers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._config import ConfigurationError, GreenflashConfig
from otel_greenflash._deliver.transport import proxy_for

KEY = "gf_live_abcdefghijklmnop1234"
LOCAL = "http://127.0.0.1:8080/v1"


def resolve(env: dict[str, str] | None = None, /, **explicit: object) -> GreenflashConfig:
    return GreenflashConfig.resolve(environ=env or {}, **explicit)


def refusal(env: dict[str, str] | None = None, /, **explicit: object) -> str:
    with pytest.raises(ConfigurationError) as caught:
        resolve(env, **explicit)
    return str(caught.value)


# --------------------------------------------------------------------------- base URL


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1"])
def test_a_port_out_of_range_is_refused(port: str) -> None:
    url = f"https://events.example.test:{port}/v1"
    expected = f"port {int(port)} is out of range; allowed: 1-65535"
    assert refusal({"GREENFLASH_BASE_URL": url}) == f"GREENFLASH_BASE_URL: {expected}"
    assert refusal(base_url=url) == f"base_url: {expected}"


@pytest.mark.parametrize(
    "url",
    [
        "https://events example.test/v1",
        "https://events\texample.test/v1",
        "https://events$example.test/v1",
        "https://events%2Eexample.test/v1",
        "https://events..example.test/v1",
        "https://events.example.test:80a/v1",
        "https://[::1/v1",
        "https://[::1",
        "https://[not-an-address]/v1",
        "https://[::1]x/v1",
        "https://" + "a" * 64 + ".example.test/v1",
    ],
)
def test_a_malformed_host_or_port_is_refused_naming_the_variable(url: str) -> None:
    message = refusal({"GREENFLASH_BASE_URL": url})
    assert message.startswith("GREENFLASH_BASE_URL: ")
    assert "; allowed: " in message


@pytest.mark.parametrize("url", ["https:///v1", "https://:443/v1", "http://"])
def test_an_empty_host_is_refused(url: str) -> None:
    assert refusal(base_url=url).startswith("base_url: the URL has no host; allowed: ")


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("ftp://events.example.test/v1", "ftp"), ("ws://events.example.test", "ws")],
)
def test_a_scheme_other_than_http_or_https_is_refused(url: str, scheme: str) -> None:
    assert refusal(base_url=url) == (
        f"base_url: scheme {scheme!r} is not supported; allowed: http or https"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://events.example.test/v1?region=eu", "query string or fragment"),
        ("https://events.example.test/v1#top", "query string or fragment"),
        ("https://events.example.test/api/v1/events", "ends with /events"),
        ("https://events.example.test/api/v1/events/", "ends with /events"),
    ],
)
def test_a_base_url_that_cannot_form_the_events_url_is_refused(url: str, problem: str) -> None:
    assert problem in refusal(base_url=url)


def test_a_base_url_of_another_type_is_refused() -> None:
    assert refusal(base_url=b"https://events.example.test") == (
        "base_url has type bytes; allowed: a string"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://events.example.test/api/v1",
        "https://events.example.test:8443/api/v1/",
        "HTTPS://Events.Example.Test/v1",
        "https://[::1]:8443/v1",
        "https://10.0.0.7/v1",
        "http://localhost:8080",
        "https://events-eu_1.example.test./v1",
        "https://bücher.example/v1",
    ],
)
def test_good_base_urls_are_still_accepted(url: str) -> None:
    assert resolve(api_key=KEY, base_url=url).base_url == url


def test_the_plain_http_refusal_names_the_variable_or_the_argument() -> None:
    url = "http://events.example.test:8080/v1"
    from_environment = refusal({"GREENFLASH_BASE_URL": url, "GREENFLASH_API_KEY": KEY})
    assert from_environment.startswith(
        "GREENFLASH_BASE_URL: refusing to send the API key over plain http:// to "
        "http://events.example.test:8080; allowed: "
    )
    as_argument = refusal({"GREENFLASH_BASE_URL": url}, api_key=KEY, base_url=url)
    assert as_argument.startswith("base_url: refusing to send the API key over plain http://")


# --------------------------------------------------------------------------- proxies


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_a_plain_http_proxy_for_a_plain_http_url_is_refused_naming_the_variable(
    variable: str,
) -> None:
    env = {variable: "http://proxy.example.test:3128"}
    message = refusal(env, api_key=KEY, base_url=LOCAL)
    assert message.startswith(
        f"{variable}: refusing to send the API key over plain http:// through the proxy "
        "http://proxy.example.test:3128 (for http://127.0.0.1:8080, from base_url); allowed: "
    )
    assert "NO_PROXY" in message
    assert "GREENFLASH_ALLOW_INSECURE_HTTP=true" in message


def test_the_proxy_refusal_happens_when_the_processor_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.test:3128")
    with pytest.raises(ConfigurationError, match=r"^HTTP_PROXY: refusing"):
        GreenflashSpanProcessor(api_key=KEY, base_url=LOCAL)


@pytest.mark.parametrize(
    ("env", "settings"),
    [
        ({"HTTP_PROXY": "http://proxy.example.test:3128", "NO_PROXY": "127.0.0.1"}, {}),
        ({"HTTP_PROXY": "http://proxy.example.test:3128", "no_proxy": "localhost, 127.0.0.1"}, {}),
        ({"HTTP_PROXY": "http://127.0.0.1:3128"}, {}),
        ({"HTTP_PROXY": "http://localhost:3128"}, {}),
        ({"HTTP_PROXY": "https://proxy.example.test:3128"}, {}),
        ({"HTTP_PROXY": "http://proxy.example.test:3128"}, {"allow_insecure_http": True}),
        (
            {
                "HTTP_PROXY": "http://proxy.example.test:3128",
                "GREENFLASH_ALLOW_INSECURE_HTTP": "true",
            },
            {},
        ),
        ({"HTTP_PROXY": "http://proxy.example.test:3128"}, {"dry_run": True}),
        ({"HTTP_PROXY": "http://proxy.example.test:3128"}, {"api_key": None}),
        ({"HTTPS_PROXY": "http://proxy.example.test:3128"}, {}),
    ],
)
def test_proxies_that_keep_the_key_safe_are_accepted(
    env: dict[str, str], settings: dict[str, object]
) -> None:
    assert resolve(env, **{"api_key": KEY, "base_url": LOCAL, **settings})


def test_a_plain_http_proxy_for_an_https_url_is_accepted() -> None:
    """CONNECT tunnels the TLS connection: the proxy never sees the key."""
    env = {"HTTPS_PROXY": "http://proxy.example.test:3128"}
    assert resolve(env, api_key=KEY)
    assert proxy_for("https://www.greenflash.ai/api/v1/events", env) == (
        "http://proxy.example.test:3128"
    )


@pytest.mark.parametrize(
    ("proxy", "problem"),
    [
        ("ftp://proxy.example.test", "scheme 'ftp' is not supported; allowed: http or https"),
        ("http://proxy.example.test:99999", "port 99999 is out of range; allowed: 1-65535"),
        ("http://proxy.example.test:0", "port 0 is out of range; allowed: 1-65535"),
        ("http://proxy example.test:3128", "whitespace or control characters"),
        ("http://:3128", "the URL has no host"),
        ("socks5://proxy.example.test:1080", "a socks5 proxy needs http_client='httpx'"),
    ],
)
def test_a_proxy_that_cannot_work_is_refused_naming_the_variable(
    proxy: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(ConfigurationError) as caught:
        GreenflashSpanProcessor(api_key=KEY)
    message = str(caught.value)
    assert message.startswith("HTTPS_PROXY (the proxy for https://www.greenflash.ai): ")
    assert problem in message


def test_a_proxy_without_a_scheme_is_read_as_http_like_httpx_and_curl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "proxy-user:p4ss@proxy.example.test:3128")
    processor = GreenflashSpanProcessor(api_key=KEY, handle_sigterm=False)
    processor.shutdown(1000)
    url = "https://www.greenflash.ai/api/v1/events"
    assert proxy_for(url) == "http://proxy-user:p4ss@proxy.example.test:3128"


def test_proxy_for_reads_the_environment_as_urllib_does() -> None:
    url = "http://events.example.test/v1/events"
    assert proxy_for(url, {"HTTP_PROXY": "http://a:1", "http_proxy": "http://b:2"}) == (
        "http://b:2"
    )
    assert proxy_for(url, {"ALL_PROXY": "http://a:1"}) == "http://a:1"
    assert proxy_for(url, {"HTTP_PROXY": "http://a:1", "NO_PROXY": ".example.test"}) is None
    assert proxy_for(url, {"HTTP_PROXY": "http://a:1", "NO_PROXY": "*"}) is None
    assert proxy_for(url, {"HTTP_PROXY": "http://a:1", "REQUEST_METHOD": "GET"}) is None
    assert proxy_for(url, {"HTTPS_PROXY": "http://a:1"}) is None
    assert proxy_for(url, {}) is None


def test_a_disabled_or_dry_run_processor_ignores_proxies() -> None:
    env = {"HTTPS_PROXY": "ftp://proxy.example.test"}
    assert resolve(env, api_key=KEY, enabled=False)
    assert resolve(env, api_key=KEY, dry_run=True)


# --------------------------------------------------------------------------- spool directory


def test_a_spool_dir_that_is_a_device_is_refused() -> None:
    assert refusal({"GREENFLASH_SPOOL_DIR": "/dev/null"}) == (
        "GREENFLASH_SPOOL_DIR: '/dev/null' exists and is not a directory; allowed: a "
        "directory, or a path where one can be created"
    )


def test_a_spool_dir_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "events.db"
    file.write_text("")
    assert refusal(spool_dir=str(file)).startswith(
        f"spool_dir: {str(file)!r} exists and is not a directory; allowed: "
    )


def test_a_spool_dir_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "events.db"
    file.write_text("")
    under = file / "spool" / "deeper"
    assert refusal({"GREENFLASH_SPOOL_DIR": str(under)}).startswith(
        f"GREENFLASH_SPOOL_DIR: {str(file)!r} is not a directory, so {str(under)!r} cannot be "
        "created under it; allowed: "
    )


def test_a_spool_dir_is_checked_without_being_created(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet"
    assert resolve(spool_dir=str(missing)).spool_dir == str(missing)
    assert resolve(spool_dir=tmp_path).spool_dir == str(tmp_path)
    assert not (tmp_path / "not").exists()


def test_a_spool_dir_not_writable_yet_is_accepted_and_falls_back_at_use(tmp_path: Path) -> None:
    """A volume may be mounted, or given its owner, after start; a read-only root file system
    must not stop the app: the spool says so at its first use and events stay in memory."""
    if os.name != "posix" or not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    assert resolve(spool_dir="/proc/self/spool").spool_dir == "/proc/self/spool"


# --------------------------------------------------------------------------- custom headers


@pytest.mark.parametrize(
    "header",
    [
        "Content-Length",
        "transfer-encoding",
        "HOST",
        "Authorization",
        "Connection",
        "Content-Type",
        "Content-Encoding",
        "Expect",
        "Upgrade",
    ],
)
def test_headers_owned_by_the_library_or_by_http_are_refused(header: str) -> None:
    secret = "h34der-v4lue"
    from_environment = refusal(
        {"GREENFLASH_CUSTOM_HEADERS": f"X-Team: billing\n{header}: {secret}"}
    )
    assert from_environment.startswith(f"GREENFLASH_CUSTOM_HEADERS: {header!r} ")
    assert "; allowed: other headers" in from_environment
    as_argument = refusal(custom_headers={header: secret})
    assert as_argument.startswith(f"custom_headers: {header!r} ")
    assert secret not in from_environment + as_argument


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("s3cr3t\r\nX-Injected: 1", "contains a line break"),
        ("s3cr3t\n", "contains a line break"),
        ("s3cr3t\x01", "contains a control character"),
        ("s3cr3t\x7f", "contains a control character"),
        ("s3cr3té", "contains non-ASCII characters"),
        (" s3cr3t", "starts or ends with a space or tab"),
        ("s3cr3t\t", "starts or ends with a space or tab"),
    ],
)
def test_header_values_that_break_every_send_are_refused_without_being_shown(
    value: str, problem: str
) -> None:
    message = refusal(custom_headers={"X-Token": value})
    assert message.startswith(f"custom_headers: the value of 'X-Token' {problem}; allowed: ")
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("X Token", "7 characters, with a space"),
        ("X-Token:", "8 characters, with a separator such as ':' or '='"),
        ("X\r\nToken", "8 characters, with a control character"),
        ("X-Tökén", "7 characters, with a non-ASCII character"),
        ("", "empty"),
        ("X/Y", "3 characters, with a separator such as ':' or '='"),
    ],
)
def test_invalid_header_names_are_refused_without_being_shown(name: str, shape: str) -> None:
    message = refusal(custom_headers={name: "v"})
    assert message == (
        f"custom_headers: a header name ({shape}) is not a header name; allowed: letters, "
        "digits and !#$%&'*+-.^_`|~"
    )


def test_a_header_name_holding_the_api_key_is_refused_without_being_shown() -> None:
    """Issue 20: a key pasted where a header belongs must not reach errors or `check`."""
    key = "gf_live_s3cr3tKEY"
    for headers in ({f"{key} x": "v"}, {key: "v"}, {f"X-{key}": "v"}):
        message = refusal(api_key=key, custom_headers=headers)
        assert "s3cr3t" not in message
        assert "header name" in message
    env = {"GREENFLASH_API_KEY": key, "GREENFLASH_CUSTOM_HEADERS": key}
    assert "s3cr3t" not in refusal(env)


def test_ordinary_custom_headers_are_still_accepted() -> None:
    headers = {"X-Team": "billing", "User-Agent": "acme/1.0", "X-Empty": "", "X-A": "a\tb c"}
    assert dict(resolve(custom_headers=headers).custom_headers) == headers


# --------------------------------------------------------------------------- other arguments


@pytest.mark.parametrize(
    "argument", ["enabled", "dry_run", "allow_insecure_http", "handle_sigterm"]
)
def test_a_switch_given_as_a_string_is_refused(argument: str) -> None:
    """``enabled="false"`` used to be truthy: the opposite of what it says."""
    assert refusal(**{argument: "false"}) == f"{argument} has type str; allowed: True or False"
    assert refusal(**{argument: 2}) == f"{argument} has type int; allowed: True or False"
    assert getattr(resolve(**{argument: 0}), argument) is False  # 0 and 1 read as booleans


def test_an_at_sign_in_the_path_is_not_taken_for_credentials() -> None:
    url = "https://gateway.example.com/@greenflash/api/v1"
    assert resolve(base_url=url).base_url == url


def test_aliases_given_as_an_argument_are_checked_by_the_configuration() -> None:
    message = refusal(aliases={"langfuse.session.id": "session"})
    assert message.startswith("aliases: 'langfuse.session.id' -> 'session' is not ")
    assert "allowed targets: greenflash.product.id" in message


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("timeout_seconds", float("inf")),
        ("timeout_seconds", float("nan")),
        ("export_timeout_seconds", -1.0),
        ("linger_seconds", float("-inf")),
        ("max_queue_size", -1),
        ("max_queue_bytes", -1),
        ("max_concurrency", 1.5),
    ],
)
def test_non_finite_or_negative_numbers_are_refused(argument: str, value: float) -> None:
    assert refusal(**{argument: value}).startswith(argument)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GREENFLASH_TIMEOUT", "inf"),
        ("GREENFLASH_TIMEOUT", "nan"),
        ("GREENFLASH_BSP_EXPORT_TIMEOUT", "-1"),
        ("GREENFLASH_TERMINATION_TIMEOUT", "Infinity"),
        ("GREENFLASH_SPOOL_MAX_EVENTS", "-5"),
    ],
)
def test_non_finite_or_negative_environment_values_are_refused(variable: str, value: str) -> None:
    assert refusal({variable: value}).startswith(variable)
