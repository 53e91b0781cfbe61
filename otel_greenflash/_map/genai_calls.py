"""GenAI telemetry read into LLM calls: :class:`LlmCall`, :class:`ChatMessage` and
:class:`ToolCall`, the values the message rules (:mod:`.message_rules`) and the rating rules
(:mod:`.rating_rules`) build Greenflash bodies from. Pure: no threads, no I/O.

:func:`read_llm_call` reads a finished span's attributes, or the attributes of a
``gen_ai.client.inference.operation.details`` log record, in three conventions:

- OpenTelemetry GenAI: ``gen_ai.input.messages``, ``gen_ai.output.messages``,
  ``gen_ai.system_instructions`` (JSON text on spans, lists of maps on the event; parts ``text``,
  ``tool_call``, ``tool_call_response`` with ``response`` or, from Pydantic AI, ``result``).
  OpenLLMetry 0.62 writes this form too.
- OpenInference: ``llm.input_messages.<i>.message.*`` and ``llm.output_messages.<i>.message.*``.
- OpenLLMetry's indexed form: ``gen_ai.prompt.<i>.*`` and ``gen_ai.completion.<i>.*``.

A call whose instrumentation recorded no content has no messages: nothing is sent for it. Text
parts without ``content`` (Pydantic AI with content off) give messages with empty content.
Reasoning, media and file parts are not read. A malformed attribute gives an
:class:`InvalidAttribute` for the whole call (its history comes again with the next call),
never an exception.

:class:`Skipped` (nothing to send, and why) and :class:`BadAttribute` live here too, beneath
both rule modules, so imports go one way: message and rating rules → this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .. import attributes as attr
from .._event import InvalidAttribute

Attributes = Mapping[str, object]

# OpenTelemetry GenAI semantic conventions.
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
OPERATION_NAME: Final = "gen_ai.operation.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_ID: Final = "gen_ai.response.id"
PROVIDER_NAME: Final = "gen_ai.provider.name"
SYSTEM: Final = "gen_ai.system"
USAGE_PREFIX: Final = "gen_ai.usage."
INFERENCE_EVENT_NAME: Final = attr.GENAI_OPERATION_DETAILS_EVENT

INFERENCE_OPERATIONS: Final = ("chat", "text_completion", "generate_content")
"""``gen_ai.operation.name`` values of an LLM call (agent, tool and embedding spans are not)."""

# OpenInference.
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_INPUT_PREFIX: Final = "llm.input_messages."
OPENINFERENCE_OUTPUT_PREFIX: Final = "llm.output_messages."
OPENINFERENCE_MODEL: Final = "llm.model_name"
OPENINFERENCE_PROVIDER: Final = "llm.provider"
OPENINFERENCE_SYSTEM: Final = "llm.system"
OPENINFERENCE_USAGE_PREFIX: Final = "llm.token_count."

# OpenLLMetry's indexed form.
PROMPT_PREFIX: Final = "gen_ai.prompt."
COMPLETION_PREFIX: Final = "gen_ai.completion."
LLM_USAGE_PREFIX: Final = "llm.usage."

SEMCONV: Final = "gen_ai"
OPENINFERENCE: Final = "openinference"
INDEXED: Final = "gen_ai_indexed"

_TEXT_PART_TYPES = ("text", "refusal")

_OPENINFERENCE_KEY = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(.+)")
_INDEXED_KEY = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")
_TOOL_CALL_KEY = re.compile(r"tool_calls\.(\d+)\.(?:tool_call\.)?(.+)")
_CONTENTS_KEY = re.compile(r"contents\.(\d+)\.message_content\.(.+)")


# ---------------------------------------------------------------------------------------------
# Value objects


@dataclass(frozen=True, slots=True, repr=False)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is JSON data (parsed when the telemetry
    held JSON text; left as text when it is not JSON)."""

    id: str | None
    name: str
    arguments: object = None

    def __repr__(self) -> str:
        return f"ToolCall(name={self.name!r})"


@dataclass(frozen=True, slots=True, repr=False)
class ChatMessage:
    """One message of a chat, in any convention. ``content`` is its text (text parts joined by
    a newline); None when it has none or the instrumentation did not record it. A tool result is
    a message of role ``tool`` whose ``content`` is the result as text."""

    role: str
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None

    def __repr__(self) -> str:
        return f"ChatMessage(role={self.role!r}, tool_calls={len(self.tool_calls)})"


