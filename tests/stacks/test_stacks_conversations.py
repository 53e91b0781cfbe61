"""Conversation capture on real GenAI stacks: multi-turn chats become stored conversations.

The harness of ``tests/stacks/test_stacks.py`` (a venv per stack, the app under uvicorn, the
OpenAI-compatible server and the independent receiver on loopback), with
``GREENFLASH_CAPTURE_CONVERSATIONS=true`` and the stack's own switch for recording prompts and
answers on (``Stack.env``). ``CHATS`` concurrent chats of ``TURNS`` turns each, through the real
``openai`` package: every turn sends the whole history again, as chat applications do. On its
last turn each chat's app reports the two business events of ``test_stacks.py`` and emits a
``gen_ai.evaluation.result`` log event on the LLM span's context (the SDK ``LoggerProvider`` the
app sets up before ``configure()``; ``tests/stacks/apps/_common.py``); then the user's thumbs
come in a request of their own (``POST /feedback``: ``otel_greenflash.rate()`` naming the
conversation).

Checked on the receiver: each chat is one conversation holding its ``2 * TURNS`` messages once,
in order, user and assistant alternating with the contents sent and answered, each message's
parent the one before it; no other conversation; the events linked to the same
``externalConversationId``; each evaluation one rating with its score, aimed at the evaluated
call's answer (when that call was mapped first) or at its chat's conversation; each thumbs one
rating of the conversation; no request
breaking the API's contract; and the app's ``stats()`` agreeing. Each run prints one line
``stack=<name> chats=… messages=… deduplicated=… ratings=… unlinked=…``.

Variants: ``otel_genai_events`` has util-genai record each call only in a
``gen_ai.client.inference.operation.details`` log event (its span carries no content, and is
not a message request dropped); ``otel_genai_span_and_event`` on both, so each call's messages
come twice with the same ids; ``openinference_sigterm`` holds everything (schedule delay 30 s)
until SIGTERM, right after the last answer, and the signal path delivers it;
``openllmetry_no_content`` sends no content (``GREENFLASH_CAPTURE_MESSAGE_CONTENT=false``): the
messages are stored once each, empty, in order.

``test_capture_off_sends_only_events``: the same app with capture unset sends events and
nothing else, though the stack records prompts and its app emits evaluations.

The receiver answers after ``LATENCY`` seconds, 0.02 s (0.1 s in ``test_stacks.py``): a run
makes 1,400 requests (2,000 with both span and event), up to 64 at once. The OpenAI-compatible
server answers at once. Measured on 2 loaded cores: 16-32 s a stack, the chats 11-25 s of it,
delivery after the last answer under 1 s.

Run: ``.venv/bin/python -m pytest tests/stacks/test_stacks_conversations.py -rA``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deployments.test_deployments import SERVER_RC, Deployment, settle
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver
from tests.support.ports import free_port
from tests.support.processes import clean_env

from ._openai_server import OpenAIServer, answer_for
from ._venvs import REPO, StackVenvError, stack_python
from .test_stacks import START_TIMEOUT, Result, healthy, openai_server

__all__ = ["openai_server"]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")

CHATS = 200
TURNS = 3
LATENCY = 0.02
"""Seconds the receiver waits before answering each request (see the module's docstring)."""
CHAT_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 90.0
"""How long the receiver may take to get everything after the last answer (1 s measured)."""
HELD_SCHEDULE_DELAY_MS = "30000"
"""With :attr:`Stack.hold`: longer than the chats take, as in ``test_stacks.py``."""
DEFAULT_USER = "support-app-user"
"""``GREENFLASH_DEFAULT_EXTERNAL_USER_ID`` for a stack that records no user id."""
EVENT_KINDS = ("upgrade", "cancellation")
EVALUATION_NAME = "relevance"
RATINGS_PER_CHAT = 2
"""The evaluation of the last answer, and the user's thumbs."""


@dataclass(frozen=True)
class Stack:
    name: str
    records_user: bool
    """The stack puts the chat's user id on its LLM spans; otherwise messages carry
    :data:`DEFAULT_USER`."""
    env: tuple[tuple[str, str], ...] = ()
    """The stack's switch for recording prompts and answers, and what else it needs."""
    app: str = ""
    """The app (``tests/stacks/apps/<app>_app.py``) and venv, when not the stack's name."""
    copies: int = 1
    """``POST /messages`` requests per LLM call: 2 when the stack records each call twice (on
    its span and in a ``gen_ai.client.inference.operation.details`` log event)."""
    hold: bool = False
    """Everything is still held in the app (schedule delay 30 s) when SIGTERM comes right after
    the last answer: the signal path delivers it (``stats()`` is not read)."""
    content: bool = True
    """False: ``GREENFLASH_CAPTURE_MESSAGE_CONTENT=false``, messages are stored empty."""

    @property
    def module(self) -> str:
        return self.app or self.name


def _otel_genai(mode: str) -> tuple[tuple[str, str], ...]:
    """util-genai's content switch (``span_only``, ``event_only``, ``span_and_event``): the
    events go to the app's global ``LoggerProvider``. The stack records no user id."""
    return (
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode),
        ("GREENFLASH_DEFAULT_EXTERNAL_USER_ID", DEFAULT_USER),
    )


