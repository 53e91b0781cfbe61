"""The conversation rules: GenAI telemetry to Messages API and Ratings API bodies. Pure: no
threads, no I/O (the events' rules are :mod:`.rules`).

**Reading an LLM call** (:func:`read_llm_call`) from a finished span's attributes, or from the
attributes of a ``gen_ai.client.inference.operation.details`` log record, in three conventions:

- OpenTelemetry GenAI: ``gen_ai.input.messages``, ``gen_ai.output.messages``,
  ``gen_ai.system_instructions`` (JSON text on spans, lists of maps on the event; parts ``text``,
  ``tool_call``, ``tool_call_response`` with ``response`` or, from Pydantic AI, ``result``).
  OpenLLMetry 0.62 writes this form too.
- OpenInference: ``llm.input_messages.<i>.message.*`` and ``llm.output_messages.<i>.message.*``.
- OpenLLMetry's indexed form: ``gen_ai.prompt.<i>.*`` and ``gen_ai.completion.<i>.*``.

A call whose instrumentation recorded no content has no messages: nothing is sent for it. Text
parts without ``content`` (Pydantic AI with content off) give messages with empty content.
Reasoning, media and file parts are not sent. A malformed attribute gives an
:class:`InvalidAttribute` for the whole call (its history comes again with the next call),
never an exception.

**Messages** (:func:`messages_body`): system and developer messages and
``gen_ai.system_instructions`` become the ``systemPrompt``, not messages. Every other message
gives a ``role`` message (user/assistant) for its text (when it has text, or nothing else),
then one ``messageType: tool_call`` message per tool call (``toolName``, the arguments as
``input`` and as JSON ``content``); a tool result is a ``messageType: observation`` message
(``toolName`` from the result or its call). No convention marks a failed tool result, so
``tool_error`` is never written.

**Message ids**: chat APIs resend the whole history on every call, so each message gets an
``externalMessageId`` that is the same whenever the same message of the same conversation is
seen again, and the API stores it once. Positions: system messages and messages without parts
take none (so a system prompt that changes between calls moves no id); every other message
takes the next one, the input history 0..k-1 and then the outputs k.., so the answer of call N,
resent as history by call N+1, is at the same position both times. The id is a digest of (the
conversation key — the external conversation id, else Greenflash's —, the position, the kind
of message and its index among the message's tool calls, the role, the tool name and call id,
and the content *as sent*: redacted, cut to the size limit, empty when content is off; tool
arguments as canonical JSON). So two identical "ok" at different positions get different ids,
an edited or regenerated message gets a new one, the same conversation read through any of
the conventions gets the same ids, and an id never reveals content the body does not carry.
Each message's ``parentExternalMessageId`` is the id of the message before it. Ids are not
stable when the application trims or rewrites the history it resends, or sends only the new
turn (``previous_response_id``): positions then move, and only a different content keeps two
messages apart.

**Ratings**: :func:`rating_from_evaluation` for ``gen_ai.evaluation.result`` events and
:func:`rating_from_feedback` for the user-feedback helper.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .._event import InvalidAttribute, clean_text
from .rules import format_timestamp

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
INFERENCE_EVENT_NAME: Final = "gen_ai.client.inference.operation.details"
EVALUATION_EVENT_NAME: Final = "gen_ai.evaluation.result"
EVALUATION_NAME: Final = "gen_ai.evaluation.name"
EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"
RATING_MIN: Final = "greenflash.rating.min"
"""On an evaluation event: the score's lowest value, when the inferred range is wrong."""
RATING_MAX: Final = "greenflash.rating.max"

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

SYSTEM_ROLES: Final = ("system", "developer")
_ASSISTANT_ROLES = ("assistant", "model")
_TOOL_ROLES = ("tool", "function", "ipython")
_TEXT_PART_TYPES = ("text", "refusal")

MESSAGE_ID_PREFIX: Final = "otel-msg-"
_ID_VERSION = 1
TRUNCATION_MARKER: Final = " …[truncated]"

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
    """Nothing to send, and why (the caller counts it)."""

    reason: str


