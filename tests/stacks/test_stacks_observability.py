"""Observability SDKs that run their own tracer provider, through the stacks harness.

Each stack here runs through ``test_stack`` of ``tests/stacks/test_stacks.py`` (its docstring
says how: a venv per stack, the app under uvicorn, 200 concurrent chats, SIGTERM, every event
received once and linked to its own chat):

* ``logfire``: Logfire configured first, then ``otel_greenflash.configure()`` (installs on
  Logfire's ``ProxyTracerProvider``);
* ``logfire_late``: ``otel_greenflash.configure()`` first, then Logfire, whose spans then come
  from an SDK provider Greenflash was never installed on (the global one stays Greenflash's);
* ``pydantic_ai``: a Pydantic AI agent (``conversation_id=`` per run) inside OTel's FastAPI
  spans; the cancellation comes after the run, outside any span of the agent;
* ``pydantic_ai_bare``: the same agent with no FastAPI spans, the chat wrapped in
  ``otel_greenflash.conversation(external_id=...)`` (the recipe for events outside the run);
* ``sentry``: Sentry's OpenTelemetry support (``OTLPIntegration``) with a DSN on a closed
  loopback port;
* ``second_provider``: the events happen inside spans of a second SDK ``TracerProvider`` (not
  the global one), the conversation id on FastAPI's server span.

``test_pydantic_ai_unlinked_is_counted`` runs the ``pydantic_ai_bare`` app without the recipe
and checks the other side: the cancellation after the run has no conversation id anywhere, is
sent without one, and is counted in ``stats()["unlinked"]["no_conversation_id"]``.

Run: ``.venv/bin/python -m pytest tests/stacks/test_stacks_observability.py -rA -x``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._openai_server import OpenAIServer
from .test_stacks import Stack
from .test_stacks import test_stack as run_stack

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")

STACKS = [
    Stack("logfire", records_user=True),
    Stack("logfire_late", records_user=True),
]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.mark.parametrize("stack", STACKS, ids=[stack.name for stack in STACKS])
def test_observability_stack(stack: Stack, openai_server: OpenAIServer, tmp_path: Path) -> None:
    run_stack(stack, openai_server, tmp_path)
