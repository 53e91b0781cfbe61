"""Configuration: argument > environment variable > default, and clear errors for bad values."""

from __future__ import annotations

import threading

import pytest

from otel_greenflash import GreenflashSpanProcessor
from otel_greenflash._config import (
    DEFAULT_BASE_URL,
    ENVIRONMENT_VARIABLES,
    ConfigurationError,
    GreenflashConfig,
)
from tests.support.common import PRODUCT_ID

KEY = "gf_live_abcdefghijklmnop1234"


def resolve(env: dict[str, str] | None = None, **explicit: object) -> GreenflashConfig:
    return GreenflashConfig.resolve(environ=env or {}, **explicit)


def test_defaults() -> None:
    config = resolve()
    assert config.api_key is None
    assert config.base_url == DEFAULT_BASE_URL
    assert config.events_url == DEFAULT_BASE_URL + "/events"
    assert (config.max_queue_size, config.max_export_batch_size, config.max_concurrency) == (
        16384,
        512,
        64,
    )
    assert config.max_queue_bytes == 64 * 1024 * 1024
    assert config.max_pending == 2048  # the delivery loop's bound did not grow with the queue
    assert (config.schedule_delay_seconds, config.export_timeout_seconds) == (1.0, 300.0)
    assert config.send_delay_seconds == 0.005
    assert config.http_client == "aiohttp"
    assert (config.timeout_seconds, config.linger_seconds) == (10.0, 300.0)
    assert config.enabled
    assert not config.dry_run


def test_every_environment_variable_is_read() -> None:
    env = {
        "GREENFLASH_API_KEY": KEY,
        "GREENFLASH_PRODUCT_ID": PRODUCT_ID.upper(),
        "GREENFLASH_BASE_URL": "https://eu.example.test/api/v1",
        "GREENFLASH_CUSTOM_HEADERS": "X-Team: billing\nX-Env: staging\n",
        "GREENFLASH_ENABLED": "true",
        "GREENFLASH_DRY_RUN": "false",
        "GREENFLASH_ALLOW_INSECURE_HTTP": "false",
        "GREENFLASH_TIMEOUT": "2500",
        "GREENFLASH_BSP_SCHEDULE_DELAY": "200",
        "GREENFLASH_BSP_SEND_DELAY": "20",
        "GREENFLASH_BSP_MAX_QUEUE_SIZE": "100",
        "GREENFLASH_BSP_MAX_QUEUE_BYTES": "1048576",
        "GREENFLASH_BSP_MAX_EXPORT_BATCH_SIZE": "10",
        "GREENFLASH_BSP_EXPORT_TIMEOUT": "60000",
        "GREENFLASH_BSP_MAX_CONCURRENCY": "32",
        "GREENFLASH_LINK_LINGER": "1500",
        "GREENFLASH_LINK_MAX_WAITING": "7",
        "GREENFLASH_LINK_MAX_TRACES": "99",
        "GREENFLASH_LINK_ALIASES": "langfuse.session.id=greenflash.conversation.external_id",
    }
    config = resolve(env)
    assert config.api_key == KEY
    assert config.product_id == PRODUCT_ID
    assert config.base_url == "https://eu.example.test/api/v1"
    assert dict(config.custom_headers) == {"X-Team": "billing", "X-Env": "staging"}
    assert config.timeout_seconds == 2.5
    assert config.schedule_delay_seconds == 0.2
    assert config.send_delay_seconds == 0.02
    assert (config.max_queue_size, config.max_export_batch_size) == (100, 10)
    assert (config.max_queue_bytes, config.max_pending) == (1048576, 100)
    assert config.export_timeout_seconds == 60.0
    assert config.max_concurrency == 32
    assert (config.linger_seconds, config.max_waiting, config.max_traces) == (1.5, 7, 99)
    assert config.aliases == {"langfuse.session.id": "greenflash.conversation.external_id"}
    documented = set(ENVIRONMENT_VARIABLES)
    assert set(env) <= documented