@dataclass(frozen=True, slots=True, repr=False)
class LlmCall:
    """One LLM call read from telemetry. ``repr`` shows no content."""

    convention: str
    input: tuple[ChatMessage, ...] = ()
    output: tuple[ChatMessage, ...] = ()
    system_instructions: str | None = None
    model: str | None = None
    provider: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    response_id: str | None = None
    content_recorded: bool = True
    """False when the messages carry no text because the instrumentation left it out (parts
    without ``content``); then only their structure is sent."""

    @property
    def has_messages(self) -> bool:
        return bool(self.input or self.output)

    def __repr__(self) -> str:
        return (
            f"LlmCall(convention={self.convention!r}, input={len(self.input)}, "
            f"output={len(self.output)}, model={self.model!r})"
        )


@dataclass(frozen=True, slots=True)
class Skipped:
    """Nothing to send, and why (the caller counts it). The message and rating rules return it."""

    reason: str


class BadAttribute(Exception):  # noqa: N818 - control flow: the GenAI rules return it as data
    """One attribute the GenAI rules cannot use. Raised inside :mod:`.genai_calls` and
    :mod:`.rating_rules`, returned from them as an :class:`InvalidAttribute`; never escapes."""

    def __init__(self, attribute: str, problem: str, allowed: str) -> None:
        super().__init__(attribute)
        self.attribute = attribute
        self.problem = problem
        self.allowed = allowed


def problem_with(value: object) -> str:
    """Describe a bad value by its type only: values may be private data."""
    if isinstance(value, str):
        return "is a string in the wrong format" if value.strip() else "is an empty string"
    return f"has type {type(value).__name__}"


# ---------------------------------------------------------------------------------------------
# Reading an LLM call


def read_llm_call(
    attributes: Attributes, *, source_name: str = "", source: str = "span"
) -> LlmCall | InvalidAttribute | None:
    """The LLM call ``attributes`` describe, None when they describe none (not an LLM span),
    or why they cannot be read. Never raises."""
    try:
        convention = detect_convention(attributes)
        if convention is None:
            return None
        if convention == SEMCONV:
            return _read_semconv(attributes)
        if convention == OPENINFERENCE:
            return _read_openinference(attributes)
        return _read_indexed(attributes)
    except BadAttribute as invalid:
        return InvalidAttribute(
            source_name, invalid.attribute, invalid.problem, invalid.allowed, source
        )
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        return InvalidAttribute(
            source_name,
            "gen_ai.*",
            f"could not be read ({type(error).__name__})",
            "attributes as the GenAI conventions write them",
            source,
        )


def detect_convention(attributes: Attributes) -> str | None:
    """Which convention's LLM call ``attributes`` hold, or None."""
    operation = attributes.get(OPERATION_NAME)
    if isinstance(operation, str) and operation not in INFERENCE_OPERATIONS:
        return None
    kind = attributes.get(OPENINFERENCE_SPAN_KIND)
    if kind is not None and kind != "LLM":
        return None
    if INPUT_MESSAGES in attributes or OUTPUT_MESSAGES in attributes:
        return SEMCONV
    has_openinference = kind == "LLM"
    has_indexed = False
    for key in attributes:
        if key.startswith((OPENINFERENCE_INPUT_PREFIX, OPENINFERENCE_OUTPUT_PREFIX)):
            has_openinference = True
            break
        if key.startswith((PROMPT_PREFIX, COMPLETION_PREFIX)):
            has_indexed = True
    if has_openinference:
        return OPENINFERENCE
    if has_indexed:
        return INDEXED
    if isinstance(operation, str) or SYSTEM_INSTRUCTIONS in attributes:
        return SEMCONV  # an inference span whose content was not recorded
    return None


def _read_semconv(attributes: Attributes) -> LlmCall:
    recorded = [True]
    inputs = _semconv_messages(INPUT_MESSAGES, attributes.get(INPUT_MESSAGES), recorded)
    outputs = _semconv_messages(OUTPUT_MESSAGES, attributes.get(OUTPUT_MESSAGES), recorded)
    instructions = _semconv_instructions(attributes.get(SYSTEM_INSTRUCTIONS))
    usage: dict[str, int] = {}
    for key, value in attributes.items():
        if key.startswith(USAGE_PREFIX) and key.endswith("_tokens"):
            usage[key[len(USAGE_PREFIX) :]] = _token_count(key, value)
    return LlmCall(
        SEMCONV,
        inputs,
        outputs,
        instructions,
        model=_text(RESPONSE_MODEL, attributes.get(RESPONSE_MODEL))
        or _text(REQUEST_MODEL, attributes.get(REQUEST_MODEL)),
        provider=_text(PROVIDER_NAME, attributes.get(PROVIDER_NAME))
        or _text(SYSTEM, attributes.get(SYSTEM)),
        usage=usage,
        response_id=_text(RESPONSE_ID, attributes.get(RESPONSE_ID)),
        content_recorded=recorded[0],
    )


_ALLOWED_MESSAGES = (
    'a JSON array of {"role", "parts": [...]} objects (on a log record also a list of maps)'
)


