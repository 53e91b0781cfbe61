"""Support chat on OpenLLMetry (``traceloop-sdk``).

Stack: ``Traceloop.init()`` sets up the SDK's ``TracerProvider`` and instruments what it finds
(``opentelemetry-instrumentation-openai`` of OpenLLMetry here). Its own export goes to a
discarding exporter and its endpoint is a dead loopback port: nothing leaves the machine.

Conversation id: ``Traceloop.set_association_properties({"session_id": …, "user_id": …})``
inside a ``@workflow``, as OpenLLMetry's documentation shows. It attaches the properties to the
OpenTelemetry context, and Traceloop's span processor writes them on every span started in that
context, as ``traceloop.association.properties.session_id`` / ``.user_id`` (the workflow span
also gets them at once). No Greenflash-specific conversation setup. Prompts and answers are
recorded unless ``TRACELOOP_TRACE_CONTENT=false``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from traceloop.sdk import Traceloop  # type: ignore[import-not-found,unused-ignore]
from traceloop.sdk.decorators import workflow  # type: ignore[import-not-found,unused-ignore]

import otel_greenflash

from ._common import (
    OPENAI_TIMEOUT,
    Answer,
    Chat,
    answer_chat,
    dump_spans,
    make_app,
    openai_base_url,
    report_cancellation,
    report_upgrade,
    set_up_logs,
)


class Discard(SpanExporter):
    """Traceloop's exporter in this test: keeps nothing, sends nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


# The stack's own setup, then Greenflash's.
Traceloop.init(
    app_name="support-app",
    api_endpoint="http://127.0.0.1:9",
    exporter=Discard(),
    disable_batch=True,
    telemetry_enabled=False,
)
set_up_logs()
processor = otel_greenflash.configure()
dump_spans()

client = AsyncOpenAI(
    base_url=openai_base_url(), api_key="sk-test", max_retries=0, timeout=OPENAI_TIMEOUT
)
app = make_app("openllmetry", processor)


@workflow(name="support_chat")  # type: ignore[untyped-decorator,unused-ignore]
async def support_chat(body: Chat) -> str:
    Traceloop.set_association_properties({"session_id": body.conversation, "user_id": body.user})
    answer = await answer_chat(client, body)
    if body.report:
        report_upgrade(body)
    return answer


@app.post("/chat")
async def chat(body: Chat) -> Answer:
    # Inside FastAPI's own server span ("POST /chat").
    answer = await support_chat(body)
    if body.report:
        report_cancellation(body)
    return Answer(answer=answer, pid=os.getpid())
