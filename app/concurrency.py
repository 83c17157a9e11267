"""Enough worker threads that a request holding a database lock can always finish.

FastAPI runs sync handlers, sync dependencies (``get_db``'s commit) and a sync handler's response-model
serialisation in AnyIO's thread pool, 40 threads by default; the rating routes hand their work to it through
``in_slot`` below. A request's transaction stays open from its first query until its commit, and a request of
the researchers' pages needs a thread again after its handler returns (serialising the response, then
committing). With SQLite every transaction holds the one write lock (``BEGIN IMMEDIATE``,
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

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.config import get_settings

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


# ------------------------------------------------------------------------------------------ rating slots
#
# The rating routes (a vote, a pair page, a join) hold their own database session in a worker thread. Left
# unbounded, a few hundred of them at once ran in as many threads: the one holding SQLite's write lock then got a
# small share of the GIL, and throughput fell from 120 votes/s at 16 evaluators to 13 at 256 (BENCHMARKS.md).
# So at most RATING_REQUESTS_IN_FLIGHT run at once and the rest wait in the event loop, holding no thread.
#
# Which waiter goes next matters as much as how many run. With one first-come-first-served queue, a launch
# burst (hundreds of participants joining within seconds) put every vote behind the joins and page loads that
# arrived before it: a rater's answer waited seconds to be stored. Here a waiter is ordered by its arrival time
# plus a handicap by kind: a vote (an answer that must not be lost) goes before a page that arrived up to
# PAGE_HANDICAP_S earlier, and a page before a join that arrived up to JOIN_HANDICAP_S - PAGE_HANDICAP_S
# earlier. Work that finishes a rater's action is served before work that starts new work, and nothing starves:
# a join that has waited JOIN_HANDICAP_S goes before any vote that arrives after that.
# (FastAPI's ``Depends(max_concurrency=...)`` is a plain FIFO semaphore; it has no order by kind.)

RATING_REQUESTS_IN_FLIGHT = 4
# On SQLite the database work of every vote runs under one write lock, in this process's threads: past two in
# flight, the threads only took the GIL from the one holding the lock. The same open loop (200 votes/s for 40 s)
# cost the server 72.7 s of CPU with four, 45.8 s with two, 54.9 s with one (nothing then overlaps the
# database with the HTTP work); PostgreSQL works in its own processes, so its threads mostly wait on it.
RATING_REQUESTS_IN_FLIGHT_SQLITE = 2


def rating_requests_in_flight() -> int:
    """How many rating requests may run at once in this process, for the configured database."""
    sqlite = get_settings().resolved_database_url.startswith("sqlite")
    return RATING_REQUESTS_IN_FLIGHT_SQLITE if sqlite else RATING_REQUESTS_IN_FLIGHT
VOTE, PAGE, JOIN = 0, 1, 2
PAGE_HANDICAP_S = 5.0
JOIN_HANDICAP_S = 10.0
_HANDICAP = {VOTE: 0.0, PAGE: PAGE_HANDICAP_S, JOIN: JOIN_HANDICAP_S}


class PriorityGate:
    """At most ``capacity`` holders; waiters are woken in the order of arrival time + the handicap of their kind.

    One gate per event loop (the app may be served by several loops in tests); not thread-safe, like asyncio.
    """

    def __init__(self, capacity: int, handicap: dict[int, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.handicap = dict(_HANDICAP if handicap is None else handicap)
        self.clock = clock
        self.busy = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()

    @asynccontextmanager
    async def slot(self, kind: int) -> AsyncIterator[None]:
        await self.acquire(kind)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, kind: int) -> None:
        # Below capacity there is never a live waiter: release() hands a freed slot to one before counting it free.
        if self.busy < self.capacity:
            self.busy += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self.clock() + self.handicap[kind], next(self._tiebreak), future))
        try:
            await future  # release() hands its slot over by completing this future: busy is already counted
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as the client went away: pass it on
            else:
                future.cancel()  # still queued: release() skips cancelled futures
            raise

    def release(self) -> None:
        while self._waiters:
            _key, _n, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self.busy -= 1

    @property
    def waiting(self) -> int:
        return sum(1 for _k, _n, f in self._waiters if not f.done())


_gates: WeakKeyDictionary[asyncio.AbstractEventLoop, PriorityGate] = WeakKeyDictionary()


def rating_gate() -> PriorityGate:
    """The running event loop's gate for the rating routes."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = PriorityGate(rating_requests_in_flight())
    return gate


T = TypeVar("T")


async def in_slot(kind: int, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` in a worker thread once this request holds a rating slot of ``kind``.

    The rating routes are ``async def`` and call this, rather than plain ``def`` routes with the slot as a
    yield dependency: FastAPI serialises a ``def`` route's response model in a second hop through the thread
    pool, and a yield dependency costs an exit stack and an async generator per request, held by every request
    still waiting for a slot (the collector's pauses in a launch burst). Here a request waits for its slot in
    the event loop holding one coroutine and no thread, its blocking database work runs in one thread-pool hop,
    and the slot is released once that work (with its commit) has finished, before the response is sent.
    """
    async with rating_gate().slot(kind):
        return await run_in_threadpool(work, *args)
