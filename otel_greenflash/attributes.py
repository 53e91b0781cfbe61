"""The attribute convention: every span/baggage key this library reads, as constants.

A span (or a span event) carrying :data:`EVENT_TYPE` is a business event. The other
``greenflash.event.*`` keys describe it; the id keys link it to a product, conversation,
user and organization.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
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

RATING_EVENT_NAME: Final = "greenflash.rating"
"""Name of a log record that is a user's rating (what :func:`otel_greenflash.rate` records)."""
RATING_KIND: Final = "greenflash.rating.kind"
"""``thumbs`` or ``stars``."""
RATING_VALUE: Final = "greenflash.rating.value"
RATING_FEEDBACK: Final = "greenflash.rating.feedback"
RATING_MESSAGE_EXTERNAL_ID: Final = "greenflash.rating.message.external_id"
"""The ``externalMessageId`` rated, when the rating is about one message."""

GENAI_OPERATION_DETAILS_EVENT: Final = "gen_ai.client.inference.operation.details"
"""The GenAI conventions' log event holding one LLM call (read with conversation capture on)."""
GENAI_EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
"""The GenAI conventions' log event holding one evaluation (a rating, with capture on)."""
GENAI_SPAN_MARKERS: Final = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "openinference.span.kind",
        "llm.request.type",
        "gen_ai.prompt.0.role",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.0.role",
        "gen_ai.completion.0.content",
    }
)
"""Keys one of which every LLM span of the supported conventions carries (OpenTelemetry GenAI,
OpenInference, OpenLLMetry): with capture on, a span with one is read as an LLM call."""

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

DEFAULT_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # Conversation: OpenTelemetry GenAI (also Pydantic AI, Logfire, OpenLLMetry's
        # set_conversation_id and the GenAI LangChain instrumentation's thread id), then
        # OpenInference, Langfuse and the semantic conventions, then each SDK's own names.
        "gen_ai.conversation.id": CONVERSATION_EXTERNAL_ID,
        "session.id": CONVERSATION_EXTERNAL_ID,
        "traceloop.association.properties.session_id": CONVERSATION_EXTERNAL_ID,
        "traceloop.association.properties.conversation_id": CONVERSATION_EXTERNAL_ID,
        "langfuse.session.id": CONVERSATION_EXTERNAL_ID,
        "langsmith.metadata.thread_id": CONVERSATION_EXTERNAL_ID,
        "langsmith.metadata.session_id": CONVERSATION_EXTERNAL_ID,
        "langsmith.metadata.conversation_id": CONVERSATION_EXTERNAL_ID,
        # User.
        "user.id": USER_EXTERNAL_ID,
        "enduser.id": USER_EXTERNAL_ID,
        "traceloop.association.properties.user_id": USER_EXTERNAL_ID,
        "langfuse.user.id": USER_EXTERNAL_ID,
        "langsmith.metadata.user_id": USER_EXTERNAL_ID,
    }
)
"""Attributes (and baggage entries) of other instrumentations read as Greenflash ids, below the
``greenflash.*`` keys. Among aliases of one key the first one present wins.

``langsmith.trace.session_id`` is not one: it names a LangSmith project, not a conversation.
"""
