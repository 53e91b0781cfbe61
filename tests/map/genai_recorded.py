# ruff: noqa: E501 - recorded attribute values, kept as the packages wrote them
"""LLM calls as three GenAI stacks record them: one conversation of three chat calls (a tool call,
its result and answer, then a duplicate "ok"), produced by the real packages and copied here.

Made by running ``openai`` 3.63.0 (chat.completions.create against an httpx MockTransport that
answers a tool call, then "Sunny in Paris.", then "ok"; usage 11/7/18) under each stack's pinned
instrumentation from tests/stacks/requirements/, with content capture on, and dumping each
finished span's attributes (and, for OTel GenAI, each log record's):

- ``opentelemetry-instrumentation-genai-openai`` 1.3b0 on ``opentelemetry-util-genai`` 1.3b0
  (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_AND_EVENT``): spans and
  ``gen_ai.client.inference.operation.details`` events (messages as lists of maps there);
- ``openinference-instrumentation-openai`` 0.1.66 (``input.value``/``output.value`` and the tool
  schema left out: the mapping does not read them);
- ``opentelemetry-instrumentation-openai`` 0.62.4 of OpenLLMetry (``traceloop-sdk`` 0.62.4),
  which writes the OTel GenAI JSON form.

The older indexed OpenLLMetry form is written by hand after
``opentelemetry-instrumentation-ollama`` 0.62.4's ``span_utils._set_prompts`` (the same
``gen_ai.prompt.<i>.role|content|tool_call_id|tool_calls.<j>.id|name|arguments`` keys) and the
completion keys ``gen_ai.completion.<i>.role|content``.
"""

from __future__ import annotations

OTEL_GENAI_SPANS = [
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "fake",
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-0",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": '[{"role":"system","parts":[{"content":"You are '
        'terse.","type":"text"}],"name":null},{"role":"user","parts":[{"content":"Weather '
        'in Paris?","type":"text"}],"name":null}]',
        "gen_ai.output.messages": '[{"role":"assistant","parts":[{"arguments":{"city":"Paris"},"name":"get_weather","id":"call_1","type":"tool_call"}],"finish_reason":"tool_call","name":null}]',
        "gen_ai.tool.definitions": '[{"name":"get_weather","description":null,"parameters":{"type":"object","properties":{"city":{"type":"string"}}},"type":"function"}]',
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "fake",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": '[{"role":"system","parts":[{"content":"You are '
        'terse.","type":"text"}],"name":null},{"role":"user","parts":[{"content":"Weather '
        "in "
        'Paris?","type":"text"}],"name":null},{"role":"assistant","parts":[{"arguments":{"city":"Paris"},"name":"get_weather","id":"call_1","type":"tool_call"}],"name":null},{"role":"tool","parts":[{"response":"sunny","id":"call_1","type":"tool_call_response"}],"name":null}]',
        "gen_ai.output.messages": '[{"role":"assistant","parts":[{"content":"Sunny in '
        'Paris.","type":"text"}],"finish_reason":"stop","name":null}]',
        "gen_ai.tool.definitions": '[{"name":"get_weather","description":null,"parameters":{"type":"object","properties":{"city":{"type":"string"}}},"type":"function"}]',
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "fake",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-2",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": '[{"role":"system","parts":[{"content":"You are '
        'terse.","type":"text"}],"name":null},{"role":"user","parts":[{"content":"Weather '
        "in "
        'Paris?","type":"text"}],"name":null},{"role":"assistant","parts":[{"arguments":{"city":"Paris"},"name":"get_weather","id":"call_1","type":"tool_call"}],"name":null},{"role":"tool","parts":[{"response":"sunny","id":"call_1","type":"tool_call_response"}],"name":null},{"role":"assistant","parts":[{"content":"Sunny '
        "in "
        'Paris.","type":"text"}],"name":null},{"role":"user","parts":[{"content":"ok","type":"text"}],"name":null}]',
        "gen_ai.output.messages": '[{"role":"assistant","parts":[{"content":"ok","type":"text"}],"finish_reason":"stop","name":null}]',
    },
]

