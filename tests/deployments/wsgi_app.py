"""A framework-free WSGI app for gunicorn's sync and gthread workers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ._events import emit
from ._setup import setup

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

setup()


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/emit":
        [uid] = parse_qs(environ.get("QUERY_STRING", ""))["uid"]
        emit("request_served", uid)
    elif path != "/health":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
