"""A WSGI app for gunicorn's gevent and eventlet workers: slow requests, each emitting an event.

``GET /slow?uid=U&seconds=S`` touches ``DEPLOY_STATE_DIR/inflight-U`` (the request is in
flight), sleeps ``S`` seconds (a cooperative sleep under the worker's monkey-patching), emits
one business event and answers 200.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ._events import emit
from ._setup import setup

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

setup()


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/slow":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        [uid], [seconds] = query["uid"], query["seconds"]
        Path(os.environ["DEPLOY_STATE_DIR"], f"inflight-{uid}").touch()
        time.sleep(float(seconds))
        emit("request_served", uid)
    elif path != "/health":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
