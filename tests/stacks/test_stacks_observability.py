"""Observability SDKs that run their own tracer provider, through the stacks harness.

Each stack here runs through ``test_stack`` of ``tests/stacks/test_stacks.py`` (its docstring
says how: a venv per stack, the app under uvicorn, 200 concurrent chats, SIGTERM, every event
received once and linked to its own chat):

* ``logfire``: Logfire configured first, then ``otel_greenflash.configure()`` (installs on
  Logfire's ``ProxyTracerProvider``);
* ``logfire_late``: ``otel_greenflash.configure()`` first, then Logfire, whose spans then come
  from an SDK provider Greenflash was never installed on (the global one stays Greenflash's);
* ``logfire_late_spans``: as ``logfire_late``, with both events ``logfire.span``s and no
  ``track()``: nothing then shows Logfire's provider to the processor;
* ``pydantic_ai``: a Pydantic AI agent (``conversation_id=`` per run) inside OTel's FastAPI
  spans; the cancellation comes after the run, outside any span of the agent;
* ``pydantic_ai_bare``: the same agent with no FastAPI spans, the chat wrapped in
  ``otel_greenflash.conversation(external_id=...)`` (the recipe for events outside the run);
* ``sentry``: Sentry's OpenTelemetry support (``OTLPIntegration``) with a DSN on a closed
  loopback port; ``sentry_legacy``: Sentry's older ``SentrySpanProcessor`` with
  ``instrumenter="otel"`` on the same provider as the processor;
* ``second_provider``: the events happen inside spans of a second SDK ``TracerProvider`` (not
  the global one), the conversation id on FastAPI's server span.

``test_pydantic_ai_unlinked_is_counted`` runs the ``pydantic_ai_bare`` app without the recipe
and checks the other side: the cancellation after the run has no conversation id anywhere, is
sent without one, and is counted in ``stats()["unlinked"]["no_conversation_id"]``.

Run: ``.venv/bin/python -m pytest tests/stacks/test_stacks_observability.py -rA -x``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deployments.test_deployments import SERVER_RC, Deployment, settle, wait_until
from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver
from tests.support.ports import free_port
from tests.support.processes import clean_env

from ._openai_server import OpenAIServer
from ._venvs import REPO, StackVenvError, stack_python
from .test_stacks import (
    CHATS,
    LATENCY,
    PRICE,
    START_TIMEOUT,
    Stack,
    _send_all,
    healthy,
    new_chats,
)
from .test_stacks import test_stack as run_stack

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")

STACKS = [
    Stack("logfire", records_user=True),
    Stack("logfire_late", records_user=True, venv="logfire"),
    Stack("logfire_late_spans", records_user=True, venv="logfire"),
    Stack("pydantic_ai", records_user=False),
    Stack("pydantic_ai_bare", records_user=False, venv="pydantic_ai"),
    Stack("sentry", records_user=True),
    Stack("sentry_legacy", records_user=True, venv="sentry"),
    Stack("second_provider", records_user=False),
]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.mark.parametrize("stack", STACKS, ids=[stack.name for stack in STACKS])
def test_observability_stack(stack: Stack, openai_server: OpenAIServer, tmp_path: Path) -> None:
    run_stack(stack, openai_server, tmp_path)


# --------------------------------------------------------------------------- counted, not linked


def _stats(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/greenflash-stats"
    stats: dict[str, Any] = httpx.get(url, timeout=5, trust_env=False).json()
    return stats


def test_pydantic_ai_unlinked_is_counted(openai_server: OpenAIServer, tmp_path: Path) -> None:
    """The ``pydantic_ai_bare`` app without the recipe: every upgrade (inside the run) is linked
    by the run's ``gen_ai.conversation.id``; every cancellation (after the run, a root span of a
    trace of its own) reaches the API without a conversation id, and each is counted in
    ``stats()["unlinked"]["no_conversation_id"]`` before the process ends."""
    try:
        python, _ = stack_python("pydantic_ai")
    except StackVenvError as exc:
        pytest.skip(f"stack pydantic_ai_bare: its virtualenv could not be built: {exc}")
    port = free_port()
    ready = tmp_path / "ready"
    chats = new_chats(CHATS)
    with Receiver(latency_seconds=LATENCY) as receiver:
        env = clean_env(
            GREENFLASH_API_KEY=receiver.api_key,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_BSP_SCHEDULE_DELAY="5000",
            OTEL_SERVICE_NAME="stack-pydantic_ai_unlinked",
            STACK_OPENAI_BASE_URL=openai_server.base_url,
            STACK_READY_FILE=str(ready),
            STACK_GREENFLASH_RECIPE="0",
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
        )
        args = [
            str(python),
            "-m",
            "uvicorn",
            "tests.stacks.apps.pydantic_ai_bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        server = Deployment("pydantic_ai_unlinked", args, env, tmp_path)
        try:
            server.wait_for(
                lambda: ready.exists() and healthy(port), "a serving app", START_TIMEOUT
            )
            problems = asyncio.run(_send_all(port, chats))
            assert not problems, f"{len(problems)} chats failed: {problems[:5]}\n{server.tail()}"
            # Counted when sent: wait for the worker (its schedule delay is 5 s).
            wait_until(lambda: _stats(port)["sent"] >= 2 * CHATS, timeout=30, interval=0.5)
            stats = _stats(port)
            rc = server.stop(signal.SIGTERM)
            settle(receiver)
            events = receiver.accepted
        finally:
            server.close()

    linked: Counter[str] = Counter()
    for event in events:
        properties = event.get("properties") or {}
        own = event.get("externalConversationId") == properties.get("chat")
        none = event.get("externalConversationId") is None and event.get("conversationId") is None
        linked[f"{properties.get('kind')}_{'linked' if own else 'none' if none else 'other'}"] += 1
    unlinked = stats["unlinked"].get("no_conversation_id", 0)
    line = (
        f"stack=pydantic_ai_unlinked received={len(events)}/{2 * CHATS} "
        + " ".join(f"{key}={n}" for key, n in sorted(linked.items()))
        + f" stats_unlinked_no_conversation_id={unlinked} stats_sent={stats['sent']} rc={rc}"
    )
    print(line)
    assert linked == Counter({"upgrade_linked": CHATS, "cancellation_none": CHATS}), line
    assert unlinked == CHATS, line
    assert stats["sent"] == 2 * CHATS, line
    assert {(e.get("value"), e.get("valueType")) for e in events} == {(PRICE, "currency")}, line
    assert rc == SERVER_RC["uvicorn SIGTERM"], f"{line}\n{server.tail()}"
