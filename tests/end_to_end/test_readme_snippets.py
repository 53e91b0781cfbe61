"""Every ```python block of README.md runs exactly as written, in a fresh interpreter.

Each snippet is taken from the README by position and run verbatim in a subprocess with a
clean environment holding only ``GREENFLASH_API_KEY``, ``GREENFLASH_BASE_URL`` and
``GREENFLASH_PRODUCT_ID`` (pointing at a fresh local Events API server). The test checks what
the snippet promises: the process exits 0 and prints nothing (no warning of any kind), and the
events it sends have arrived — with their conversation ids — by the time the process has
exited: snippets end right after emitting, so delivery at exit is what is tested.

``EXPECTED`` lists one entry per snippet, in README order. A snippet added, removed or moved
without updating it fails ``test_every_readme_snippet_is_covered``.
"""

from __future__ import annotations

import re
import signal
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from otel_greenflash.testing import EventsApiServer
from tests.conftest import PRODUCT_ID
from tests.support.processes import clean_env, run, run_script

README = Path(__file__).resolve().parents[2] / "README.md"

FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\s]*)\s*$")

# The id the helpers snippet stands in for messages.create's response.conversation_id.
HELPERS_CONVERSATION_ID = "5f0c6b2e-8d1a-4c3e-9b7f-2a4d6e8c0b13"

UPGRADE = {"eventType": "upgrade_purchased", "value": "149.00"}


@dataclass(frozen=True)
class Snippet:
    line: int
    """Line of the opening fence in README.md."""
    code: str


@dataclass(frozen=True)
class Expected:
    marker: str
    """Text the snippet must contain: a snippet moved to another position fails loudly."""
    kind: Literal["script", "pytest", "lambda"]
    events: list[dict[str, Any]] = field(default_factory=list)
    """Fields each event must have, one dict per event the snippet sends (any order)."""


EXPECTED: list[Expected] = [
    # 1. In your code: mark spans, install the processor.
    Expected(
        "provider.add_span_processor(GreenflashSpanProcessor())",
        "script",
        [
            {
                **UPGRADE,
                "valueType": "currency",
                "influence": "positive",
                "properties": {"plan": "pro"},
                "externalConversationId": "chat-8812",
            }
        ],
    ),
    # 2. The exporter: the event span is exported, linked through its root in the batch.
    Expected(
        "BatchSpanProcessor(GreenflashSpanExporter())",
        "script",
        [{**UPGRADE, "externalConversationId": "chat-8812"}],
    ),
    # 4. Log records: an OpenTelemetry event through configure()'s log record processor.
    Expected(
        "get_logger(__name__).emit(",
        "script",
        [{**UPGRADE, "valueType": "currency", "externalConversationId": "chat-8812"}],
    ),
    # 4. (continued) Python `logging` through the SDK's LoggingHandler, at INFO.
    Expected(
        "LoggingHandler(logger_provider=logger_provider)",
        "script",
        [{**UPGRADE, "externalConversationId": "chat-8812"}],
    ),
    # Helpers: conversation(), attach_conversation() learned after the event, track().
    Expected(
        "gf.attach_conversation(",
        "script",
        [
            {
                **UPGRADE,
                "valueType": "currency",
                "influence": "positive",
                "properties": {"plan": "pro"},
                "externalConversationId": "chat-8812",
                "externalUserId": "user-42",
                "conversationId": HELPERS_CONVERSATION_ID,
            }
        ],
    ),
    # Sampling: GreenflashSampler keeps the event of a span the 1 % ratio drops.
    Expected(
        "GreenflashSampler(ParentBased(TraceIdRatioBased(0.01)), record_unsampled=True)",
        "script",
        [{**UPGRADE, "externalConversationId": "chat-8812"}],
    ),
    # Serverless: a handler module; invoked, it delivers before returning.
    Expected(
        "@otel_greenflash.flush_after",
        "lambda",
        [
            {
                "eventType": "refund_issued",
                "value": "20.00",
                "valueType": "currency",
                "externalConversationId": "chat-8812",
            }
        ],
    ),
    # Testing your own code: pytest files using the plugin's fixtures.
    Expected("def test_upgrade_is_reported(greenflash_server):", "pytest"),
    Expected("def test_upgrade(greenflash_events):", "pytest"),
]


def readme_snippets(text: str) -> list[Snippet]:
    """The ```python blocks of ``text`` in order, each dedented by its fence's indentation."""
    snippets: list[Snippet] = []
    opened: tuple[int, str] | None = None  # (line, info string) of the open fence
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if opened is None:
            if fence is not None:
                opened, body = (number, fence["info"]), []
        elif fence is not None and fence["info"] == "":
            if opened[1] == "python":
                snippets.append(Snippet(opened[0], textwrap.dedent("\n".join(body) + "\n")))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"README.md: the fence opened on line {opened[0]} is never closed"
    return snippets


