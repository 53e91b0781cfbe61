"""Real GenAI stacks end to end: each stack's own instrumentation, a real server, real traffic.

Per stack (``STACKS``), in its own virtualenv (``tests/stacks/_venvs.py``, pinned by
``tests/stacks/requirements/<stack>.txt``):

1. the OpenAI-compatible server (``_openai_server.py``) and the independent Events API receiver
   (``tests/support/independent_receiver.py``) start in this process, on loopback;
2. ``uvicorn tests.stacks.apps.<stack>_app:app`` starts from the stack venv, in its own session
   with the default SIGTERM disposition, as an orchestrator starts it; the app sets the stack up,
   then calls ``otel_greenflash.configure()``;
3. ``CHATS`` concurrent ``POST /chat`` requests, each with its own conversation and user id, half
   of them streamed: the app names the conversation the stack's way, calls the server through the
   real ``openai`` package, then reports an upgrade (``track()``) and a cancellation (a span with
   ``greenflash.event.*``), both ``149.00`` currency;
4. SIGTERM right after the last answer, while the events are still held (the schedule delay is
   30 s), and the server's exit is awaited.

Checked: every event arrived exactly once (by ``insertId`` and by chat and kind), each linked to
its own chat's conversation (``externalConversationId``, or ``conversationId``), values and value
types as sent, every chat answered through the OpenAI server, and the server's return code is the
one uvicorn has without this library (``SERVER_RC`` in ``tests/deployments/test_deployments.py``: it
re-raises SIGTERM and ends by it). Each run prints ``stack=<name> received=N/400 linked=M …`` and
a summary of the real spans: which span names carry which id attributes.

Run: ``.venv/bin/python -m pytest tests/stacks -rA`` (``-rA`` shows the result lines). The first
run builds the venvs (pip cache makes later builds quick); when a venv cannot be built the
stack's test is skipped with pip's last lines as the reason. With ``PYTHONPATH=<dir>`` the apps
import the library from ``<dir>`` (e.g. an export of another commit), not from this checkout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deployments.test_deployments import SERVER_RC, Deployment, settle
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver
from tests.support.ports import free_port
from tests.support.processes import clean_env

from ._openai_server import OpenAIServer
from ._venvs import REPO, StackVenvError, stack_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")

CHATS = 200
EVENTS_PER_CHAT = 2
LATENCY = 0.1
"""Seconds the receiver waits before answering each event request."""
START_TIMEOUT = 60.0
CHAT_TIMEOUT = 60.0
PRICE = "149.00"
SCHEDULE_DELAY_MS = "30000"
"""The worker's schedule delay: longer than the chats take (3-8 s measured), so the events are
still held in the app when SIGTERM comes and the signal path delivers them (with 5 s, 0 to 400
of them went out before the signal, from one run to the next)."""


@dataclass(frozen=True)
class Stack:
    name: str
    records_user: bool
    """The stack puts a user id on its spans (then events must carry ``externalUserId``)."""
    env: tuple[tuple[str, str], ...] = ()
    venv: str = ""
    """The venv (and requirements file) the app runs from, when not the stack's own name."""
    openai_api: str = "chat"
    """What the app calls: ``chat`` (chat completions) or ``responses`` (the Responses API)."""


STACKS = [
    Stack("otel_genai", records_user=False),
    Stack("otel_genai_responses", records_user=False, venv="otel_genai", openai_api="responses"),
    Stack("openinference", records_user=True),
    Stack(
        "openllmetry",
        records_user=True,
        # No anonymous usage telemetry; prompts and answers are not recorded.
        env=(("TRACELOOP_TELEMETRY", "false"), ("TRACELOOP_TRACE_CONTENT", "false")),
    ),
    Stack("langfuse", records_user=True),
]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class ChatRequest:
    conversation: str
    user: str
    stream: bool


def new_chats(n: int) -> list[ChatRequest]:
    run = uuid.uuid4().hex[:8]
    return [ChatRequest(f"conv-{run}-{i}", f"user-{run}-{i}", stream=i % 2 == 1) for i in range(n)]


