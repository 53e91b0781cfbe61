"""The Events, Messages and Ratings API request contracts, as pure validators (local server)."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

REQUIRED_FIELDS = ("eventType", "productId", "value")
UUID_FIELDS = ("productId", "conversationId", "userId", "organizationId")
STRING_FIELDS = (
    "eventType",
    "value",
    "externalConversationId",
    "externalUserId",
    "externalOrganizationId",
    "insertId",
)
KNOWN_FIELDS = frozenset(
    (
        *REQUIRED_FIELDS,
        "valueType",
        "influence",
        "qualityImpactScore",
        "conversationId",
        "externalConversationId",
        "userId",
        "externalUserId",
        "organizationId",
        "externalOrganizationId",
        "eventAt",
        "properties",
        "insertId",
        "sampleRate",
        "forceSample",
    )
)
VALUE_TYPES = ("currency", "numeric", "text", "boolean")
INFLUENCES = ("positive", "negative", "neutral")

_ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


def validate_event_body(body: object) -> list[str]:
    """Return every way ``body`` breaks the ``POST /events`` contract (empty when valid)."""
    if not isinstance(body, Mapping):
        return ["body must be a JSON object"]
    errors: list[str] = []
    errors.extend(f"unknown field {name!r}" for name in body if name not in KNOWN_FIELDS)
    errors.extend(f"{name} is required" for name in REQUIRED_FIELDS if name not in body)
    for name in STRING_FIELDS:
        if name in body and not isinstance(body[name], str):
            errors.append(f"{name} must be a string")
    if isinstance(body.get("eventType"), str) and not body["eventType"].strip():
        errors.append("eventType must not be empty")
    for name in UUID_FIELDS:
        if name in body and not _is_uuid(body[name]):
            errors.append(f"{name} must be a UUID")
    if "valueType" in body and body["valueType"] not in VALUE_TYPES:
        errors.append(f"valueType must be one of {', '.join(VALUE_TYPES)}")
    if "influence" in body and body["influence"] not in INFLUENCES:
        errors.append(f"influence must be one of {', '.join(INFLUENCES)}")
    if "qualityImpactScore" in body and not _in_range(body["qualityImpactScore"], -1.0, 1.0):
        errors.append("qualityImpactScore must be a number from -1 to 1")
    if "sampleRate" in body and not _in_range(body["sampleRate"], 0.0, 1.0):
        errors.append("sampleRate must be a number from 0 to 1")
    if "forceSample" in body and not isinstance(body["forceSample"], bool):
        errors.append("forceSample must be a boolean")
    if "properties" in body and not isinstance(body["properties"], Mapping):
        errors.append("properties must be an object")
    if "eventAt" in body and not _is_date_time(body["eventAt"]):
        errors.append("eventAt must be an ISO 8601 date-time with a zone")
    return errors


MESSAGE_ROLES = ("user", "assistant", "system")
MESSAGE_TYPES = (
    "user_message",
    "assistant_message",
    "system_message",
    "final_response",
    "thought",
    "tool_call",
    "observation",
    "retrieval",
    "memory_read",
    "memory_write",
    "chain_start",
    "chain_end",
    "embedding",
    "tool_error",
    "callback",
    "llm",
    "task",
    "workflow",
)
CONVERSATION_KEYS = ("conversationId", "externalConversationId", "productId")
MESSAGES_BODY_FIELDS = frozenset(
    (
        "externalUserId",
        "messages",
        *CONVERSATION_KEYS,
        "externalOrganizationId",
        "model",
        "properties",
        "systemPrompt",
        "sampleRate",
        "forceSample",
        "voiceCall",
    )
)
MESSAGE_FIELDS = frozenset(
    (
        "content",
        "role",
        "messageType",
        "toolName",
        "input",
        "output",
        "context",
        "createdAt",
        "externalMessageId",
        "parentMessageId",
        "parentExternalMessageId",
        "model",
        "properties",
        "voice",
    )
)
SYSTEM_PROMPT_FIELDS = frozenset(
    ("content", "components", "promptId", "externalPromptId", "variables")
)
RATING_TARGETS = ("conversationId", "externalConversationId", "messageId", "externalMessageId")
RATING_FIELDS = frozenset(
    ("productId", "rating", "ratingMin", "ratingMax", *RATING_TARGETS, "feedback", "ratedAt")
)


def validate_messages_body(body: object) -> list[str]:
    """Return every way ``body`` breaks the ``POST /messages`` contract (empty when valid)."""
    if not isinstance(body, Mapping):
        return ["body must be a JSON object"]
    errors = [f"unknown field {name!r}" for name in body if name not in MESSAGES_BODY_FIELDS]
    if "externalUserId" not in body:
        errors.append("externalUserId is required")
    if not any(name in body for name in CONVERSATION_KEYS):
        errors.append("one of conversationId, externalConversationId, productId is required")
    _check_ids(body, "", ("externalUserId", "externalConversationId"), errors)
    _check_strings(body, "", ("externalOrganizationId", "model"), errors)
    _check_uuids(body, "", ("conversationId", "productId"), errors)
    _check_objects(body, "", ("properties", "voiceCall"), errors)
    if "sampleRate" in body and not _in_range(body["sampleRate"], 0.0, 1.0):
        errors.append("sampleRate must be a number from 0 to 1")
    if "forceSample" in body and not isinstance(body["forceSample"], bool):
        errors.append("forceSample must be a boolean")
    if "systemPrompt" in body:
        errors.extend(_system_prompt_errors(body["systemPrompt"]))
    messages = body.get("messages")
    if "messages" not in body:
        errors.append("messages is required")
    elif not isinstance(messages, list):
        errors.append("messages must be an array")
    elif not messages:
        errors.append("messages must not be empty")
    else:
        for index, message in enumerate(messages):
            errors.extend(_message_errors(message, f"messages[{index}]"))
    return errors


def validate_rating_body(body: object) -> list[str]:
    """Return every way ``body`` breaks the ``POST /ratings`` contract (empty when valid)."""
    if not isinstance(body, Mapping):
        return ["body must be a JSON object"]
    errors = [f"unknown field {name!r}" for name in body if name not in RATING_FIELDS]
    errors.extend(
        f"{name} is required"
        for name in ("productId", "rating", "ratingMin", "ratingMax")
        if name not in body
    )
    _check_uuids(body, "", ("productId", "conversationId", "messageId"), errors)
    _check_ids(body, "", ("externalConversationId", "externalMessageId"), errors)
    _check_strings(body, "", ("feedback",), errors)
    numbers: dict[str, float] = {}
    for name in ("rating", "ratingMin", "ratingMax"):
        if name in body:
            if _in_range(body[name], -math.inf, math.inf):
                numbers[name] = body[name]
            else:
                errors.append(f"{name} must be a finite number")
    low, high, rating = numbers.get("ratingMin"), numbers.get("ratingMax"), numbers.get("rating")
    if low is not None and high is not None:
        if low >= high:
            errors.append("ratingMin must be less than ratingMax")
        elif rating is not None and not low <= rating <= high:
            errors.append("rating must be between ratingMin and ratingMax")
    targets = [name for name in RATING_TARGETS if name in body]
    if len(targets) != 1:
        found = f" (got {', '.join(targets)})" if targets else ""
        errors.append(f"exactly one of {', '.join(RATING_TARGETS)} is required{found}")
    if "ratedAt" in body and not _is_date_time(body["ratedAt"]):
        errors.append("ratedAt must be an ISO 8601 date-time with a zone")
    return errors


def _message_errors(message: object, where: str) -> list[str]:
    if not isinstance(message, Mapping):
        return [f"{where} must be an object"]
    errors = [f"{where}: unknown field {name!r}" for name in message if name not in MESSAGE_FIELDS]
    if "content" not in message:
        errors.append(f"{where}.content is required")
    _check_strings(message, where, ("content", "model"), errors)
    if "role" in message and "messageType" in message:
        errors.append(f"{where} must not have both role and messageType")
    elif "role" in message:
        if message["role"] not in MESSAGE_ROLES:
            errors.append(f"{where}.role must be one of {', '.join(MESSAGE_ROLES)}")
    elif "messageType" in message:
        if message["messageType"] not in MESSAGE_TYPES:
            errors.append(f"{where}.messageType must be one of {', '.join(MESSAGE_TYPES)}")
        elif message["messageType"] == "tool_call" and "toolName" not in message:
            errors.append(f"{where}.toolName is required when messageType is tool_call")
    else:
        errors.append(f"{where}: role or messageType is required")
    _check_ids(message, where, ("toolName", "externalMessageId", "parentExternalMessageId"), errors)
    _check_uuids(message, where, ("parentMessageId",), errors)
    if "parentMessageId" in message and "parentExternalMessageId" in message:
        errors.append(f"{where} must not have both parentMessageId and parentExternalMessageId")
    _check_objects(message, where, ("input", "output", "properties", "voice"), errors)
    if message.get("context") is not None and not isinstance(message["context"], str):
        errors.append(f"{where}.context must be a string or null")
    if "createdAt" in message and not _is_date_time(message["createdAt"]):
        errors.append(f"{where}.createdAt must be an ISO 8601 date-time with a zone")
    return errors


def _system_prompt_errors(prompt: object) -> list[str]:
    if isinstance(prompt, str):
        return []
    if not isinstance(prompt, Mapping):
        return ["systemPrompt must be a string or an object"]
    errors = [
        f"systemPrompt: unknown field {name!r}"
        for name in prompt
        if name not in SYSTEM_PROMPT_FIELDS
    ]
    if "content" in prompt and "components" in prompt:
        errors.append("systemPrompt must not have both content and components")
    if not any(
        name in prompt for name in ("content", "components", "promptId", "externalPromptId")
    ):
        errors.append("systemPrompt needs content, components, promptId or externalPromptId")
    _check_strings(prompt, "systemPrompt", ("content", "promptId", "externalPromptId"), errors)
    if "components" in prompt and not isinstance(prompt["components"], list):
        errors.append("systemPrompt.components must be an array")
    variables = prompt.get("variables")
    if "variables" in prompt and not (
        isinstance(variables, Mapping) and all(isinstance(v, str) for v in variables.values())
    ):
        errors.append("systemPrompt.variables must be an object of strings")
    return errors


def _qualified(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_strings(
    body: Mapping[str, Any], where: str, names: tuple[str, ...], errors: list[str]
) -> None:
    for name in names:
        if name in body and not isinstance(body[name], str):
            errors.append(f"{_qualified(where, name)} must be a string")


def _check_ids(
    body: Mapping[str, Any], where: str, names: tuple[str, ...], errors: list[str]
) -> None:
    """Identifiers: non-empty strings."""
    for name in names:
        if name in body and (not isinstance(body[name], str) or not body[name].strip()):
            errors.append(f"{_qualified(where, name)} must be a non-empty string")


def _check_uuids(
    body: Mapping[str, Any], where: str, names: tuple[str, ...], errors: list[str]
) -> None:
    for name in names:
        if name in body and not _is_uuid(body[name]):
            errors.append(f"{_qualified(where, name)} must be a UUID")


def _check_objects(
    body: Mapping[str, Any], where: str, names: tuple[str, ...], errors: list[str]
) -> None:
    for name in names:
        if name in body and not isinstance(body[name], Mapping):
            errors.append(f"{_qualified(where, name)} must be an object")


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str) or not _ISO_8601.fullmatch(value):
        return False
    seconds = value.partition(".")[0]
    zone = "+00:00" if value.endswith("Z") else value[-6:]
    try:
        datetime.fromisoformat(seconds[:19] + zone)
    except ValueError:
        return False
    return True


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _in_range(value: object, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and low <= value <= high
