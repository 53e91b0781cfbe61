"""What the Pydantic AI apps share: the agent and one chat turn. Nothing is set up at import
beyond building these objects; each app sets up its tracer provider first."""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from pydantic_ai import Agent  # type: ignore[import-not-found,unused-ignore]
from pydantic_ai.models.openai import (  # type: ignore[import-not-found,unused-ignore]
    OpenAIChatModel,
)
from pydantic_ai.providers.openai import (  # type: ignore[import-not-found,unused-ignore]
    OpenAIProvider,
)

from ._common import MODEL, OPENAI_TIMEOUT, Chat, openai_base_url, prompt_for, report_upgrade


def make_agent() -> Any:
    """An instrumented agent on an OpenAI-compatible model at the test server. In Pydantic AI 2
    ``Agent.instrument_all()`` turns on its OpenTelemetry instrumentation for every agent (the
    ``instrument=`` argument of 1.x is gone; an ``Instrumentation`` capability is the per-agent
    way); spans go to the global tracer provider."""
    Agent.instrument_all()
    client = AsyncOpenAI(
        base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
    )
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    return Agent(model, instructions="You are a helpful billing assistant.")


async def run_turn(agent: Any, chat: Chat) -> str:
    """One agent run for the chat, named by ``conversation_id=`` (Pydantic AI puts it on the
    ``invoke_agent`` span and its children as ``gen_ai.conversation.id``, and in baggage for the
    run); the upgrade is reported *inside* the run (its ``invoke_agent`` span is current), with
    ``agent.iter`` or, streamed, ``agent.run_stream``."""
    prompt = prompt_for(chat)
    if chat.stream:
        async with agent.run_stream(prompt, conversation_id=chat.conversation) as streamed:
            answer = str(await streamed.get_output())
            report_upgrade(chat)
        return answer
    async with agent.iter(prompt, conversation_id=chat.conversation) as run:
        async for _node in run:
            pass
        report_upgrade(chat)
        return str(run.result.output)
