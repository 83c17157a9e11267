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


# ------------------------------------------------------------------ the rating routes' priority gate


def _run(coro):
    import asyncio

    return asyncio.run(coro)


def test_gate_serves_votes_before_pages_before_joins_and_never_more_than_capacity():
    """A launch burst: joins and page loads queued first must not keep a rater's answer waiting."""
    import asyncio

    from app.concurrency import JOIN, PAGE, VOTE, PriorityGate

    order: list[str] = []

    async def main():
        gate = PriorityGate(2)
        running = 0
        peak = 0
        release = asyncio.Event()

        async def request(name: str, kind: int) -> None:
            nonlocal running, peak
            async with gate.slot(kind):
                running += 1
                peak = max(peak, running)
                order.append(name)
                await release.wait()
                running -= 1

        holders = [asyncio.create_task(request(f"first{i}", PAGE)) for i in range(2)]
        await asyncio.sleep(0)
        queued = [asyncio.create_task(request(name, kind)) for name, kind in
                  (("join", JOIN), ("page", PAGE), ("vote", VOTE))]
        await asyncio.sleep(0)
        assert gate.waiting == 3 and order == ["first0", "first1"]
        release.set()
        await asyncio.gather(*holders, *queued)
        return peak

    assert _run(main()) == 2
    assert order[2:] == ["vote", "page", "join"]


def test_gate_never_starves_a_join():
    """A join that has waited longer than its handicap goes before votes that arrive after that."""
    import asyncio

    from app.concurrency import JOIN, VOTE, PriorityGate

    now = [0.0]
    order: list[str] = []

    async def main():
        gate = PriorityGate(1, clock=lambda: now[0])
        await gate.acquire(VOTE)
        join = asyncio.create_task(_take(gate, JOIN, "join", order))
        await asyncio.sleep(0)
        now[0] = gate.handicap[JOIN] + 1  # later arrivals: a vote now ranks after the join that has waited
        vote = asyncio.create_task(_take(gate, VOTE, "late vote", order))
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(join, vote)

    _run(main())
    assert order == ["join", "late vote"]


async def _take(gate, kind, name, order):
    async with gate.slot(kind):
        order.append(name)


def test_gate_passes_on_a_slot_when_a_waiting_client_goes_away():
    """A request cancelled while queued (the client disconnected) must not leak the slot it was about to get."""
    import asyncio

    from app.concurrency import PAGE, VOTE, PriorityGate

    async def main():
        gate = PriorityGate(1)
        await gate.acquire(VOTE)
        gone = asyncio.create_task(gate.acquire(PAGE))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        gate.release()  # nobody live is waiting: the slot is free again
        assert gate.busy == 0
        await asyncio.wait_for(gate.acquire(PAGE), 1)
        # Handed over and cancelled in the same tick: the slot goes on to the next waiter, not lost.
        late = asyncio.create_task(gate.acquire(PAGE))
        after = asyncio.create_task(gate.acquire(PAGE))
        await asyncio.sleep(0)
        gate.release()
        late.cancel()
        await asyncio.sleep(0)
        await asyncio.wait_for(after, 1)
        assert gate.busy == 1

    _run(main())


def test_sqlite_runs_two_rating_requests_at_once_postgres_four(monkeypatch):
    """SQLite's database work runs under one write lock in this process's threads: more than two in flight only
    took the GIL from the one holding it. PostgreSQL works in its own processes."""
    from types import SimpleNamespace

    from app import concurrency

    for url, expected in (("sqlite:////data/blindpair.sqlite", 2), ("postgresql+psycopg://bp@db/bp", 4)):
        monkeypatch.setattr(concurrency, "get_settings", lambda url=url: SimpleNamespace(resolved_database_url=url))
        assert concurrency.rating_requests_in_flight() == expected
