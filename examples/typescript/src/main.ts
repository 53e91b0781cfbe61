/**
 * A small Node service that reports two Greenflash business events through OpenTelemetry.
 *
 * It knows nothing about Greenflash's API: it marks telemetry with `greenflash.*` attributes and
 * sends it over OTLP/HTTP (protobuf) to `otel-greenflash gateway`, which holds the API key, links
 * each event to its conversation and calls the Greenflash Events API.
 *
 *  - the root span `support.chat` carries the conversation id;
 *  - the child span `chat gpt-4o-mini` is an LLM call as the OpenTelemetry GenAI conventions
 *    record it (what a GenAI instrumentation writes): with conversation capture on, the gateway
 *    sends its messages to the Messages API; otherwise it is only used for linking;
 *  - the child span `billing.upgrade` is a business event through its attributes;
 *  - a log record emitted while that child span is active is a second business event,
 *    placed in the trace by the span context the logs SDK copies onto it.
 *
 * Settings (the standard OpenTelemetry variables):
 *   OTEL_EXPORTER_OTLP_ENDPOINT  the gateway's OTLP/HTTP address (default http://127.0.0.1:4318)
 *   OTEL_EXPORTER_OTLP_HEADERS   e.g. `Authorization=Bearer%20<token>` when the gateway wants one
 * and, for this demo only, CONVERSATION_ID (default `chat-ts-1`).
 */
import { context, trace } from "@opentelemetry/api";
import { logs, SeverityNumber } from "@opentelemetry/api-logs";
import { setGlobalErrorHandler } from "@opentelemetry/core";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-proto";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { BatchLogRecordProcessor } from "@opentelemetry/sdk-logs";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace";

// The exporters' own default is http://localhost:4318; `localhost` may resolve to ::1 first,
// while the gateway listens on 127.0.0.1 by default, so name the address explicitly.
const endpoint = (process.env.OTEL_EXPORTER_OTLP_ENDPOINT || "http://127.0.0.1:4318").replace(
  /\/+$/,
  "",
);
const conversationId = process.env.CONVERSATION_ID || "chat-ts-1";

// A failed export (gateway down, token refused, request rejected) is reported to the SDK's global
// error handler: count them, so that this process ends with status 1 when the gateway did not
// take the data.
const exportErrors: string[] = [];
setGlobalErrorHandler((error) => {
  exportErrors.push(error instanceof Error ? error.message : String(error));
  console.error("OpenTelemetry export error:", error);
});

// Headers (OTEL_EXPORTER_OTLP_HEADERS) are read from the environment by the exporters.
const sdk = new NodeSDK({
  serviceName: "greenflash-typescript-example",
  spanProcessors: [
    new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }) }),
  ],
  logRecordProcessors: [
    new BatchLogRecordProcessor({ exporter: new OTLPLogExporter({ url: `${endpoint}/v1/logs` }) }),
  ],
  metricReaders: [], // no metrics: the gateway takes traces and logs only
});
sdk.start();

const tracer = trace.getTracer("greenflash-typescript-example");
const logger = logs.getLogger("greenflash-typescript-example");

function handleChat(): {
  traceId: string;
  rootSpanId: string;
  llmSpanId: string;
  upgradeSpanId: string;
} {
  return tracer.startActiveSpan("support.chat", (chat) => {
    // The conversation id lives on the root span only; the gateway links both events to it.
    chat.setAttribute("greenflash.conversation.external_id", conversationId);
    chat.setAttribute("greenflash.user.external_id", "user-ts-42");

    const llmSpanId = tracer.startActiveSpan("chat gpt-4o-mini", (llm) => {
      // An LLM call, messages in the conventions' JSON form (the model is not called here).
      llm.setAttributes({
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": JSON.stringify([
          { role: "user", parts: [{ type: "text", content: "Can I add seats to my plan?" }] },
        ]),
        "gen_ai.output.messages": JSON.stringify([
          {
            role: "assistant",
            parts: [{ type: "text", content: "Yes: upgrade to Pro, then add seats." }],
            finish_reason: "stop",
          },
        ]),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 9,
      });
      const spanId = llm.spanContext().spanId;
      llm.end();
      return spanId;
    });

    const upgradeSpanId = tracer.startActiveSpan("billing.upgrade", (upgrade) => {
      // Business event 1: attributes on a span.
      upgrade.setAttributes({
        "greenflash.event.type": "upgrade_purchased",
        "greenflash.event.value": "149.00",
        "greenflash.event.value_type": "currency",
        "greenflash.event.influence": "positive",
        "greenflash.event.properties.plan": "pro",
        "greenflash.event.properties.seats": 3,
      });

      // Business event 2: a log record named `greenflash.event`, emitted while the span is
      // active, so it carries this span's trace and span ids.
      logger.emit({
        eventName: "greenflash.event",
        severityNumber: SeverityNumber.INFO,
        body: "meeting booked after the upgrade",
        context: context.active(),
        attributes: {
          "greenflash.event.type": "meeting_booked",
          "greenflash.event.value": 1,
          "greenflash.event.value_type": "count",
          "greenflash.event.influence": "positive",
          "greenflash.event.properties.channel": "chat",
        },
      });

      const spanId = upgrade.spanContext().spanId;
      upgrade.end();
      return spanId;
    });

    const { traceId, spanId } = chat.spanContext();
    chat.end();
    return { traceId, rootSpanId: spanId, llmSpanId, upgradeSpanId };
  });
}

async function main(): Promise<void> {
  const ids = handleChat();
  // Shutting the SDK down flushes both batch processors: nothing is sent before this line
  // (unless a batch filled up), and nothing is left behind after it.
  await sdk.shutdown();
  if (exportErrors.length > 0) {
    throw new Error(`${exportErrors.length} export(s) failed: ${exportErrors.join("; ")}`);
  }
  console.log(JSON.stringify({ events: 2, endpoint, conversationId, ...ids }));
}

main().catch((error: unknown) => {
  console.error(`export failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
