"""Enough worker threads that a request holding a database lock can always finish.

FastAPI runs sync handlers, sync dependencies (``get_db``'s commit) and response-model serialisation in
AnyIO's thread pool, 40 threads by default. A request's transaction stays open from its first query until
``get_db`` commits, and the request needs a thread again after its handler returns (serialising the
response, then committing). With SQLite every transaction holds the one write lock (``BEGIN IMMEDIATE``,
app/db.py); with PostgreSQL, a vote holds row locks. When 40 other requests sit in the pool waiting for that
lock (or for a pooled connection), the lock holder never gets a thread back to commit: everything stalls
until SQLite's 30 s busy timeout turns into "database is locked" 500s. The load test in
tests/reliability/test_load.py hits this with 50 evaluators.

The fix here: more thread tokens than requests that can be in flight at once, so a thread is always free.
Blocked threads cost little (they sleep in SQLite's busy handler or on a socket). ``blindpair serve``
should also pass uvicorn ``limit_concurrency`` below ``THREAD_TOKENS`` so the guarantee holds under any
load (uvicorn answers 503 beyond it instead of stalling).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

THREAD_TOKENS = 1000
SUGGESTED_LIMIT_CONCURRENCY = 500


def install_thread_headroom(app: FastAPI, tokens: int = THREAD_TOKENS) -> None:
    """Raise the AnyIO thread limit when ``app`` starts (call once in ``create_app``)."""
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        # The limiter is per event loop, so it can only be set once the loop runs.
        anyio.to_thread.current_default_thread_limiter().total_tokens = tokens
        async with previous(the_app) as state:
            yield state

    app.router.lifespan_context = lifespan