async def _send_all(port: int, chats: list[ChatRequest]) -> list[str]:
    """All chats at once; returns the problems (non-200 answers, answers not about the chat)."""
    limits = httpx.Limits(max_connections=len(chats), max_keepalive_connections=len(chats))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        timeout=CHAT_TIMEOUT,
        limits=limits,
        trust_env=False,
    ) as client:

        async def one(chat: ChatRequest) -> str | None:
            body = {"conversation": chat.conversation, "user": chat.user, "stream": chat.stream}
            try:
                response = await client.post("/chat", json=body)
            except httpx.HTTPError as exc:
                return f"{chat.conversation}: {exc!r}"
            if response.status_code != 200:
                return f"{chat.conversation}: HTTP {response.status_code} {response.text[:200]}"
            answer = str(response.json().get("answer", ""))
            if chat.conversation not in answer:
                return f"{chat.conversation}: answer not about this chat: {answer[:200]!r}"
            return None

        results = await asyncio.gather(*(one(chat) for chat in chats))
    return [problem for problem in results if problem is not None]


def healthy(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/health"
        return httpx.get(url, timeout=2, trust_env=False).is_success
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- checks


@dataclass
class Result:
    stack: str
    expected: Counter[tuple[str, str]]
    """(chat conversation id, kind) -> 1 for every event the app reported."""
    users: dict[str, str]
    """conversation id -> user id."""
    events: list[dict[str, Any]]
    double_sends: int
    returncode: int
    expected_returncode: int
    records_user: bool

    def _chat(self, event: dict[str, Any]) -> str:
        properties = event.get("properties") or {}
        return str(properties.get("chat"))

    @property
    def received(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for event in self.events:
            properties = event.get("properties") or {}
            counts[(str(properties.get("chat")), str(properties.get("kind")))] += 1
        return counts

    @property
    def linked(self) -> int:
        return sum(
            1
            for event in self.events
            if self._chat(event)
            in (event.get("externalConversationId"), event.get("conversationId"))
        )

    @property
    def linked_users(self) -> int:
        return sum(
            1
            for event in self.events
            if event.get("externalUserId") == self.users.get(self._chat(event))
        )

    @property
    def line(self) -> str:
        total = sum(self.expected.values())
        return (
            f"stack={self.stack} received={len(self.events)}/{total} linked={self.linked} "
            f"users={self.linked_users} double_sends={self.double_sends} rc={self.returncode}"
        )

    def problems(self) -> list[str]:
        found: list[str] = []
        received = self.received
        missing = sorted(set(self.expected) - set(received))
        if missing:
            found.append(f"{len(missing)} events never arrived, e.g. {missing[:3]}")
        doubled = sorted(key for key, count in received.items() if count > 1)
        if doubled:
            found.append(f"{len(doubled)} events arrived more than once, e.g. {doubled[:3]}")
        unexpected = sorted(set(received) - set(self.expected))
        if unexpected:
            found.append(f"{len(unexpected)} unexpected events, e.g. {unexpected[:3]}")
        if self.double_sends:
            found.append(f"{self.double_sends} requests re-sent an insertId already accepted")
        unlinked = [
            event
            for event in self.events
            if self._chat(event)
            not in (event.get("externalConversationId"), event.get("conversationId"))
        ]
        if unlinked:
            sample = {
                key: unlinked[0].get(key)
                for key in ("eventType", "externalConversationId", "conversationId", "properties")
            }
            found.append(
                f"{len(unlinked)} of {len(self.events)} events not linked to their own "
                f"conversation, e.g. {sample}"
            )
        if self.records_user and self.linked_users != len(self.events):
            found.append(
                f"{len(self.events) - self.linked_users} of {len(self.events)} events without "
                "their chat's user id (externalUserId), though the stack records one"
            )
        values = Counter((event.get("value"), event.get("valueType")) for event in self.events)
        if set(values) - {(PRICE, "currency")}:
            found.append(f"values other than {PRICE} currency: {dict(values)}")
        if self.returncode != self.expected_returncode:
            found.append(
                f"return code {self.returncode}; uvicorn alone ends with {self.expected_returncode}"
            )
        return found


def span_summary(dump: Path) -> list[str]:
    """``"<span name>" [scope] (root): id attributes`` per distinct span kind in the dump."""
    if not dump.is_file():
        return ["(no span dump)"]
    keys: dict[tuple[str, str, bool], set[str]] = defaultdict(set)
    events: dict[tuple[str, str, bool], set[str]] = defaultdict(set)
    counts: Counter[tuple[str, str, bool]] = Counter()
    for line in dump.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        kind = (str(record["name"]), str(record["scope"]), bool(record["root"]))
        counts[kind] += 1
        keys[kind].update(str(key) for key in record["ids"])
        events[kind].update(str(name) for name in record["events"])
    return [
        f"  {name!r} [{scope}]{' root' if root else ''} x{counts[(name, scope, root)]}: "
        + (", ".join(sorted(keys[(name, scope, root)])) or "-")
        + "".join(f"; span event {event!r}" for event in sorted(events[(name, scope, root)]))
        for name, scope, root in sorted(counts)
    ]


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("stack", STACKS, ids=[stack.name for stack in STACKS])
def test_stack(stack: Stack, openai_server: OpenAIServer, tmp_path: Path) -> None:
    try:
        python, built_in = stack_python(stack.venv or stack.name)
    except StackVenvError as exc:
        pytest.skip(f"stack {stack.name}: its virtualenv could not be built: {exc}")
    started = time.monotonic()
    before = openai_server.counts
    port = free_port()
    dump = tmp_path / "spans.jsonl"
    ready = tmp_path / "ready"
    chats = new_chats(CHATS)
    # As in tests/deployments/test_deployments.py: a PYTHONPATH given to pytest goes first, so the
    # apps can import the library from another checkout (e.g. an export of another commit).
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    with Receiver(latency_seconds=LATENCY) as receiver:
        env = clean_env(
            GREENFLASH_API_KEY=receiver.api_key,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_BSP_SCHEDULE_DELAY=SCHEDULE_DELAY_MS,
            GREENFLASH_BSP_SEND_DELAY=SCHEDULE_DELAY_MS,  # a queued event does not wake it
            OTEL_SERVICE_NAME=f"stack-{stack.name}",
            STACK_OPENAI_BASE_URL=openai_server.base_url,
            STACK_SPAN_DUMP=str(dump),
            STACK_READY_FILE=str(ready),
            PYTHONPATH=pythonpath,
            PYTHONUNBUFFERED="1",
            **dict(stack.env),
        )
        args = [
            str(python),
            "-m",
            "uvicorn",
            f"tests.stacks.apps.{stack.name}_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        server = Deployment(stack.name, args, env, tmp_path)
        try:
            server.wait_for(
                lambda: ready.exists() and healthy(port), "a serving app", START_TIMEOUT
            )
            serving = time.monotonic()
            problems = asyncio.run(_send_all(port, chats))
            assert not problems, f"{len(problems)} chats failed: {problems[:5]}\n{server.tail()}"
            signalled = time.monotonic()
            timings = f"start={serving - started:.1f}s chats={signalled - serving:.1f}s"
            rc = server.stop(signal.SIGTERM)
            settle(receiver)
            after_signal = sum(
                1
                for request in receiver.requests
                if request.received_at >= signalled and request.path == Receiver.EVENTS_PATH
            )
            result = Result(
                stack.name,
                Counter({(c.conversation, kind): 1 for c in chats for kind in _KINDS}),
                {c.conversation: c.user for c in chats},
                receiver.accepted,
                receiver.duplicates,
                rc,
                SERVER_RC["uvicorn SIGTERM"],
                stack.records_user,
            )
            errors = receiver.errors
        finally:
            server.close()
    calls = openai_server.counts - before
    elapsed = time.monotonic() - started
    print(
        result.line
        + f" sent_after_sigterm={after_signal} venv_build={built_in:.1f}s run={elapsed:.1f}s"
        + f" ({timings})"
    )
    summary = span_summary(dump)
    print(f"spans stack={stack.name}:", *summary, sep="\n")
    problems = result.problems()
    api = stack.openai_api
    if calls[api] + calls[f"{api}-stream"] != CHATS or calls[f"{api}-stream"] != CHATS // 2:
        problems.append(f"the OpenAI server answered {dict(calls)}, expected {CHATS} {api} calls")
    if errors or openai_server.errors:
        problems.append(f"server errors: {errors} {openai_server.errors}")
    assert not problems, "\n".join([result.line, *problems, *summary, server.tail()])


_KINDS = ("upgrade", "cancellation")