_OPENLLMETRY = (("TRACELOOP_TELEMETRY", "false"), ("TRACELOOP_TRACE_CONTENT", "true"))

STACKS = [
    Stack("otel_genai", records_user=False, env=_otel_genai("span_only")),
    Stack("openinference", records_user=True),  # records prompts and answers by default
    Stack("openllmetry", records_user=True, env=_OPENLLMETRY),
    Stack("otel_genai_events", records_user=False, env=_otel_genai("event_only"), app="otel_genai"),
    Stack(
        "otel_genai_span_and_event",
        records_user=False,
        env=_otel_genai("span_and_event"),
        app="otel_genai",
        copies=2,
    ),
    Stack("openinference_sigterm", records_user=True, app="openinference", hold=True),
    Stack(
        "openllmetry_no_content",
        records_user=True,
        env=(*_OPENLLMETRY, ("GREENFLASH_CAPTURE_MESSAGE_CONTENT", "false")),
        app="openllmetry",
        content=False,
    ),
]


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Chat:
    conversation: str
    user: str
    stream: bool
    score: float
    """The evaluation's score of the last answer (0 to 1, rated on 0-1)."""
    thumbs_up: bool
    """The user's thumbs after the last turn (``POST /feedback``, ``otel_greenflash.rate()``)."""

    def message(self, turn: int) -> str:
        return f"Turn {turn + 1}: which plan fits conversation {self.conversation}?"


def new_chats(n: int) -> list[Chat]:
    run = uuid.uuid4().hex[:8]
    return [
        Chat(
            f"conv-{run}-{i}",
            f"user-{run}-{i}",
            stream=i % 2 == 1,
            score=(i % 11) / 10,
            thumbs_up=i % 3 != 0,
        )
        for i in range(n)
    ]


@dataclass
class Traffic:
    histories: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """Conversation id → every message of the chat, as the client holds it after its turns."""
    problems: list[str] = field(default_factory=list)


async def _converse(port: int, chats: list[Chat], *, feedback: bool) -> Traffic:
    """All chats at once, each turn after the answer to the one before; with ``feedback`` the
    user's thumbs after the last."""
    traffic = Traffic()
    # A connection per request: uvicorn closes a connection idle for 5 s, and a turn sent on
    # one just then fails (the chats take longer than that).
    limits = httpx.Limits(max_connections=len(chats), max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=CHAT_TIMEOUT, limits=limits, trust_env=False
    ) as client:

        async def one(chat: Chat) -> None:
            history: list[dict[str, str]] = []
            for turn in range(TURNS):
                last = turn == TURNS - 1
                message = chat.message(turn)
                body = {
                    "conversation": chat.conversation,
                    "user": chat.user,
                    "stream": chat.stream,
                    "history": history,
                    "message": message,
                    "report": last,
                    "score": chat.score if last else None,
                }
                try:
                    response = await client.post("/chat", json=body)
                except httpx.HTTPError as exc:
                    traffic.problems.append(f"{chat.conversation} turn {turn + 1}: {exc!r}")
                    return
                if response.status_code != 200:
                    traffic.problems.append(
                        f"{chat.conversation} turn {turn + 1}: HTTP {response.status_code} "
                        f"{response.text[:300]}"
                    )
                    return
                answer = str(response.json().get("answer", ""))
                if answer != answer_for(message):
                    traffic.problems.append(
                        f"{chat.conversation} turn {turn + 1}: answer {answer[:200]!r}"
                    )
                    return
                history = [
                    *history,
                    {"role": "user", "content": message},
                    {"role": "assistant", "content": answer},
                ]
            traffic.histories[chat.conversation] = history
            if feedback:
                thumbs = {"conversation": chat.conversation, "up": chat.thumbs_up}
                try:
                    response = await client.post("/feedback", json=thumbs)
                except httpx.HTTPError as exc:
                    traffic.problems.append(f"{chat.conversation} feedback: {exc!r}")
                    return
                if response.status_code != 200:
                    traffic.problems.append(
                        f"{chat.conversation} feedback: HTTP {response.status_code}"
                    )

        await asyncio.gather(*(one(chat) for chat in chats))
    return traffic