def _json_list(name: str, raw: object, allowed: str) -> Sequence[object]:
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except RecursionError:
            raise BadAttribute(name, "is nested too deep", allowed) from None
        except ValueError:
            raise BadAttribute(name, "is not valid JSON", allowed) from None
        if not isinstance(parsed, list):
            raise BadAttribute(name, f"holds a JSON {type(parsed).__name__}", allowed)
        return parsed
    if isinstance(raw, Sequence) and not isinstance(raw, (bytes, bytearray)):
        return raw
    raise BadAttribute(name, problem_with(raw), allowed)


def _semconv_messages(name: str, raw: object, recorded: list[bool]) -> tuple[ChatMessage, ...]:
    if raw is None:
        return ()
    messages: list[ChatMessage] = []
    for item in _json_list(name, raw, _ALLOWED_MESSAGES):
        if not isinstance(item, Mapping):
            raise BadAttribute(name, "holds a message that is not an object", _ALLOWED_MESSAGES)
        role = item.get("role")
        parts = item.get("parts")
        if not isinstance(role, str) or not isinstance(parts, Sequence) or isinstance(parts, str):
            raise BadAttribute(name, "holds a message without a role or parts", _ALLOWED_MESSAGES)
        messages.extend(_semconv_message(name, role, parts, recorded))
    return tuple(messages)


def _semconv_message(
    name: str, role: str, parts: Sequence[object], recorded: list[bool]
) -> Iterator[ChatMessage]:
    """One semconv message as messages: its tool results each on their own (first), then the
    rest (text and tool calls) as one message when it has any."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    has_text = False
    for part in parts:
        if not isinstance(part, Mapping):
            raise BadAttribute(name, "holds a part that is not an object", _ALLOWED_MESSAGES)
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES:
            has_text = True
            content = part.get("content")
            if content is None:
                recorded[0] = False
                continue
            if not isinstance(content, str):
                raise BadAttribute(
                    name, "holds a text part whose content is not a string", _ALLOWED_MESSAGES
                )
            texts.append(content)
        elif kind == "tool_call":
            tool_name = part.get("name")
            call_id = part.get("id")
            calls.append(
                ToolCall(
                    call_id if isinstance(call_id, str) else None,
                    tool_name if isinstance(tool_name, str) else "",
                    _parsed_arguments(part.get("arguments")),
                )
            )
        elif kind == "tool_call_response":
            response = part.get("response", part.get("result"))
            call_id = part.get("id")
            tool_name = part.get("name")
            yield ChatMessage(
                "tool",
                as_text(response),
                tool_call_id=call_id if isinstance(call_id, str) else None,
                tool_name=tool_name if isinstance(tool_name, str) else None,
            )
        # other parts (reasoning, media, files, server tools) are not sent
    if has_text or calls:
        yield ChatMessage(role, "\n".join(texts) if texts else None, tuple(calls))


def _semconv_instructions(raw: object) -> str | None:
    if raw is None:
        return None
    texts = []
    for part in _json_list(SYSTEM_INSTRUCTIONS, raw, _ALLOWED_INSTRUCTIONS):
        if not isinstance(part, Mapping):
            raise BadAttribute(
                SYSTEM_INSTRUCTIONS, "holds a part that is not an object", _ALLOWED_INSTRUCTIONS
            )
        content = part.get("content")
        if part.get("type") == "text" and isinstance(content, str):
            texts.append(content)
    return "\n".join(texts) if texts else None


_ALLOWED_INSTRUCTIONS = 'a JSON array of {"type": "text", "content"} parts'


def _parsed_arguments(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return plain_data(value)


def plain_data(value: object) -> object:
    """Mappings and sequences from log record attributes as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [plain_data(item) for item in value]
    return value


def as_text(value: object) -> str | None:
    """A tool result or arguments as text: text as it is, anything else as canonical JSON."""
    if value is None or isinstance(value, str):
        return value
    return canonical_json(plain_data(value))


def canonical_json(value: object) -> str:
    """``value`` as JSON with sorted keys and no spaces: the same data, the same text."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    raise BadAttribute(name, problem_with(value), "a string")


def _token_count(name: str, value: object) -> int:
    """A token count (usage keys ending in ``_tokens``; other usage keys, such as a cost, are
    not read)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise BadAttribute(name, problem_with(value), "a whole number of tokens")