def python_fence_infos(text: str) -> list[str]:
    """Info strings of every fence that looks like Python (``py``, ``python3``, ``pycon``...)."""
    return [
        fence["info"]
        for line in text.splitlines()
        if (fence := FENCE.match(line)) is not None and fence["info"].lower().startswith("py")
    ]


SNIPPETS = readme_snippets(README.read_text())


def test_every_readme_snippet_is_covered() -> None:
    text = README.read_text()
    assert set(python_fence_infos(text)) == {"python"}, "tag Python snippets ```python"
    assert len(SNIPPETS) == len(EXPECTED), (
        f"README.md has {len(SNIPPETS)} ```python snippets (lines "
        f"{', '.join(str(snippet.line) for snippet in SNIPPETS)}); EXPECTED in this file covers "
        f"{len(EXPECTED)}: give every snippet its entry, in README order"
    )
    for snippet, expected in zip(SNIPPETS, EXPECTED, strict=True):
        assert expected.marker in snippet.code, (
            f"README.md line {snippet.line}: EXPECTED has an entry for another snippet here "
            f"(looked for {expected.marker!r})"
        )


def snippet_env(server: EventsApiServer) -> dict[str, str]:
    return clean_env(
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
    )


def assert_events(server: EventsApiServer, expected: list[dict[str, Any]]) -> None:
    """Exactly the expected events arrived, once each, every request accepted. Read right
    after the process ended, without waiting: anything still undelivered at exit is missing."""
    events = server.events
    assert len(events) == len(expected), events
    for wanted in expected:
        matching = [
            event
            for event in events
            if all(event.get(name) == value for name, value in wanted.items())
        ]
        assert len(matching) == 1, f"expected one event with {wanted}, got {events}"
    assert all(event["productId"] == PRODUCT_ID for event in events), events
    assert [request.status for request in server.requests] == [200] * len(events)
    assert server.duplicates == 0


def check_script(snippet: Snippet, expected: Expected, tmp_path: Path) -> None:
    with EventsApiServer() as server:
        result = run_script(tmp_path, snippet.code, snippet_env(server))
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
        assert result.stdout == "", result.stdout
        assert_events(server, expected.events)


def check_pytest(snippet: Snippet, tmp_path: Path) -> None:
    """A test file as the README shows it, collected by pytest with the plugin auto-loaded
    (as installing the package makes it); any warning fails it."""
    (tmp_path / "test_readme_snippet.py").write_text(snippet.code)
    with EventsApiServer() as server:
        result = run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-W",
                "error",
                "test_readme_snippet.py",
            ],
            snippet_env(server),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"^1 passed in ", result.stdout, re.MULTILINE), result.stdout
        assert "warning" not in result.stdout.lower(), result.stdout
        assert server.events == []  # the snippet used its own fixture, nothing leaked here


LAMBDA_RUNTIME = """\
import os
import signal

from lambda_function import handler

handler({"chat_id": "chat-8812", "amount": "20.00"}, None)
# The runtime freezes the process between invocations; nothing runs after the handler returns.
os.kill(os.getpid(), signal.SIGKILL)
"""


def check_lambda(snippet: Snippet, expected: Expected, tmp_path: Path) -> None:
    """Loaded on its own the module sends nothing; invoked the way the runtime does (import,
    call, then frozen: here SIGKILL, so no atexit and no shutdown), its event has arrived."""
    with EventsApiServer() as server:
        result = run_script(tmp_path, snippet.code, snippet_env(server))
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
        assert result.stdout == "", result.stdout
        assert_events(server, [])

    (tmp_path / "lambda_function.py").write_text(snippet.code)
    with EventsApiServer() as server:
        result = run_script(tmp_path, LAMBDA_RUNTIME, snippet_env(server))
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert result.stderr == "", result.stderr
        assert result.stdout == "", result.stdout
        assert_events(server, expected.events)


@pytest.mark.parametrize(
    "index",
    range(len(EXPECTED)),
    ids=[f"snippet{index + 1}" for index in range(len(EXPECTED))],
)
def test_readme_snippet_runs_as_written(index: int, tmp_path: Path) -> None:
    if index >= len(SNIPPETS):
        pytest.fail(f"README.md has only {len(SNIPPETS)} ```python snippets")
    snippet, expected = SNIPPETS[index], EXPECTED[index]
    assert expected.marker in snippet.code, f"README.md line {snippet.line}: see coverage test"
    if expected.kind == "script":
        check_script(snippet, expected, tmp_path)
    elif expected.kind == "pytest":
        check_pytest(snippet, tmp_path)
    else:
        check_lambda(snippet, expected, tmp_path)