def test_explicit_arguments_win_over_the_environment() -> None:
    env = {"GREENFLASH_API_KEY": KEY, "GREENFLASH_BSP_MAX_CONCURRENCY": "32"}
    config = resolve(env, api_key="explicit-key", max_concurrency=4)
    assert config.api_key == "explicit-key"
    assert config.max_concurrency == 4


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "GREENFLASH_BSP_MAX_QUEUE_SIZE",
            "lots",
            r"GREENFLASH_BSP_MAX_QUEUE_SIZE='lots' is not an",
        ),
        ("GREENFLASH_BSP_MAX_QUEUE_SIZE", "0", r"GREENFLASH_BSP_MAX_QUEUE_SIZE=0 is out of range"),
        ("GREENFLASH_BSP_MAX_CONCURRENCY", "5000", r"allowed: a whole number from 1 to 1024"),
        ("GREENFLASH_BSP_SCHEDULE_DELAY", "-5", r"allowed: 1 to 3.6e\+06 milliseconds"),
        ("GREENFLASH_TIMEOUT", "soon", r"GREENFLASH_TIMEOUT='soon' is not a number of millis"),
        ("GREENFLASH_DRY_RUN", "maybe", r"GREENFLASH_DRY_RUN='maybe' is not a boolean"),
        ("GREENFLASH_PRODUCT_ID", "my-product", r"GREENFLASH_PRODUCT_ID is not a UUID"),
        ("GREENFLASH_BASE_URL", "greenflash.ai", r"GREENFLASH_BASE_URL: the value is not an"),
        ("GREENFLASH_CUSTOM_HEADERS", "no colon here", r"line 1 is not 'Name: value'"),
        ("GREENFLASH_LINK_ALIASES", "session.id=conversation", r"allowed targets:"),
        ("OTEL_SDK_DISABLED", "sometimes", r"OTEL_SDK_DISABLED='sometimes' is not a boolean"),
    ],
)
def test_bad_environment_values_fail_at_construction_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=expected):
        GreenflashSpanProcessor()


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"max_concurrency=0 is out of range"):
        resolve(max_concurrency=0)
    with pytest.raises(ConfigurationError, match=r"timeout_seconds=0 is out of range"):
        resolve(timeout_seconds=0)
    with pytest.raises(ConfigurationError, match=r"max_queue_size has type str"):
        resolve(max_queue_size="10")


def test_batch_larger_than_queue_is_an_error_only_when_both_are_given() -> None:
    assert resolve(max_queue_size=100).max_export_batch_size == 100
    with pytest.raises(ConfigurationError, match="larger than max_queue_size"):
        resolve(max_queue_size=100, max_export_batch_size=200)


def test_the_key_never_appears_in_repr_or_errors() -> None:
    config = resolve({"GREENFLASH_API_KEY": KEY, "GREENFLASH_CUSTOM_HEADERS": "X-Token: s3cr3t"})
    assert KEY not in repr(config)
    assert "s3cr3t" not in repr(config)
    assert config.api_key_redacted == "****1234"
    with pytest.raises(ConfigurationError) as caught:
        resolve({"GREENFLASH_API_KEY": KEY, "GREENFLASH_BASE_URL": "http://events.example.test"})
    assert KEY not in str(caught.value)


def test_credentials_in_the_base_url_are_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigurationError, match="contains credentials") as caught:
        resolve(base_url="https://user:pa55word@events.example.test/api/v1")
    assert "pa55word" not in str(caught.value)


def test_plain_http_with_a_key_is_refused_except_loopback_or_when_allowed() -> None:
    with pytest.raises(ConfigurationError, match="refusing to send the API key over plain http"):
        resolve(api_key=KEY, base_url="http://events.example.test/api/v1")
    assert resolve(api_key=KEY, base_url="http://127.0.0.1:8080/api/v1")
    assert resolve(api_key=KEY, base_url="http://localhost:8080/api/v1")
    assert resolve(api_key=KEY, base_url="http://[::1]:8080/api/v1")
    assert resolve(
        {"GREENFLASH_ALLOW_INSECURE_HTTP": "true"},
        api_key=KEY,
        base_url="http://events.example.test/api/v1",
    )


@pytest.mark.parametrize(
    "env",
    [{"GREENFLASH_ENABLED": "false"}, {"OTEL_SDK_DISABLED": "true", "GREENFLASH_ENABLED": "1"}],
)
def test_disabled_processor_is_a_no_op_without_threads(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = threading.active_count()
    processor = GreenflashSpanProcessor(api_key=KEY)
    assert threading.active_count() == before
    assert not processor.config.enabled
    assert processor.force_flush() is True
    processor.shutdown()


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_qeue_size"):
        resolve(max_qeue_size=1)


def test_http_client_is_a_choice_of_two() -> None:
    assert resolve(http_client="HTTPX").http_client == "httpx"
    assert resolve({"GREENFLASH_HTTP_CLIENT": "Aiohttp"}).http_client == "aiohttp"
    with pytest.raises(ConfigurationError, match=r"GREENFLASH_HTTP_CLIENT is 'curl'; allowed"):
        resolve({"GREENFLASH_HTTP_CLIENT": "curl"})
    with pytest.raises(ConfigurationError, match=r"http_client is 'requests'; allowed"):
        resolve(http_client="requests")