def _read_openinference(attributes: Attributes) -> LlmCall:
    grouped: dict[str, dict[int, dict[str, object]]] = {"input": {}, "output": {}}
    usage: dict[str, int] = {}
    for key, value in attributes.items():
        if key.startswith(OPENINFERENCE_USAGE_PREFIX):
            usage[_OPENINFERENCE_USAGE.get(key, key[len(OPENINFERENCE_USAGE_PREFIX) :])] = (
                _token_count(key, value)
            )
            continue
        match = _OPENINFERENCE_KEY.fullmatch(key)
        if match is not None:
            side, index, rest = match.groups()
            grouped[side].setdefault(int(index), {})[rest] = value
    inputs = tuple(
        message
        for index, fields in sorted(grouped["input"].items())
        for message in _flat_message(f"{OPENINFERENCE_INPUT_PREFIX}{index}.message", fields)
    )
    outputs = tuple(
        message
        for index, fields in sorted(grouped["output"].items())
        for message in _flat_message(f"{OPENINFERENCE_OUTPUT_PREFIX}{index}.message", fields)
    )
    return LlmCall(
        OPENINFERENCE,
        inputs,
        outputs,
        model=_text(OPENINFERENCE_MODEL, attributes.get(OPENINFERENCE_MODEL)),
        provider=_text(OPENINFERENCE_PROVIDER, attributes.get(OPENINFERENCE_PROVIDER))
        or _text(OPENINFERENCE_SYSTEM, attributes.get(OPENINFERENCE_SYSTEM)),
        usage=usage,
    )


_OPENINFERENCE_USAGE = {
    "llm.token_count.prompt": "input_tokens",
    "llm.token_count.completion": "output_tokens",
    "llm.token_count.total": "total_tokens",
}


def _read_indexed(attributes: Attributes) -> LlmCall:
    grouped: dict[str, dict[int, dict[str, object]]] = {"prompt": {}, "completion": {}}
    usage: dict[str, int] = {}
    for key, value in attributes.items():
        if key.startswith((USAGE_PREFIX, LLM_USAGE_PREFIX)) and key.endswith("_tokens"):
            prefix = USAGE_PREFIX if key.startswith(USAGE_PREFIX) else LLM_USAGE_PREFIX
            suffix = key[len(prefix) :]
            usage[_INDEXED_USAGE.get(suffix, suffix)] = _token_count(key, value)
            continue
        match = _INDEXED_KEY.fullmatch(key)
        if match is not None:
            side, index, rest = match.groups()
            grouped[side].setdefault(int(index), {})[rest] = value
    inputs = tuple(
        message
        for index, fields in sorted(grouped["prompt"].items())
        for message in _flat_message(f"{PROMPT_PREFIX}{index}", fields)
    )
    outputs = tuple(
        message
        for index, fields in sorted(grouped["completion"].items())
        for message in _flat_message(
            f"{COMPLETION_PREFIX}{index}", fields, default_role="assistant"
        )
    )
    return LlmCall(
        INDEXED,
        inputs,
        outputs,
        model=_text(RESPONSE_MODEL, attributes.get(RESPONSE_MODEL))
        or _text(REQUEST_MODEL, attributes.get(REQUEST_MODEL)),
        provider=_text(SYSTEM, attributes.get(SYSTEM))
        or _text(PROVIDER_NAME, attributes.get(PROVIDER_NAME)),
        usage=usage,
        response_id=_text(RESPONSE_ID, attributes.get(RESPONSE_ID)),
    )


_INDEXED_USAGE = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}


def _flat_message(
    prefix: str, fields: Mapping[str, object], *, default_role: str | None = None
) -> Iterator[ChatMessage]:
    """A message written as one attribute per field (OpenInference and the indexed form)."""
    role = fields.get("role", default_role)
    if role is None:
        return
    if not isinstance(role, str):
        raise BadAttribute(f"{prefix}.role", problem_with(role), "a string")
    content = fields.get("content")
    if content is not None and not isinstance(content, str):
        raise BadAttribute(f"{prefix}.content", problem_with(content), "a string")
    if content is None:
        texts = [
            (int(match.group(1)), value)
            for key, value in fields.items()
            if (match := _CONTENTS_KEY.fullmatch(key)) and match.group(2) == "text"
            if isinstance(value, str)
        ]
        if texts:
            content = "\n".join(text for _, text in sorted(texts))
    calls: dict[int, dict[str, object]] = {}
    for key, value in fields.items():
        match = _TOOL_CALL_KEY.fullmatch(key)
        if match is not None:
            calls.setdefault(int(match.group(1)), {})[match.group(2)] = value
    tool_calls = []
    for index, call in sorted(calls.items()):
        name = call.get("function.name", call.get("name"))
        call_id = call.get("id")
        if name is not None and not isinstance(name, str):
            raise BadAttribute(f"{prefix}.tool_calls.{index}.name", problem_with(name), "a string")
        tool_calls.append(
            ToolCall(
                call_id if isinstance(call_id, str) else None,
                name or "",
                _parsed_arguments(call.get("function.arguments", call.get("arguments"))),
            )
        )
    call_id = fields.get("tool_call_id")
    yield ChatMessage(
        role,
        content,
        tuple(tool_calls),
        tool_call_id=call_id if isinstance(call_id, str) else None,
    )
