"""Every ```python block of README.md and docs/**/*.md runs exactly as written, in a fresh
interpreter.

Each snippet is found by the text it contains (``Expected.marker``) in the document it belongs
to, and run verbatim in a subprocess with a clean environment holding only
``GREENFLASH_API_KEY``, ``GREENFLASH_BASE_URL`` and ``GREENFLASH_PRODUCT_ID`` (pointing at a
fresh local Events API server). The test checks what the snippet promises: the process exits 0
and prints nothing (no warning of any kind), and the events it sends have arrived — with their
conversation ids — by the time the process has exited: snippets end right after emitting, so
delivery at exit is what is tested.

``EXPECTED`` has one entry per snippet. A snippet added, removed or changed so that its entry no
longer finds it fails ``test_every_snippet_is_covered``. A block that is only an illustration
can be left out by the line right above its fence, ``<!-- snippet: not run, <reason> -->``;
the reason is required, and the pages show it to no one, so keep such blocks rare.
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

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\s]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!-- snippet: not run, (?P<reason>.*\S.*) -->\s*$")

# The id the helpers snippet stands in for messages.create's response.conversation_id.
HELPERS_CONVERSATION_ID = "5f0c6b2e-8d1a-4c3e-9b7f-2a4d6e8c0b13"

UPGRADE = {"eventType": "upgrade_purchased", "value": "149.00"}


@dataclass(frozen=True)
class Snippet:
    document: str
    """Path of the Markdown file, relative to the repository root."""
    line: int
    """Line of the opening fence."""
    code: str
    not_run: str | None = None
    """Why the snippet is not run (from the comment above its fence), or None."""

    @property
    def where(self) -> str:
        return f"{self.document} line {self.line}"


@dataclass(frozen=True)
class Expected:
    name: str
    """The test id."""
    document: str
    marker: str
    """Text the snippet must contain: a snippet changed or moved elsewhere fails loudly."""
    kind: Literal["script", "pytest", "lambda"]
    events: list[dict[str, Any]] = field(default_factory=list)
    """Fields each event must have, one dict per event the snippet sends (any order)."""
    ratings: list[dict[str, Any]] = field(default_factory=list)
    """The same for the ratings it sends (``POST /ratings``)."""


EXPECTED: list[Expected] = [
    # Conversations and ratings: switching capture on; rate() in and outside a scope.
    Expected(
        "conversations-switch",
        "docs/conversations.md",
        "otel_greenflash.configure(capture_conversations=True)",
        "script",
    ),
    Expected(
        "rate",
        "docs/conversations.md",
        'otel_greenflash.rate("up", feedback="solved it")',
        "script",
        ratings=[
            {"rating": 1, "ratingMax": 1, "externalConversationId": "chat-8812"},
            {"rating": 4, "ratingMax": 5, "externalConversationId": "chat-8812"},
        ],
    ),
    # README: the first way to use it, configure() and a conversation scope.
    Expected(
        "readme-configure",
        "README.md",
        'with otel_greenflash.conversation(external_id="chat-8812"):',
        "script",
        [{**UPGRADE, "valueType": "currency", "externalConversationId": "chat-8812"}],
    ),
    # Getting started, 1. In your code: mark spans, install the processor.
    Expected(
        "processor",
        "docs/getting-started.md",
        "provider.add_span_processor(GreenflashSpanProcessor())   # reads GREENFLASH_* env vars",
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
        "exporter",
        "docs/getting-started.md",
        "BatchSpanProcessor(GreenflashSpanExporter())",
        "script",
        [{**UPGRADE, "externalConversationId": "chat-8812"}],
    ),
    # 4. Log records: an OpenTelemetry event through configure()'s log record processor.
    Expected(
        "log-record",
        "docs/getting-started.md",
        "get_logger(__name__).emit(",
        "script",
        [{**UPGRADE, "valueType": "currency", "externalConversationId": "chat-8812"}],
    ),
    # 4. (continued) Python `logging` through the SDK's LoggingHandler, at INFO.
    Expected(
        "logging-handler",
        "docs/getting-started.md",
        "LoggingHandler(logger_provider=logger_provider)",
        "script",
        [{**UPGRADE, "externalConversationId": "chat-8812"}],
    ),
    # Sampling: GreenflashSampler keeps the event of a span the 1 % ratio drops.
    Expected(
        "sampler",
        "docs/getting-started.md",
        "GreenflashSampler(ParentBased(TraceIdRatioBased(0.01)), record_unsampled=True)",
        "script",
        [{**UPGRADE, "externalConversationId": "chat-8812"}],
    ),
    # Linking, helpers: conversation(), attach_conversation() learned after the event, track().
    Expected(
        "helpers",
        "docs/linking.md",
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
    # Deployments, serverless: a handler module; invoked, it delivers before returning.
    Expected(
        "serverless",
        "docs/deployments.md",
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
    # Testing your code: pytest files using the plugin's fixtures, and a script.
    Expected(
        "fixture-server",
        "docs/testing-your-code.md",
        "def test_upgrade_is_reported(greenflash_server):",
        "pytest",
    ),
    Expected(
        "fixture-events",
        "docs/testing-your-code.md",
        "def test_upgrade(greenflash_events):",
        "pytest",
    ),
    Expected(
        "faults",
        "docs/testing-your-code.md",
        "def test_a_rate_limited_upgrade_still_arrives_once(greenflash_server):",
        "pytest",
    ),
    Expected(
        "fixture-conversations",
        "docs/testing-your-code.md",
        "def test_history_is_stored_once_and_a_retried_rating_twice(greenflash_server):",
        "pytest",
    ),
    Expected(
        "captured-events",
        "docs/testing-your-code.md",
        "captured = CapturedEvents()",
        "script",  # delivers into memory: nothing reaches the server
    ),
]


def document_snippets(path: Path) -> list[Snippet]:
    """The ```python blocks of the Markdown file at ``path`` in order, each dedented by its
    fence's indentation."""
    document = path.relative_to(ROOT).as_posix()
    snippets: list[Snippet] = []
    opened: tuple[int, str] | None = None  # (line, info string) of the open fence
    body: list[str] = []
    previous = ""
    not_run: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = FENCE.match(line)
        if opened is None:
            if fence is not None:
                opened, body = (number, fence["info"]), []
                comment = NOT_RUN.match(previous)
                not_run = comment["reason"] if comment else None
        elif fence is not None and fence["info"] == "":
            if opened[1] == "python":
                code = textwrap.dedent("\n".join(body) + "\n")
                snippets.append(Snippet(document, opened[0], code, not_run))
            opened = None
        else:
            body.append(line)
        previous = line
    assert opened is None, f"{document}: the fence opened on line {opened[0]} is never closed"
    return snippets


def python_fence_infos(text: str) -> list[str]:
    """Info strings of every fence that looks like Python (``py``, ``python3``, ``pycon``...)."""
    return [
        fence["info"]
        for line in text.splitlines()
        if (fence := FENCE.match(line)) is not None and fence["info"].lower().startswith("py")
    ]


SNIPPETS = [snippet for path in DOCUMENTS for snippet in document_snippets(path)]


def snippet_for(expected: Expected) -> Snippet:
    """The one snippet of ``expected.document`` holding ``expected.marker``."""
    found = [
        snippet
        for snippet in SNIPPETS
        if snippet.document == expected.document and expected.marker in snippet.code
    ]
    assert len(found) == 1, (
        f"{expected.document}: {len(found)} ```python snippets contain {expected.marker!r}; "
        f"EXPECTED's entry {expected.name!r} needs exactly one"
    )
    return found[0]