OTEL_GENAI_EVENTS = [
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "fake",
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-0",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": [
            {
                "role": "system",
                "parts": [{"content": "You are terse.", "type": "text"}],
                "name": None,
            },
            {
                "role": "user",
                "parts": [{"content": "Weather in Paris?", "type": "text"}],
                "name": None,
            },
        ],
        "gen_ai.output.messages": [
            {
                "role": "assistant",
                "parts": [
                    {
                        "arguments": {"city": "Paris"},
                        "name": "get_weather",
                        "id": "call_1",
                        "type": "tool_call",
                    }
                ],
                "finish_reason": "tool_call",
                "name": None,
            }
        ],
        "gen_ai.tool.definitions": [
            {
                "name": "get_weather",
                "description": None,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "type": "function",
            }
        ],
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "fake",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": [
            {
                "role": "system",
                "parts": [{"content": "You are terse.", "type": "text"}],
                "name": None,
            },
            {
                "role": "user",
                "parts": [{"content": "Weather in Paris?", "type": "text"}],
                "name": None,
            },
            {
                "role": "assistant",
                "parts": [
                    {
                        "arguments": {"city": "Paris"},
                        "name": "get_weather",
                        "id": "call_1",
                        "type": "tool_call",
                    }
                ],
                "name": None,
            },
            {
                "role": "tool",
                "parts": [{"response": "sunny", "id": "call_1", "type": "tool_call_response"}],
                "name": None,
            },
        ],
        "gen_ai.output.messages": [
            {
                "role": "assistant",
                "parts": [{"content": "Sunny in Paris.", "type": "text"}],
                "finish_reason": "stop",
                "name": None,
            }
        ],
        "gen_ai.tool.definitions": [
            {
                "name": "get_weather",
                "description": None,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "type": "function",
            }
        ],
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "fake",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-2",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.input.messages": [
            {
                "role": "system",
                "parts": [{"content": "You are terse.", "type": "text"}],
                "name": None,
            },
            {
                "role": "user",
                "parts": [{"content": "Weather in Paris?", "type": "text"}],
                "name": None,
            },
            {
                "role": "assistant",
                "parts": [
                    {
                        "arguments": {"city": "Paris"},
                        "name": "get_weather",
                        "id": "call_1",
                        "type": "tool_call",
                    }
                ],
                "name": None,
            },
            {
                "role": "tool",
                "parts": [{"response": "sunny", "id": "call_1", "type": "tool_call_response"}],
                "name": None,
            },
            {
                "role": "assistant",
                "parts": [{"content": "Sunny in Paris.", "type": "text"}],
                "name": None,
            },
            {"role": "user", "parts": [{"content": "ok", "type": "text"}], "name": None},
        ],
        "gen_ai.output.messages": [
            {
                "role": "assistant",
                "parts": [{"content": "ok", "type": "text"}],
                "finish_reason": "stop",
                "name": None,
            }
        ],
    },
]

OPENINFERENCE_SPANS = [
    {
        "llm.system": "openai",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are terse.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Weather in Paris?",
        "llm.model_name": "gpt-4o-mini-2024",
        "llm.token_count.total": 18,
        "llm.token_count.prompt": 11,
        "llm.token_count.completion": 7,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": '
        '"Paris"}',
        "llm.finish_reason": "tool_calls",
        "openinference.span.kind": "LLM",
    },
    {
        "llm.system": "openai",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are terse.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Weather in Paris?",
        "llm.input_messages.2.message.role": "assistant",
        "llm.input_messages.2.message.tool_calls.0.tool_call.id": "call_1",
        "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
        "llm.input_messages.3.message.role": "tool",
        "llm.input_messages.3.message.tool_call_id": "call_1",
        "llm.input_messages.3.message.content": "sunny",
        "llm.model_name": "gpt-4o-mini-2024",
        "llm.token_count.total": 18,
        "llm.token_count.prompt": 11,
        "llm.token_count.completion": 7,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Sunny in Paris.",
        "llm.finish_reason": "stop",
        "openinference.span.kind": "LLM",
    },
    {
        "llm.system": "openai",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are terse.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Weather in Paris?",
        "llm.input_messages.2.message.role": "assistant",
        "llm.input_messages.2.message.tool_calls.0.tool_call.id": "call_1",
        "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
        "llm.input_messages.3.message.role": "tool",
        "llm.input_messages.3.message.tool_call_id": "call_1",
        "llm.input_messages.3.message.content": "sunny",
        "llm.input_messages.4.message.role": "assistant",
        "llm.input_messages.4.message.content": "Sunny in Paris.",
        "llm.input_messages.5.message.role": "user",
        "llm.input_messages.5.message.content": "ok",
        "llm.model_name": "gpt-4o-mini-2024",
        "llm.token_count.total": 18,
        "llm.token_count.prompt": 11,
        "llm.token_count.completion": 7,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "ok",
        "llm.finish_reason": "stop",
        "openinference.span.kind": "LLM",
    },
]