@dataclass(frozen=True, slots=True, repr=False)
class MessagesRequest:
    """One ``POST /messages`` body. ``repr`` shows counts only."""

    body: Mapping[str, object]
    message_ids: tuple[str, ...]
    redacted: int = 0
    """Messages whose content the redaction hook changed or removed."""
    redaction_failed: int = 0
    """Messages sent without content because the redaction hook raised."""
    truncated: int = 0
    """Messages cut to the size limit."""

    def __repr__(self) -> str:
        return (
            f"MessagesRequest(messages={len(self.message_ids)}, redacted={self.redacted}, "
            f"truncated={self.truncated})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class RatingRequest:
    """One ``POST /ratings`` body. ``repr`` shows the score only (feedback is user text)."""

    body: Mapping[str, object]

    def __repr__(self) -> str:
        return (
            f"RatingRequest(rating={self.body.get('rating')!r}, "
            f"min={self.body.get('ratingMin')!r}, max={self.body.get('ratingMax')!r})"
        )


Redactor = Callable[[str, str], "str | None"]
"""``redact(content, role) -> content``: the text to send instead, or None to send none."""


@dataclass(frozen=True, slots=True)
class MessageOptions:
    """How message bodies are written.

    ``include_content`` False sends structure only (roles, tool names, ids, times, usage; every
    ``content`` empty, no tool ``input``). ``redact(content, role)`` sees each text, each tool
    result (role ``tool``), each tool call's arguments as JSON text (role ``tool_call``) and the
    system prompt (role ``system``) before it is sent; None from it, or an exception, sends that
    message with empty content (the message is kept: the conversation keeps its turns).
    ``max_message_bytes`` limits each message's content in UTF-8 bytes: longer content is cut
    at a character boundary and ends with :data:`TRUNCATION_MARKER` (the request counts it).
    A tool call carries its arguments as the ``input`` object only when the hook left them
    unchanged and they fit; otherwise only in ``content``.
    """

    include_content: bool = True
    redact: Redactor | None = None
    max_message_bytes: int | None = 32_768


@dataclass(frozen=True, slots=True)
class ConversationIds:
    """Who a call belongs to, from linking (the ids are already checked there)."""

    product_id: str | None = None
    conversation_id: str | None = None
    external_conversation_id: str | None = None
    external_user_id: str | None = None
    external_organization_id: str | None = None

    @property
    def conversation_key(self) -> str | None:
        """What message ids are derived from: the external conversation id when known (the
        one the application chose), else Greenflash's."""
        if self.external_conversation_id is not None:
            return "x:" + self.external_conversation_id
        if self.conversation_id is not None:
            return "c:" + self.conversation_id
        return None


class _Invalid(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, attribute: str, problem: str, allowed: str) -> None:
        super().__init__(attribute)
        self.attribute = attribute
        self.problem = problem
        self.allowed = allowed


def _got(value: object) -> str:
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
    except _Invalid as invalid:
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
            raise _Invalid(name, "is nested too deep", allowed) from None
        except ValueError:
            raise _Invalid(name, "is not valid JSON", allowed) from None
        if not isinstance(parsed, list):
            raise _Invalid(name, f"holds a JSON {type(parsed).__name__}", allowed)
        return parsed
    if isinstance(raw, Sequence) and not isinstance(raw, (bytes, bytearray)):
        return raw
    raise _Invalid(name, _got(raw), allowed)


def _semconv_messages(name: str, raw: object, recorded: list[bool]) -> tuple[ChatMessage, ...]:
    if raw is None:
        return ()
    messages: list[ChatMessage] = []
    for item in _json_list(name, raw, _ALLOWED_MESSAGES):
        if not isinstance(item, Mapping):
            raise _Invalid(name, "holds a message that is not an object", _ALLOWED_MESSAGES)
        role = item.get("role")
        parts = item.get("parts")
        if not isinstance(role, str) or not isinstance(parts, Sequence) or isinstance(parts, str):
            raise _Invalid(name, "holds a message without a role or parts", _ALLOWED_MESSAGES)
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
            raise _Invalid(name, "holds a part that is not an object", _ALLOWED_MESSAGES)
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES:
            has_text = True
            content = part.get("content")
            if content is None:
                recorded[0] = False
                continue
            if not isinstance(content, str):
                raise _Invalid(
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
                _result_text(response),
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
            raise _Invalid(
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
    return _plain(value)


def _plain(value: object) -> object:
    """Mappings and sequences from log record attributes as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_plain(item) for item in value]
    return value


def _result_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _canonical_json(_plain(value))


def _canonical_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    raise _Invalid(name, _got(value), "a string")


def _token_count(name: str, value: object) -> int:
    """A token count (usage keys ending in ``_tokens``; other usage keys, such as a cost, are
    not read)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Invalid(name, _got(value), "a whole number of tokens")


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
        raise _Invalid(f"{prefix}.role", _got(role), "a string")
    content = fields.get("content")
    if content is not None and not isinstance(content, str):
        raise _Invalid(f"{prefix}.content", _got(content), "a string")
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
            raise _Invalid(f"{prefix}.tool_calls.{index}.name", _got(name), "a string")
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


# ---------------------------------------------------------------------------------------------
# Message ids and bodies


@dataclass(frozen=True, slots=True)
class _Unit:
    """One Greenflash message: its place and what identifies it."""

    position: int
    kind: str  # "text", "tool_call" or "observation"
    index: int
    role: str
    output: bool
    message: ChatMessage
    tool_call: ToolCall | None = None


def _units(call: LlmCall) -> Iterator[_Unit]:
    position = 0
    for output, messages in ((False, call.input), (True, call.output)):
        for message in messages:
            role = message.role.lower()
            if role in SYSTEM_ROLES:
                continue
            if role in _TOOL_ROLES or (message.tool_call_id is not None and not message.tool_calls):
                yield _Unit(position, "observation", 0, "tool", output, message)
            else:
                if role in _ASSISTANT_ROLES or (output and role != "user"):
                    role = "assistant"  # an output without a known role is the model's
                elif role != "user":
                    role = "user"  # other input roles (a named participant) speak as the user
                if message.content is not None or not message.tool_calls:
                    yield _Unit(position, "text", 0, role, output, message)
                for index, tool_call in enumerate(message.tool_calls):
                    yield _Unit(position, "tool_call", index, role, output, message, tool_call)
            position += 1


def _system_prompt(call: LlmCall) -> str | None:
    texts = [call.system_instructions] if call.system_instructions else []
    texts.extend(
        message.content
        for message in call.input
        if message.role.lower() in SYSTEM_ROLES and message.content
    )
    return "\n\n".join(texts) if texts else None


def message_id(conversation_key: str, unit_fields: Sequence[object]) -> str:
    """The ``externalMessageId`` of one message (see the module's docstring)."""
    digest = hashlib.sha256(
        _canonical_json([_ID_VERSION, conversation_key, *unit_fields]).encode("utf-8", "replace")
    ).hexdigest()
    return MESSAGE_ID_PREFIX + digest[:32]


def _cut(text: str, limit: int | None) -> tuple[str, bool]:
    """``text`` within ``limit`` UTF-8 bytes (marker included), and whether it was cut."""
    if limit is None:
        return text, False
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text, False
    room = limit - len(TRUNCATION_MARKER.encode("utf-8"))
    if room <= 0:  # a limit smaller than the marker: nothing of the text fits
        return "", True
    return encoded[:room].decode("utf-8", "ignore") + TRUNCATION_MARKER, True


def messages_body(
    call: LlmCall,
    ids: ConversationIds,
    *,
    default_external_user_id: str | None = None,
    options: MessageOptions | None = None,
    start_time_ns: int | None = None,
    end_time_ns: int | None = None,
) -> MessagesRequest | Skipped:
    """The ``POST /messages`` body for one LLM call, or why there is none.

    ``externalUserId`` is the linked user id, else ``default_external_user_id``; with neither
    the call is skipped (the API requires one). A conversation id (Greenflash's or the
    application's) is required too: without one each call would start a new conversation.
    Inputs get ``createdAt`` = the span's start, outputs its end (a message already stored
    keeps its first time: the API skips it). Usage, response id and finish go in each output
    message's ``properties``, the provider in the body's ``properties``.
    """
    options = options if options is not None else MessageOptions()
    if not call.has_messages:
        return Skipped("no messages recorded")
    conversation_key = ids.conversation_key
    if conversation_key is None:
        return Skipped("no conversation id")
    user_id = ids.external_user_id or default_external_user_id
    if not user_id:
        return Skipped("no user id")
    if ids.product_id is None and ids.conversation_id is None:
        return Skipped("no product id")

    writer = _MessageWriter(options, conversation_key, call, start_time_ns, end_time_ns)
    messages = [writer.write(unit) for unit in _units(call)]
    if not messages:
        return Skipped("no messages recorded")

    body: dict[str, object] = {"externalUserId": user_id}
    if ids.external_conversation_id is not None:
        body["externalConversationId"] = ids.external_conversation_id
    if ids.conversation_id is not None:
        body["conversationId"] = ids.conversation_id
    if ids.product_id is not None:
        body["productId"] = ids.product_id
    if ids.external_organization_id is not None:
        body["externalOrganizationId"] = ids.external_organization_id
    if call.model:
        body["model"] = clean_text(call.model)
    system_prompt = _system_prompt(call) if options.include_content else None
    if system_prompt is not None:
        text = writer.content(system_prompt, "system")
        if text:
            body["systemPrompt"] = text
    if call.provider:
        body["properties"] = {PROVIDER_NAME: clean_text(call.provider)}
    body["messages"] = messages
    return MessagesRequest(
        body,
        tuple(str(message["externalMessageId"]) for message in messages),
        writer.redacted,
        writer.redaction_failed,
        writer.truncated,
    )


class _MessageWriter:
    def __init__(
        self,
        options: MessageOptions,
        conversation_key: str,
        call: LlmCall,
        start_time_ns: int | None,
        end_time_ns: int | None,
    ) -> None:
        self.options = options
        self.conversation_key = conversation_key
        self.call = call
        self.input_at = format_timestamp(start_time_ns) if start_time_ns is not None else None
        end = end_time_ns if end_time_ns is not None else start_time_ns
        self.output_at = format_timestamp(end) if end is not None else None
        self.parent: str | None = None
        self.redacted = 0
        self.redaction_failed = 0
        self.truncated = 0
        self.tool_names = {
            tool_call.id: tool_call.name
            for message in (*call.input, *call.output)
            for tool_call in message.tool_calls
            if tool_call.id is not None
        }

    def content(self, text: str | None, role: str) -> str:
        """``text`` as sent: redacted, cut to the limit; empty when content is off."""
        if text is None or not self.options.include_content:
            return ""
        redact = self.options.redact
        if redact is not None:
            try:
                redacted = redact(text, role)
            except Exception:  # the hook is application code: fail closed, never raise
                self.redaction_failed += 1
                return ""
            if redacted != text:
                self.redacted += 1
            if redacted is None:
                return ""
            text = redacted if isinstance(redacted, str) else ""
        text, cut = _cut(clean_text(text), self.options.max_message_bytes)
        self.truncated += cut
        return text

    def write(self, unit: _Unit) -> dict[str, object]:
        message: dict[str, object] = {}
        tool_name: str | None = None
        call_id: str | None = None
        if unit.kind == "tool_call" and unit.tool_call is not None:
            tool_name = unit.tool_call.name
            call_id = unit.tool_call.id
            arguments = unit.tool_call.arguments
            text = _result_text(arguments)
            content = self.content(text, "tool_call")
            message["messageType"] = "tool_call"
            message["toolName"] = clean_text(tool_name) or "unknown"
            if content and content == text:  # neither redacted nor cut: send the object too
                plain = _plain(arguments)
                message["input"] = plain if isinstance(plain, dict) else {"arguments": plain}
        elif unit.kind == "observation":
            call_id = unit.message.tool_call_id
            tool_name = unit.message.tool_name or self.tool_names.get(call_id or "")
            content = self.content(unit.message.content, "tool")
            message["messageType"] = "observation"
            if tool_name:
                message["toolName"] = clean_text(tool_name)
        else:
            content = self.content(unit.message.content, unit.role)
            message["role"] = unit.role
        message["content"] = content
        identity = message_id(
            self.conversation_key,
            [unit.position, unit.kind, unit.index, unit.role, tool_name, call_id, content],
        )
        message["externalMessageId"] = identity
        if self.parent is not None:
            message["parentExternalMessageId"] = self.parent
        self.parent = identity
        created_at = self.output_at if unit.output else self.input_at
        if created_at is not None:
            message["createdAt"] = created_at
        if unit.output:
            if self.call.model:
                message["model"] = clean_text(self.call.model)
            properties = self.output_properties()
            if properties:
                message["properties"] = properties
        return message

    def output_properties(self) -> dict[str, object]:
        properties: dict[str, object] = {
            USAGE_PREFIX + name: count for name, count in sorted(self.call.usage.items())
        }
        if self.call.response_id:
            properties[RESPONSE_ID] = clean_text(self.call.response_id)
        return properties


def message_ids(
    call: LlmCall, ids: ConversationIds, *, options: MessageOptions | None = None
) -> tuple[str, ...]:
    """The ``externalMessageId`` of every message :func:`messages_body` writes for ``call``
    (e.g. to aim a rating at the last output: ``message_ids(...)[-1]``); empty when it writes
    none."""
    request = messages_body(call, ids, default_external_user_id="-", options=options)
    return request.message_ids if isinstance(request, MessagesRequest) else ()


# ---------------------------------------------------------------------------------------------
# Ratings


@dataclass(frozen=True, slots=True)
class RatingTarget:
    """What a rating is about: a message (preferred when known) or a conversation."""

    product_id: str
    conversation_id: str | None = None
    external_conversation_id: str | None = None
    message_id: str | None = None
    external_message_id: str | None = None

    def fields(self) -> dict[str, object] | None:
        for name, value in (
            ("externalMessageId", self.external_message_id),
            ("messageId", self.message_id),
            ("externalConversationId", self.external_conversation_id),
            ("conversationId", self.conversation_id),
        ):
            if value is not None:
                return {name: value}
        return None


_SCORE_RANGES = ((0.0, 1.0), (0.0, 10.0), (0.0, 100.0))
_ALLOWED_SCORE = (
    f"a finite number from 0 to 100 (rated on 0-1, 0-10 or 0-100), or any finite number "
    f"with {RATING_MIN} and {RATING_MAX} on the event"
)
_ALLOWED_BOUND = f"finite numbers, {RATING_MIN} below {RATING_MAX}, both given"


def rating_from_evaluation(
    attributes: Attributes,
    target: RatingTarget,
    *,
    rated_at_ns: int | None = None,
    source_name: str = EVALUATION_EVENT_NAME,
) -> RatingRequest | Skipped | InvalidAttribute:
    """The ``POST /ratings`` body of one ``gen_ai.evaluation.result`` event.

    The conventions give a score but no range: a score from 0 to 1 is rated on 0-1, above 1 up
    to 10 on 0-10, above 10 up to 100 on 0-100 (so 1 is 1 of 0-1 and 3 is 3 of 0-10);
    ``greenflash.rating.min`` and ``greenflash.rating.max`` on the event set the range instead.
    A label without a score is skipped (no number to send). Ratings have no properties:
    ``feedback`` is "name (label): explanation", with whichever of the three are present.
    """
    if target.fields() is None:
        return Skipped("no conversation or message to rate")
    score = attributes.get(EVALUATION_SCORE_VALUE)
    if score is None and attributes.get(EVALUATION_SCORE_LABEL) is not None:
        return Skipped("evaluation with a label and no score")
    try:
        value = _finite(EVALUATION_SCORE_VALUE, score, _ALLOWED_SCORE)
        if RATING_MIN in attributes or RATING_MAX in attributes:
            low = _finite(RATING_MIN, attributes.get(RATING_MIN), _ALLOWED_BOUND)
            high = _finite(RATING_MAX, attributes.get(RATING_MAX), _ALLOWED_BOUND)
            if not low < high:
                raise _Invalid(RATING_MIN, f"is not below {RATING_MAX}", _ALLOWED_BOUND)
        else:
            low, high = next(
                ((lo, hi) for lo, hi in _SCORE_RANGES if lo <= value <= hi), (0.0, 100.0)
            )
        if not low <= value <= high:
            raise _Invalid(EVALUATION_SCORE_VALUE, "is out of range", _ALLOWED_SCORE)
    except _Invalid as invalid:
        return InvalidAttribute(
            source_name, invalid.attribute, invalid.problem, invalid.allowed, "log record"
        )
    texts = [attributes.get(key) for key in (EVALUATION_NAME, EVALUATION_SCORE_LABEL)]
    name, label = (text if isinstance(text, str) and text.strip() else None for text in texts)
    explanation = attributes.get(EVALUATION_EXPLANATION)
    head = " ".join(piece for piece in (name, f"({label})" if label else None) if piece)
    feedback = ": ".join(
        piece
        for piece in (head, explanation if isinstance(explanation, str) else None)
        if piece and piece.strip()
    )
    return _rating(target, value, low, high, feedback or None, rated_at_ns)


def _finite(name: str, value: object, allowed: str) -> float:
    if value is None:
        raise _Invalid(name, "is missing", allowed)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(name, _got(value), allowed)
    if not math.isfinite(value):
        raise _Invalid(name, "is not a finite number", allowed)
    return float(value)


FEEDBACK_KINDS: Final = ("thumbs", "stars")
_THUMBS = {"up": 1, "down": 0}


def rating_from_feedback(
    kind: str,
    value: object,
    target: RatingTarget,
    *,
    feedback: str | None = None,
    rated_at_ns: int | None = None,
) -> RatingRequest | InvalidAttribute:
    """A user's feedback as a rating: ``thumbs`` (True/False, "up"/"down" in any case, 1/0) is
    1 or 0 of 0-1; ``stars`` (a whole number 1-5) is rated on 1-5. A bad kind, value or target
    gives an :class:`InvalidAttribute` (source ``feedback``) naming the argument."""

    def invalid(argument: str, problem: str, allowed: str) -> InvalidAttribute:
        return InvalidAttribute(f"feedback {kind!r}", argument, problem, allowed, "feedback")

    if target.fields() is None:
        return invalid("target", "has no conversation or message id", "a conversation or message")
    if kind == "thumbs":
        if isinstance(value, str):
            rating = _THUMBS.get(value.strip().lower())
        elif isinstance(value, int) and value in (0, 1):  # True and False too
            rating = int(value)
        else:
            rating = None
        if rating is None:
            problem = "is not a thumbs value" if isinstance(value, (int, str)) else _got(value)
            return invalid("value", problem, "True/False, 'up'/'down' or 1/0")
        return _rating(target, rating, 0, 1, feedback, rated_at_ns)
    if kind == "stars":
        if isinstance(value, bool) or not isinstance(value, int):
            return invalid("value", _got(value), "a whole number from 1 to 5")
        if not 1 <= value <= 5:
            return invalid("value", "is out of range", "a whole number from 1 to 5")
        return _rating(target, value, 1, 5, feedback, rated_at_ns)
    return invalid("kind", "is not a known kind", "one of " + ", ".join(FEEDBACK_KINDS))


def _rating(
    target: RatingTarget,
    rating: float,
    low: float,
    high: float,
    feedback: str | None,
    rated_at_ns: int | None,
) -> RatingRequest:
    body: dict[str, object] = {
        "productId": target.product_id,
        "rating": _number(rating),
        "ratingMin": _number(low),
        "ratingMax": _number(high),
    }
    body.update(target.fields() or {})
    if feedback:
        body["feedback"] = clean_text(feedback)
    if rated_at_ns is not None:
        body["ratedAt"] = format_timestamp(rated_at_ns)
    return RatingRequest(body)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
