"""LangChain, LangGraph and LangSmith stacks, run by the harness of ``tests/stacks/test_stacks.py``.

Each stack here has its requirements in ``tests/stacks/requirements/<stack>.txt`` and its app in
``tests/stacks/apps/<stack>_app.py`` (the app's docstring says how the stack names the
conversation and which attribute links the events); the test itself is ``test_stack`` of
``test_stacks.py``, called once per stack.

Run: ``.venv/bin/python -m pytest tests/stacks/test_stacks_langchain.py -rA``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._openai_server import OpenAIServer
from .test_stacks import Stack, openai_server
from .test_stacks import test_stack as run_stack

__all__ = ["openai_server"]

# LangSmith's OpenTelemetry-only mode; its API and the OTLP endpoint it would export to are a
# closed loopback port, so nothing leaves the machine even if a span reached an exporter.
_LANGSMITH_OFFLINE = (
    ("LANGSMITH_TRACING", "true"),
    ("LANGSMITH_OTEL_ENABLED", "true"),
    ("LANGSMITH_OTEL_ONLY", "true"),
    ("LANGSMITH_API_KEY", "lsv2_pt_test"),
    ("LANGSMITH_ENDPOINT", "http://127.0.0.1:9"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
)

STACKS = [
    Stack("langgraph", records_user=False),
    Stack("langchain", records_user=False, venv="langgraph"),
    Stack("langsmith", records_user=False, env=_LANGSMITH_OFFLINE),
]


@pytest.mark.parametrize("stack", STACKS, ids=[stack.name for stack in STACKS])
def test_langchain_stack(stack: Stack, openai_server: OpenAIServer, tmp_path: Path) -> None:
    run_stack(stack, openai_server, tmp_path)