OPENLLMETRY_SPANS = [
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.is_streaming": False,
        "gen_ai.openai.api_base": "http://fake/v1/",
        "gen_ai.input.messages": '[{"role": "system", "parts": [{"content": "You are terse.", '
        '"type": "text"}]}, {"role": "user", "parts": [{"content": "Weather '
        'in Paris?", "type": "text"}]}]',
        "gen_ai.tool.definitions": '[{"type": "function", "name": "get_weather", "parameters": '
        '{"type": "object", "properties": {"city": {"type": "string"}}}}]',
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-0",
        "gen_ai.response.finish_reasons": ("tool_call",),
        "gen_ai.usage.total_tokens": 18,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "tool_call", "name": '
        '"get_weather", "id": "call_1", "arguments": {"city": "Paris"}}], '
        '"finish_reason": "tool_call"}]',
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.is_streaming": False,
        "gen_ai.openai.api_base": "http://fake/v1/",
        "gen_ai.input.messages": '[{"role": "system", "parts": [{"content": "You are terse.", '
        '"type": "text"}]}, {"role": "user", "parts": [{"content": "Weather '
        'in Paris?", "type": "text"}]}, {"role": "assistant", "parts": '
        '[{"type": "tool_call", "name": "get_weather", "id": "call_1", '
        '"arguments": {"city": "Paris"}}]}, {"role": "tool", "parts": '
        '[{"type": "tool_call_response", "id": "call_1", "response": '
        '"sunny"}]}]',
        "gen_ai.tool.definitions": '[{"type": "function", "name": "get_weather", "parameters": '
        '{"type": "object", "properties": {"city": {"type": "string"}}}}]',
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.total_tokens": 18,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"content": "Sunny in Paris.", '
        '"type": "text"}], "finish_reason": "stop"}]',
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.is_streaming": False,
        "gen_ai.openai.api_base": "http://fake/v1/",
        "gen_ai.input.messages": '[{"role": "system", "parts": [{"content": "You are terse.", '
        '"type": "text"}]}, {"role": "user", "parts": [{"content": "Weather '
        'in Paris?", "type": "text"}]}, {"role": "assistant", "parts": '
        '[{"type": "tool_call", "name": "get_weather", "id": "call_1", '
        '"arguments": {"city": "Paris"}}]}, {"role": "tool", "parts": '
        '[{"type": "tool_call_response", "id": "call_1", "response": '
        '"sunny"}]}, {"role": "assistant", "parts": [{"content": "Sunny in '
        'Paris.", "type": "text"}]}, {"role": "user", "parts": [{"content": '
        '"ok", "type": "text"}]}]',
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.response.id": "chatcmpl-2",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.total_tokens": 18,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"content": "ok", "type": '
        '"text"}], "finish_reason": "stop"}]',
    },
]

# The older indexed OpenLLMetry form, as opentelemetry-instrumentation-ollama 0.62.4's
# span_utils writes prompts (gen_ai.prompt.<i>.role|content|tool_call_id|tool_calls.<j>.*) and
# completions (gen_ai.completion.<i>.role|content), with its usage keys; the same conversation.
_INDEXED_COMMON: dict[str, object] = {
    "gen_ai.system": "Ollama",
    "gen_ai.request.model": "llama3",
    "gen_ai.response.model": "llama3",
    "llm.request.type": "chat",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 7,
    "llm.usage.total_tokens": 18,
    "gen_ai.prompt.0.role": "system",
    "gen_ai.prompt.0.content": "You are terse.",
    "gen_ai.prompt.1.role": "user",
    "gen_ai.prompt.1.content": "Weather in Paris?",
}
_INDEXED_TOOL_TURN: dict[str, object] = {
    "gen_ai.prompt.2.role": "assistant",
    "gen_ai.prompt.2.tool_calls.0.id": "call_1",
    "gen_ai.prompt.2.tool_calls.0.name": "get_weather",
    "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
    "gen_ai.prompt.3.role": "tool",
    "gen_ai.prompt.3.content": "sunny",
    "gen_ai.prompt.3.tool_call_id": "call_1",
}
INDEXED_SPANS: list[dict[str, object]] = [
    {
        **_INDEXED_COMMON,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.tool_calls.0.id": "call_1",
        "gen_ai.completion.0.tool_calls.0.name": "get_weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city":"Paris"}',
    },
    {
        **_INDEXED_COMMON,
        **_INDEXED_TOOL_TURN,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Sunny in Paris.",
    },
    {
        **_INDEXED_COMMON,
        **_INDEXED_TOOL_TURN,
        "gen_ai.prompt.4.role": "assistant",
        "gen_ai.prompt.4.content": "Sunny in Paris.",
        "gen_ai.prompt.5.role": "user",
        "gen_ai.prompt.5.content": "ok",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "ok",
    },
]
