"""The Events API request contract, as a pure validator used by the local server."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime

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
