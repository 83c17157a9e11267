"""The thread-pool headroom is applied when the app starts, and the app's own lifespan still runs."""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.concurrency import THREAD_TOKENS, install_thread_headroom


def test_thread_tokens_raised_and_lifespan_kept():
    events = []

    @asynccontextmanager
    async def lifespan(_app):
        events.append("start")
        yield
        events.append("stop")

    app = FastAPI(lifespan=lifespan)

    @app.get("/tokens")
    async def tokens():
        return {"tokens": anyio.to_thread.current_default_thread_limiter().total_tokens}

    install_thread_headroom(app)
    with TestClient(app) as client:
        assert client.get("/tokens").json() == {"tokens": THREAD_TOKENS}
    assert events == ["start", "stop"]