def app_stats(port: int) -> dict[str, Any]:
    """The app's ``stats()``, or an empty dict when it cannot be read."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return {}
    body = response.json() if response.is_success else {}
    return body if isinstance(body, dict) else {}


def delivered(receiver: Receiver, chats: int) -> bool:
    """Everything the chats make has reached the receiver."""
    return (
        receiver.stored_messages >= chats * TURNS * 2
        and len(receiver.ratings) >= chats * RATINGS_PER_CHAT
        and len(receiver.accepted) >= chats * len(EVENT_KINDS)
    )


def stats_settled(stats: dict[str, Any], chats: int, copies: int) -> bool:
    """The app counted every request it made as answered (``copies`` messages requests per
    LLM call)."""
    messages = stats.get("messages") or {}
    ratings = stats.get("ratings") or {}
    return bool(
        messages.get("sent", 0) >= chats * TURNS * copies
        and ratings.get("sent", 0) >= chats * RATINGS_PER_CHAT
        and stats.get("sent", 0) >= chats * len(EVENT_KINDS)
    )


# --------------------------------------------------------------------------- checks


@dataclass
class Run:
    """What one app run left on the receiver and in the app's counters."""

    stack: Stack
    chats: list[Chat]
    histories: dict[str, list[dict[str, str]]]
    conversations: list[dict[str, Any]]
    ratings: list[dict[str, Any]]
    events: Result
    stored: int
    deduplicated: int
    requests: Counter[tuple[str, int | str]]
    """(path, outcome) → requests."""
    contract_errors: list[str]
    stats: dict[str, Any]

    @property
    def by_conversation(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for thread in self.conversations:
            found.setdefault(str(thread["externalConversationId"]), []).append(thread)
        return found

    def rating_targets(self) -> Counter[str]:
        """``<source>-><target field>`` → ratings (source ``evaluation`` or ``thumbs``)."""
        return Counter(
            f"{_rating_source(rating)}->"
            + next((key for key in rating if key.endswith(("MessageId", "ConversationId"))), "-")
            for rating in self.ratings
        )

    @property
    def line(self) -> str:
        targets = dict(sorted(self.rating_targets().items()))
        events = self.events
        unlinked = len(events.events) - events.linked
        return (
            f"stack={self.stack.name} chats={len(self.chats)} turns={TURNS} "
            f"llm_calls={len(self.chats) * TURNS} conversations={len(self.conversations)} "
            f"messages={self.stored}/{len(self.chats) * TURNS * 2} "
            f"deduplicated={self.deduplicated} "
            f"ratings={len(self.ratings)}/{len(self.chats) * RATINGS_PER_CHAT} {targets} "
            f"events={len(events.events)}/{sum(events.expected.values())} unlinked={unlinked} "
            f"requests={dict(sorted(self.requests.items()))} rc={events.returncode}"
        )

    def problems(self) -> list[str]:
        found = self.events.problems()
        found.extend(self._conversation_problems())
        found.extend(self._rating_problems())
        found.extend(self._request_problems())
        found.extend(self._stats_problems())
        return found

    def _conversation_problems(self) -> list[str]:
        found: list[str] = []
        threads = self.by_conversation
        expected_user = {c.conversation: c.user for c in self.chats}
        stray = sorted(set(threads) - set(expected_user))
        if stray:
            found.append(f"{len(stray)} conversations of no chat, e.g. {stray[:3]}")
        wrong: list[str] = []
        seen_ids: Counter[str] = Counter()
        for chat in self.chats:
            stored = threads.get(chat.conversation, [])
            if len(stored) != 1:
                wrong.append(f"{chat.conversation}: {len(stored)} conversations")
                continue
            thread = stored[0]
            user = chat.user if self.stack.records_user else DEFAULT_USER
            if (thread["externalUserId"], thread["productId"]) != (user, PRODUCT_ID):
                wrong.append(
                    f"{chat.conversation}: user {thread['externalUserId']!r} product "
                    f"{thread['productId']!r}, expected {user!r} {PRODUCT_ID!r}"
                )
            messages = thread["messages"]
            seen_ids.update(str(m["externalMessageId"]) for m in messages)
            got = [(m["messageType"], m["content"]) for m in messages]
            want = [
                (m["role"] + "_message", m["content"] if self.stack.content else "")
                for m in self.histories[chat.conversation]
            ]
            if got != want:
                wrong.append(f"{chat.conversation}: stored {got}, sent {want}")
                continue
            for before, message in zip([None, *messages], messages, strict=False):
                parent = (
                    (None, None)
                    if before is None
                    else (before["externalMessageId"], before["messageId"])
                )
                if (message["parentExternalMessageId"], message["parentMessageId"]) != parent:
                    wrong.append(
                        f"{chat.conversation}: message {message['content']!r} has parent "
                        f"{message['parentExternalMessageId']!r}, expected {parent[0]!r}"
                    )
                    break
        if wrong:
            found.append(f"{len(wrong)} chats not stored as sent, e.g. {wrong[:3]}")
        repeated = sorted(key for key, count in seen_ids.items() if count > 1)
        if repeated:
            found.append(
                f"{len(repeated)} externalMessageIds stored more than once: {repeated[:3]}"
            )
        if self.stored != len(self.chats) * TURNS * 2:
            found.append(f"{self.stored} messages stored, expected {len(self.chats) * TURNS * 2}")
        return found

    def _rating_problems(self) -> list[str]:
        found: list[str] = []
        last_answer = {
            key: threads[0]["messages"][-1]["externalMessageId"]
            for key, threads in self.by_conversation.items()
            if len(threads) == 1 and threads[0]["messages"]
        }
        by_chat: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rating in self.ratings:
            named = str(rating.get("feedback", "")).rpartition(" ")[2]
            by_chat.setdefault((named, _rating_source(rating)), []).append(rating)
        wrong: list[str] = []
        for chat in self.chats:
            conversation = chat.conversation
            evaluations = by_chat.pop((conversation, "evaluation"), [])
            thumbs = by_chat.pop((conversation, "thumbs"), [])
            if len(evaluations) != 1 or len(thumbs) != 1:
                wrong.append(
                    f"{conversation}: {len(evaluations)} evaluations, {len(thumbs)} thumbs"
                )
                continue
            label = "relevant" if chat.score >= 0.5 else "not_relevant"
            on_conversation = {"externalConversationId": conversation}
            on_answer = {"externalMessageId": last_answer.get(conversation)}
            for rating, score, feedback, targets in (
                (
                    evaluations[0],
                    chat.score,
                    f"{EVALUATION_NAME} ({label}): the answer is about conversation {conversation}",
                    (on_conversation, on_answer),
                ),
                (
                    thumbs[0],
                    int(chat.thumbs_up),
                    f"thumbs from the user of conversation {conversation}",
                    (on_conversation,),
                ),
            ):
                expected = {
                    "productId": PRODUCT_ID,
                    "rating": score,
                    "ratingMin": 0,
                    "ratingMax": 1,
                    "feedback": feedback,
                }
                got = {key: rating.get(key) for key in expected}
                if got != expected:
                    wrong.append(f"{conversation}: {got}, expected {expected}")
                target = {key: value for key, value in rating.items() if key.endswith("Id")}
                target.pop("productId", None)
                if target not in targets:
                    wrong.append(f"{conversation}: {feedback!r} rates {target}, not {targets}")
        if wrong:
            found.append(f"{len(wrong)} ratings not as emitted, e.g. {wrong[:3]}")
        if by_chat:
            found.append(f"ratings of no chat: {sorted(by_chat)[:3]}")
        return found

    def _request_problems(self) -> list[str]:
        found: list[str] = []
        if self.contract_errors:
            found.append(f"requests answered 422: {self.contract_errors[:3]}")
        calls = len(self.chats) * TURNS
        requests = calls * self.stack.copies
        retried = int((self.stats.get("messages") or {}).get("retried", 0))
        accepted = self.requests[(Receiver.MESSAGES_PATH, 200)]
        if not requests <= accepted <= requests + retried:
            found.append(
                f"{accepted} /messages requests accepted for {calls} LLM calls recorded "
                f"{self.stack.copies} time(s) each ({retried} retried)"
            )
        if self.requests[(Receiver.RATINGS_PATH, 200)] != len(self.chats) * RATINGS_PER_CHAT:
            found.append(f"/ratings requests: {dict(self.requests)}")
        return found

    def _stats_problems(self) -> list[str]:
        stats = self.stats
        if self.stack.hold:
            return []  # not read: SIGTERM came at once
        if not stats:
            return ["the app's stats() could not be read"]
        calls = len(self.chats) * TURNS * self.stack.copies
        got = {
            "sent": stats.get("sent"),
            "failed": stats.get("failed"),
            "invalid": stats.get("invalid"),
            "dropped": stats.get("dropped"),
            "unlinked": stats.get("unlinked"),
            "messages": _counts(stats.get("messages")),
            "ratings": _counts(stats.get("ratings")),
        }
        expected = {
            "sent": len(self.chats) * len(EVENT_KINDS),
            "failed": 0,
            "invalid": 0,
            "dropped": {},
            "unlinked": {},
            "messages": {"sent": calls, "failed": 0, "unconfirmed": 0, "dropped": {}},
            "ratings": {
                "sent": len(self.chats) * RATINGS_PER_CHAT,
                "failed": 0,
                "unconfirmed": 0,
                "dropped": {},
            },
        }
        if got != expected:
            return [f"stats() {got}, expected {expected}"]
        return []


def _rating_source(rating: dict[str, Any]) -> str:
    """``thumbs`` (the user's, through ``rate()``) or ``evaluation``."""
    return "thumbs" if str(rating.get("feedback", "")).startswith("thumbs") else "evaluation"


def _counts(endpoint: object) -> dict[str, Any] | None:
    if not isinstance(endpoint, dict):
        return None
    return {key: endpoint.get(key) for key in ("sent", "failed", "unconfirmed", "dropped")}


# --------------------------------------------------------------------------- running an app


@dataclass
class AppRun:
    """One app run's raw outcome, checked by the tests."""

    traffic: Traffic
    stats: dict[str, Any]
    returncode: int
    output: str
    timings: str
    after_signal: Counter[str]
    """Requests the receiver read after SIGTERM, by endpoint."""


def run_app(
    stack: Stack,
    chats: list[Chat],
    receiver: Receiver,
    openai_base_url: str,
    tmp_path: Path,
    *,
    capture: bool,
    ready_when: Callable[[], bool],
) -> AppRun:
    """Start the stack's app, run ``chats``, wait for ``ready_when()`` (everything delivered),
    read its ``stats()``, stop it with SIGTERM and let the receiver settle; with
    :attr:`Stack.hold` SIGTERM comes right after the last answer."""
    try:
        python, _ = stack_python(stack.module)
    except StackVenvError as exc:
        pytest.skip(f"stack {stack.name}: its virtualenv could not be built: {exc}")
    started = time.monotonic()
    port = free_port()
    ready = tmp_path / "ready"
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    settings = {"GREENFLASH_CAPTURE_CONVERSATIONS": "true"} if capture else {}
    if stack.hold:
        settings["GREENFLASH_BSP_SCHEDULE_DELAY"] = HELD_SCHEDULE_DELAY_MS
        settings["GREENFLASH_BSP_SEND_DELAY"] = HELD_SCHEDULE_DELAY_MS
    env = clean_env(
        GREENFLASH_API_KEY=receiver.api_key,
        GREENFLASH_BASE_URL=receiver.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        OTEL_SERVICE_NAME=f"stack-{stack.name}",
        STACK_OPENAI_BASE_URL=openai_base_url,
        STACK_READY_FILE=str(ready),
        PYTHONPATH=pythonpath,
        PYTHONUNBUFFERED="1",
        **settings,
        **dict(stack.env),
    )
    args = [
        str(python),
        *("-m", "uvicorn", f"tests.stacks.apps.{stack.module}_app:app"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--no-access-log", "--log-level", "warning"),
    ]
    server = Deployment(stack.name, args, env, tmp_path)
    try:
        server.wait_for(lambda: ready.exists() and healthy(port), "a serving app", START_TIMEOUT)
        serving = time.monotonic()
        traffic = asyncio.run(_converse(port, chats, feedback=capture))
        answered = time.monotonic()
        stats: dict[str, Any] = {}
        if not traffic.problems and not stack.hold:
            receiver.wait_until(ready_when, timeout=DELIVERY_TIMEOUT)
            deadline = time.monotonic() + DELIVERY_TIMEOUT
            while time.monotonic() < deadline:
                stats = app_stats(port)
                if not capture or stats_settled(stats, len(chats), stack.copies):
                    break
                time.sleep(0.2)
        signalled = time.monotonic()
        rc = server.stop(signal.SIGTERM)
        settle(receiver)
        timings = (
            f"run={time.monotonic() - started:.1f}s (start={serving - started:.1f}s "
            f"chats={answered - serving:.1f}s delivery={signalled - answered:.1f}s)"
        )
        after_signal = Counter(
            request.path.rpartition("/")[2]
            for request in receiver.requests
            if request.received_at >= signalled
        )
        return AppRun(traffic, stats, rc, server.tail(60), timings, after_signal)
    finally:
        server.close()


def events_result(stack: Stack, chats: list[Chat], receiver: Receiver, returncode: int) -> Result:
    """The events' checks of ``test_stacks.py`` (each once, linked to its chat, 149.00)."""
    return Result(
        stack.name,
        Counter({(c.conversation, kind): 1 for c in chats for kind in EVENT_KINDS}),
        {c.conversation: c.user for c in chats},
        receiver.accepted,
        receiver.duplicates,
        returncode,
        SERVER_RC["uvicorn SIGTERM"],
        stack.records_user,
    )


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("stack", STACKS, ids=[stack.name for stack in STACKS])
def test_conversations(stack: Stack, openai_server: OpenAIServer, tmp_path: Path) -> None:
    chats = new_chats(CHATS)
    before = openai_server.counts
    with Receiver(latency_seconds=LATENCY) as receiver:
        outcome = run_app(
            stack,
            chats,
            receiver,
            openai_server.base_url,
            tmp_path,
            capture=True,
            ready_when=lambda: delivered(receiver, len(chats)),
        )
        assert not outcome.traffic.problems, (
            f"{len(outcome.traffic.problems)} chats failed: {outcome.traffic.problems[:5]}\n"
            + outcome.output
        )
        requests = receiver.requests
        run = Run(
            stack,
            chats,
            outcome.traffic.histories,
            receiver.conversations,
            receiver.ratings,
            events_result(stack, chats, receiver, outcome.returncode),
            receiver.stored_messages,
            receiver.deduplicated_messages,
            Counter((r.path, r.outcome) for r in requests),
            [f"{r.path}: {r.errors}" for r in requests if r.errors],
            outcome.stats,
        )
        errors = receiver.errors
    print(run.line, f"sent_after_sigterm={dict(outcome.after_signal)}", outcome.timings)
    problems = run.problems()
    calls = openai_server.counts - before
    if calls["chat"] + calls["chat-stream"] != CHATS * TURNS or calls["chat-stream"] != (
        CHATS // 2 * TURNS
    ):
        problems.append(f"the OpenAI server answered {dict(calls)}, expected {CHATS * TURNS}")
    if errors or openai_server.errors:
        problems.append(f"server errors: {errors} {openai_server.errors}")
    assert not problems, "\n".join([run.line, *problems, json.dumps(outcome.stats), outcome.output])


def test_capture_off_sends_only_events(openai_server: OpenAIServer, tmp_path: Path) -> None:
    """Capture unset: the app (OpenInference records prompts and answers; the app emits its
    evaluations) sends its events and not one /messages or /ratings request. No thumbs: what
    ``rate()`` records is sent whether capture is on or not."""
    stack = STACKS[1]
    chats = new_chats(CHATS // 4)
    with Receiver(latency_seconds=LATENCY) as receiver:
        outcome = run_app(
            stack,
            chats,
            receiver,
            openai_server.base_url,
            tmp_path,
            capture=False,
            ready_when=lambda: len(receiver.accepted) >= len(chats) * len(EVENT_KINDS),
        )
        assert not outcome.traffic.problems, outcome.traffic.problems[:5]
        events = events_result(stack, chats, receiver, outcome.returncode)
        paths = Counter(request.path for request in receiver.requests)
    stats = outcome.stats
    print(
        f"stack={stack.name} capture=off chats={len(chats)} turns={TURNS} requests={dict(paths)} "
        f"{events.line} {outcome.timings}"
    )
    problems = events.problems()
    if set(paths) != {Receiver.EVENTS_PATH}:
        problems.append(f"requests other than events: {dict(paths)}")
    if "messages" in stats or "ratings" in stats or stats.get("sent") != len(chats) * 2:
        problems.append(f"stats() {stats}")
    assert not problems, "\n".join([*problems, outcome.output])
