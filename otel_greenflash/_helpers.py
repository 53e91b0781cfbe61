"""Helpers for application code: conversation scope, late conversation ids, ``track()``."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.util.types import AttributeValue

from . import attributes as attr
from ._link.rules import is_valid_id
from ._logging import logger
from ._pipeline.pipeline import EventPipeline
from ._pipeline.registry import active_pipelines, span_seen_start
from ._providers import sdk_span
from ._records import EVENT, FEEDBACK
from ._setup import provider_finder


def _ids_argument(
    *,
    conversation_id: str | None = None,
    external_conversation_id: str | int | None = None,
    user_id: str | None = None,
    user_external_id: str | int | None = None,
    organization_id: str | None = None,
    organization_external_id: str | int | None = None,
    product_id: str | None = None,
) -> dict[str, AttributeValue]:
    """Keep the given ids that are valid for their field; log the others (never raise)."""
    given: dict[str, object] = {
        attr.CONVERSATION_ID: conversation_id,
        attr.CONVERSATION_EXTERNAL_ID: external_conversation_id,
        attr.USER_ID: user_id,
        attr.USER_EXTERNAL_ID: user_external_id,
        attr.ORGANIZATION_ID: organization_id,
        attr.ORGANIZATION_EXTERNAL_ID: organization_external_id,
        attr.PRODUCT_ID: product_id,
    }
    ids: dict[str, AttributeValue] = {}
    for key, value in given.items():
        if value is None:
            continue
        if not is_valid_id(key, value):
            expected = "a UUID" if key in attr.UUID_ID_KEYS else "a non-empty string or integer"
            logger.warning(
                "otel_greenflash ignored %s: got %s, expected %s",
                key,
                type(value).__name__,
                expected,
            )
            continue
        ids[key] = str(value)
    return ids


class ConversationScope:
    """Context manager (``with`` and ``async with``) returned by :func:`conversation`."""

    def __init__(self, ids: Mapping[str, AttributeValue]) -> None:
        self.ids = dict(ids)
        self._tokens: list[object] = []

    def __enter__(self) -> ConversationScope:
        ctx = context_api.get_current()
        for key, value in self.ids.items():
            ctx = baggage.set_baggage(key, str(value), ctx)
        self._tokens.append(context_api.attach(ctx))
        _record_for_current_trace(self.ids, authoritative=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        context_api.detach(self._tokens.pop())  # type: ignore[arg-type]

    async def __aenter__(self) -> ConversationScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def conversation(
    id: str | None = None,  # the API's conversationId
    external_id: str | int | None = None,
    *,
    user_id: str | None = None,
    user_external_id: str | int | None = None,
    organization_id: str | None = None,
    organization_external_id: str | int | None = None,
    product_id: str | None = None,
) -> ConversationScope:
    """Link every span and business event inside the block to this conversation.

    The ids go into W3C baggage (so they cross services with the baggage propagator) and
    are remembered for the current trace. ``id`` is Greenflash's conversation UUID,
    ``external_id`` your own conversation id. Invalid ids are logged and ignored.
    """
    return ConversationScope(
        _ids_argument(
            conversation_id=id,
            external_conversation_id=external_id,
            user_id=user_id,
            user_external_id=user_external_id,
            organization_id=organization_id,
            organization_external_id=organization_external_id,
            product_id=product_id,
        )
    )


def attach_conversation(
    id: str | None = None,  # the API's conversationId
    external_id: str | int | None = None,
) -> None:
    """Attach a conversation id learned mid-trace (e.g. from ``messages.create``) to this trace.

    Events of the current trace that are still waiting for a conversation id get it, and it
    outranks ids seen on other spans of the trace (not the event span's own, nor its
    ancestors': see the precedence table).
    """
    ids = _ids_argument(conversation_id=id, external_conversation_id=external_id)
    if not ids:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(ids)
    _record_for_current_trace(ids, authoritative=True)


def _record_for_current_trace(ids: Mapping[str, AttributeValue], *, authoritative: bool) -> None:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not ids:
        return
    for pipeline in active_pipelines():
        pipeline.record_trace_ids(span_context.trace_id, ids, authoritative=authoritative)


def track(
    event_type: str,
    value: str | bool | int | float,
    *,
    value_type: str | None = None,
    influence: str | None = None,
    properties: Mapping[str, Any] | None = None,
    insert_id: str | None = None,
    quality_impact_score: float | None = None,
    sample_rate: float | None = None,
    force_sample: bool | None = None,
    event_at: str | None = None,
    conversation_id: str | None = None,
    external_conversation_id: str | int | None = None,
    user_id: str | None = None,
    user_external_id: str | int | None = None,
    organization_id: str | None = None,
    organization_external_id: str | int | None = None,
    product_id: str | None = None,
) -> None:
    """Record a business event on the current span (as a ``greenflash.event`` span event).

    It goes straight to every active pipeline instead, linked through the span, its trace and
    baggage, when there is no recording span (none started, or sampled out), when the span's
    events would not reach a :class:`GreenflashSpanProcessor` (a provider it is not on), and
    when the span holds as many events as the SDK keeps (``OTEL_SPAN_EVENT_COUNT_LIMIT``).
    Never raises.
    """
    try:
        attributes = _event_attributes(
            event_type,
            value,
            value_type=value_type,
            influence=influence,
            properties=properties,
            insert_id=insert_id,
            quality_impact_score=quality_impact_score,
            sample_rate=sample_rate,
            force_sample=force_sample,
            event_at=event_at,
        )
        attributes.update(
            _ids_argument(
                conversation_id=conversation_id,
                external_conversation_id=external_conversation_id,
                user_id=user_id,
                user_external_id=user_external_id,
                organization_id=organization_id,
                organization_external_id=organization_external_id,
                product_id=product_id,
            )
        )
        span = trace.get_current_span()
        if span.is_recording() and _events_reach_us(span):
            span.add_event(attr.SPAN_EVENT_NAME, attributes)
        else:
            _track_directly(attributes, span)
    except Exception:  # a helper must never break the application
        logger.exception("otel_greenflash.track() failed; the event was not recorded")


def _event_attributes(
    event_type: str,
    value: object,
    **fields: object,
) -> dict[str, AttributeValue]:
    names = {
        "value_type": attr.EVENT_VALUE_TYPE,
        "influence": attr.EVENT_INFLUENCE,
        "insert_id": attr.EVENT_INSERT_ID,
        "quality_impact_score": attr.EVENT_QUALITY_IMPACT_SCORE,
        "sample_rate": attr.EVENT_SAMPLE_RATE,
        "force_sample": attr.EVENT_FORCE_SAMPLE,
        "event_at": attr.EVENT_AT,
    }
    attributes: dict[str, Any] = {attr.EVENT_TYPE: event_type, attr.EVENT_VALUE: value}
    for name, key in names.items():
        if fields.get(name) is not None:
            attributes[key] = fields[name]
    properties = fields.get("properties")
    if isinstance(properties, Mapping):
        if all(_is_attribute_value(item) for item in properties.values()):
            for key, item in properties.items():
                attributes[attr.EVENT_PROPERTIES_PREFIX + str(key)] = (
                    tuple(item) if isinstance(item, list) else item
                )
        else:
            attributes[attr.EVENT_PROPERTIES] = json.dumps(properties, default=str)
    return attributes


def _is_attribute_value(value: object) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        kinds = {type(item) for item in value}
        return len(kinds) <= 1 and kinds <= {str, bool, int, float}
    return False


def _events_reach_us(span: trace.Span) -> bool:
    """Whether a span event on ``span`` reaches a pipeline: the span has room for one more
    event, and a span processor saw it start (else its provider is made to run the processor
    when :func:`~otel_greenflash.configure` installed it). With no span processor at all,
    exporters (or a gateway) read the span's events. Runs at every ``track()``: private SDK
    fields are read directly (the public ones copy)."""
    inner = span if type(span) is SdkSpan else sdk_span(span)
    if inner is None:
        seen = span_seen_start(span.get_span_context().span_id)
        return seen is None or seen
    events = inner._events._dq  # type: ignore[attr-defined]
    if len(events) == events.maxlen:  # the SDK would push the oldest event out
        return False
    seen = span_seen_start(inner._context[1])  # type: ignore[index]
    if seen is None or seen:
        return True
    finder = provider_finder()
    return finder is not None and finder.adopt(inner)


def _track_directly(attributes: dict[str, AttributeValue], span: trace.Span) -> None:
    pipelines = active_pipelines()
    if not pipelines:
        logger.warning(
            "otel_greenflash.track(): no recording span takes the event and no active "
            "GreenflashSpanProcessor (nor other intake) exists; the event was not recorded"
        )
        return
    attributes.setdefault(attr.EVENT_INSERT_ID, f"track-{uuid.uuid4()}")  # one id, every pipeline
    _to_pipelines(pipelines, attributes, span, EVENT)


def rate(
    value: bool | int | str,
    *,
    kind: str = "thumbs",
    feedback: str | None = None,
    external_message_id: str | None = None,
    conversation_id: str | None = None,
    external_conversation_id: str | int | None = None,
    product_id: str | None = None,
) -> None:
    """Record a user's rating of the current conversation (or of one message, by its
    ``externalMessageId``): a ``POST /ratings`` request, linked like :func:`track` (the
    conversation from the current span, its trace and baggage, unless given here).

    ``kind="thumbs"``: ``value`` True/False, ``"up"``/``"down"`` or 1/0 (rated 1 or 0 of 0-1);
    ``kind="stars"``: a whole number from 1 to 5 (of 1-5). ``feedback``: the user's words.
    Sent whether or not conversation capture is on. A bad value is counted under
    ``stats()["ratings"]["dropped"]["invalid"]`` and said in one rate-limited line. Never raises.
    """
    try:
        attributes: dict[str, AttributeValue] = {attr.RATING_KIND: kind, attr.RATING_VALUE: value}
        if feedback is not None:
            attributes[attr.RATING_FEEDBACK] = feedback
        if external_message_id is not None:
            attributes[attr.RATING_MESSAGE_EXTERNAL_ID] = external_message_id
        attributes.update(
            _ids_argument(
                conversation_id=conversation_id,
                external_conversation_id=external_conversation_id,
                product_id=product_id,
            )
        )
        pipelines = active_pipelines()
        if not pipelines:
            logger.warning(
                "otel_greenflash.rate(): no active GreenflashSpanProcessor (nor other intake) "
                "exists; the rating was not recorded"
            )
            return
        _to_pipelines(pipelines, attributes, trace.get_current_span(), FEEDBACK)
    except Exception:  # a helper must never break the application
        logger.exception("otel_greenflash.rate() failed; the rating was not recorded")


def _to_pipelines(
    pipelines: list[EventPipeline],
    attributes: dict[str, AttributeValue],
    span: trace.Span,
    kind: str,
) -> None:
    """A record of ``kind`` (made by a helper) to every pipeline, linked through ``span``."""
    context = span.get_span_context()
    inner = sdk_span(span) if span.is_recording() else None
    current_baggage: Mapping[str, object] = baggage.get_all()
    ambient = _ambient_ids()
    if ambient:  # below baggage, which the application set itself
        current_baggage = {**ambient, **current_baggage}
    now_ns = time.time_ns()
    for pipeline in pipelines:
        pipeline.tracked(
            attributes,
            span=inner,
            trace_id=context.trace_id if context.is_valid else 0,
            span_id=context.span_id if context.is_valid else 0,
            sampled=context.trace_flags.sampled,
            baggage=current_baggage,
            time_ns=now_ns,
            kind=kind,
        )


_GENAI_CONTEXT_MODULE = "opentelemetry.util.genai._conversation_context"
_LANGSMITH_RUN_HELPERS = "langsmith.run_helpers"
_LANGSMITH_METADATA_KEYS = ("thread_id", "session_id", "conversation_id", "user_id")


def _ambient_ids() -> dict[str, str]:
    """Ids GenAI libraries keep outside OpenTelemetry spans, under the attribute names their
    spans use (so the aliases apply): ``opentelemetry-util-genai``'s conversation id on the
    current context (inside a GenAI invocation), and the metadata of LangSmith's current run
    (inside ``@traceable``, whose OpenTelemetry context is a non-recording span of a trace its
    exported spans never join). Only libraries already imported are asked; never raises."""
    ids: dict[str, str] = {}
    genai = sys.modules.get(_GENAI_CONTEXT_MODULE)
    read_genai = getattr(genai, "get_ambient_conversation_id", None)
    if read_genai is not None:
        with contextlib.suppress(Exception):
            _keep_id(ids, "gen_ai.conversation.id", read_genai())
    langsmith = sys.modules.get(_LANGSMITH_RUN_HELPERS)
    current_run = getattr(langsmith, "get_current_run_tree", None)
    if current_run is not None:
        with contextlib.suppress(Exception):
            metadata = getattr(current_run(), "metadata", None)
            if isinstance(metadata, Mapping):
                for key in _LANGSMITH_METADATA_KEYS:
                    _keep_id(ids, f"langsmith.metadata.{key}", metadata.get(key))
    return ids


def _keep_id(ids: dict[str, str], key: str, value: object) -> None:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        ids[key] = str(value)
