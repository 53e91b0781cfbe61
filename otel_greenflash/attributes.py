"""The attribute convention: every span/baggage key this library reads, as constants.

A span (or a span event) carrying :data:`EVENT_TYPE` is a business event. The other
``greenflash.event.*`` keys describe it; the id keys link it to a product, conversation,
user and organization.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "greenflash."
EVENT_PREFIX: Final = "greenflash.event."

SPAN_EVENT_NAME: Final = "greenflash.event"
"""Name of a span event recorded by :func:`otel_greenflash.track`."""

EVENT_TYPE: Final = "greenflash.event.type"
EVENT_VALUE: Final = "greenflash.event.value"
EVENT_VALUE_TYPE: Final = "greenflash.event.value_type"
EVENT_INFLUENCE: Final = "greenflash.event.influence"
EVENT_QUALITY_IMPACT_SCORE: Final = "greenflash.event.quality_impact_score"
EVENT_PROPERTIES: Final = "greenflash.event.properties"
EVENT_PROPERTIES_PREFIX: Final = "greenflash.event.properties."
EVENT_INSERT_ID: Final = "greenflash.event.insert_id"
EVENT_SAMPLE_RATE: Final = "greenflash.event.sample_rate"
EVENT_FORCE_SAMPLE: Final = "greenflash.event.force_sample"
EVENT_AT: Final = "greenflash.event.at"

PRODUCT_ID: Final = "greenflash.product.id"
CONVERSATION_ID: Final = "greenflash.conversation.id"
CONVERSATION_EXTERNAL_ID: Final = "greenflash.conversation.external_id"
USER_ID: Final = "greenflash.user.id"
USER_EXTERNAL_ID: Final = "greenflash.user.external_id"
ORGANIZATION_ID: Final = "greenflash.organization.id"
ORGANIZATION_EXTERNAL_ID: Final = "greenflash.organization.external_id"

UUID_ID_KEYS: Final = (PRODUCT_ID, CONVERSATION_ID, USER_ID, ORGANIZATION_ID)
"""Keys whose values must be Greenflash UUIDs."""

EXTERNAL_ID_KEYS: Final = (
    CONVERSATION_EXTERNAL_ID,
    USER_EXTERNAL_ID,
    ORGANIZATION_EXTERNAL_ID,
)
"""Keys holding the application's own ids (free-form strings)."""

ID_KEYS: Final = UUID_ID_KEYS + EXTERNAL_ID_KEYS
"""Every linking key, in the order they are resolved."""

ID_FIELDS: Final = {
    PRODUCT_ID: "productId",
    CONVERSATION_ID: "conversationId",
    CONVERSATION_EXTERNAL_ID: "externalConversationId",
    USER_ID: "userId",
    USER_EXTERNAL_ID: "externalUserId",
    ORGANIZATION_ID: "organizationId",
    ORGANIZATION_EXTERNAL_ID: "externalOrganizationId",
}
"""Linking key → Events API JSON field."""
