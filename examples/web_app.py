"""A small web app (standard library only) reporting business events per request.

Each POST /chat is one trace: the request span carries the conversation ids, an upgrade inside
it is a business event. Run it, then
``curl -XPOST 'localhost:8000/chat?conversation=c1&text=upgrade'``.
With no ``GREENFLASH_API_KEY`` it uses the local Events API server and prints the events.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

from opentelemetry import trace

import otel_greenflash
from otel_greenflash.testing import EventsApiServer

DEMO_PRODUCT_ID = "00000000-0000-4000-8000-00000000d3e0"

tracer = trace.get_tracer("web-app-demo")
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    conversation = query.get("conversation", ["anonymous"])[0]
    text = query.get("text", [""])[0]
    with (
        tracer.start_as_current_span(f"{environ['REQUEST_METHOD']} /chat"),
        otel_greenflash.conversation(
            external_id=conversation, user_external_id=query.get("user", ["guest"])[0]
        ),
    ):
        reply = "Upgraded!" if "upgrade" in text else "How can I help?"
        if "upgrade" in text:
            otel_greenflash.track(
                "upgrade_purchased", 149, value_type="currency", influence="positive"
            )
    body = json.dumps({"reply": reply}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def main(port: int = 8000) -> None:
    if os.environ.get("GREENFLASH_API_KEY"):
        otel_greenflash.configure()
    else:

        def show(event: Mapping[str, Any]) -> None:
            print("event received:", json.dumps(event, sort_keys=True), flush=True)

        local = EventsApiServer(on_event=show).start()
        otel_greenflash.configure(
            api_key=local.api_key, base_url=local.base_url, product_id=DEMO_PRODUCT_ID
        )
    with make_server("127.0.0.1", port, app) as server:
        print(f"listening on http://127.0.0.1:{port}/chat", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
