"""An app that knows only the OpenTelemetry API; business events reach Greenflash with no setup.

Run it under ``opentelemetry-instrument`` (install ``opentelemetry-distro`` first)::

    # receive the events locally in another terminal:
    otel-greenflash serve
    # then:
    GREENFLASH_BASE_URL=http://127.0.0.1:8787/api/v1 GREENFLASH_API_KEY=gf-local-test-key \\
    GREENFLASH_PRODUCT_ID=00000000-0000-4000-8000-00000000d3e0 \\
    GREENFLASH_INSTALL_PROCESSOR=true OTEL_TRACES_EXPORTER=console \\
    OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
    opentelemetry-instrument python examples/zero_code_app.py

``OTEL_TRACES_EXPORTER=otlp,greenflash`` (no ``GREENFLASH_INSTALL_PROCESSOR``) works too.
"""

from __future__ import annotations

from opentelemetry import trace

tracer = trace.get_tracer("zero-code-demo")


def answer(conversation_id: str, question: str) -> str:
    with tracer.start_as_current_span("support.chat") as chat:
        chat.set_attribute("gen_ai.conversation.id", conversation_id)  # an alias: no code change
        reply = "Upgraded you to Pro!" if "upgrade" in question else "Happy to help."
        if "upgrade" in question:
            with tracer.start_as_current_span("billing.upgrade") as span:
                span.set_attributes(
                    {
                        "greenflash.event.type": "upgrade_purchased",
                        "greenflash.event.value": 149,
                        "greenflash.event.value_type": "currency",
                        "greenflash.event.influence": "positive",
                    }
                )
        return reply


if __name__ == "__main__":
    print(answer("thread-7", "please upgrade me"))