def test_every_snippet_is_covered() -> None:
    for path in DOCUMENTS:
        infos = set(python_fence_infos(path.read_text()))
        assert infos <= {"python"}, f"{path.relative_to(ROOT)}: tag Python snippets ```python"
    assert "README.md" in {snippet.document for snippet in SNIPPETS}
    assert len({expected.name for expected in EXPECTED}) == len(EXPECTED)
    covered = {(snippet.document, snippet.line) for snippet in map(snippet_for, EXPECTED)}
    uncovered = [
        snippet.where
        for snippet in SNIPPETS
        if (snippet.document, snippet.line) not in covered and snippet.not_run is None
    ]
    assert uncovered == [], (
        f"```python snippets with no entry in EXPECTED: {', '.join(uncovered)}; give each one "
        "(or, for an illustration only, the comment <!-- snippet: not run, <reason> -->)"
    )
    run_anyway = [snippet.where for snippet in map(snippet_for, EXPECTED) if snippet.not_run]
    assert run_anyway == [], f"marked not run but listed in EXPECTED: {run_anyway}"


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
    statuses = [r.status for r in server.requests if r.path.endswith("/events")]
    assert statuses == [200] * len(events)
    assert server.duplicates == 0


def check_script(snippet: Snippet, expected: Expected, tmp_path: Path) -> None:
    with EventsApiServer() as server:
        result = run_script(tmp_path, snippet.code, snippet_env(server))
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
        assert result.stdout == "", result.stdout
        assert_events(server, expected.events)
        assert_ratings(server, expected.ratings)


def assert_ratings(server: EventsApiServer, expected: list[dict[str, Any]]) -> None:
    """Exactly the expected ratings arrived (by their ``rating``), every request accepted."""
    got = sorted(server.ratings, key=lambda rating: rating["rating"])
    assert len(got) == len(expected), got
    want = sorted(expected, key=lambda rating: rating["rating"])
    assert [{key: got[i].get(key) for key in want[i]} for i in range(len(want))] == want
    statuses = [r.status for r in server.requests if r.path.endswith("/ratings")]
    assert statuses == [200] * len(got)


def check_pytest(snippet: Snippet, tmp_path: Path) -> None:
    """A test file as the documentation shows it, collected by pytest with the plugin auto-loaded
    (as installing the package makes it); any warning fails it."""
    (tmp_path / "test_documented_snippet.py").write_text(snippet.code)
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
                "test_documented_snippet.py",
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


@pytest.mark.parametrize("expected", EXPECTED, ids=[expected.name for expected in EXPECTED])
def test_snippet_runs_as_written(expected: Expected, tmp_path: Path) -> None:
    snippet = snippet_for(expected)
    if expected.kind == "script":
        check_script(snippet, expected, tmp_path)
    elif expected.kind == "pytest":
        check_pytest(snippet, tmp_path)
    else:
        check_lambda(snippet, expected, tmp_path)
