"""The message rules: an LLM call (:mod:`.genai_calls`) to a Messages API body, with stable
message ids. Pure: no threads, no I/O.

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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .._config import Redactor
from .._event import clean_text
from .genai_calls import (
    PROVIDER_NAME,
    RESPONSE_ID,
    USAGE_PREFIX,
    ChatMessage,
    LlmCall,
    Skipped,
    ToolCall,
    as_text,
    canonical_json,
    plain_data,
)
from .rules import format_timestamp

SYSTEM_ROLES: Final = ("system", "developer")
_ASSISTANT_ROLES = ("assistant", "model")
_TOOL_ROLES = ("tool", "function", "ipython")

MESSAGE_ID_PREFIX: Final = "otel-msg-"
_ID_VERSION = 1
TRUNCATION_MARKER: Final = " …[truncated]"


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
        canonical_json([_ID_VERSION, conversation_key, *unit_fields]).encode("utf-8", "replace")
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
            text = as_text(arguments)
            content = self.content(text, "tool_call")
            message["messageType"] = "tool_call"
            message["toolName"] = clean_text(tool_name) or "unknown"
            if content and content == text:  # neither redacted nor cut: send the object too
                plain = plain_data(arguments)
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
