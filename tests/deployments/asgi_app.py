"""FastAPI app for uvicorn (plain, ``--workers``, zero-code) and gunicorn's UvicornWorker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ._events import emit
from ._setup import mark_ready, setup

setup()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    mark_ready()
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/emit")
async def emit_one(uid: str) -> dict[str, int]:
    emit("request_served", uid)
    return {"pid": os.getpid()}
