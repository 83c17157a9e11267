"""Every rating route waits for the rating gate and does its database work in a worker thread.

The rating routes are ``async def`` and hand their work to ``in_slot`` (app/concurrency.py). Two promises
follow, and each is tried here from outside, over ASGI, with the route's work replaced by a slow stand-in:
no more requests work at once than the gate allows (two on SQLite), and while they work the event loop still
answers everyone else (blocking work on the loop stalled every request behind one vote waiting for SQLite's
write lock).
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.responses import Response

from app.api import evaluate as api_evaluate
from app.concurrency import rating_gate, rating_requests_in_flight
from app.db import DatabaseBusy
from app.main import create_app
from app.web import evaluator as web_evaluator

VOTE_JSON = {"assignment_token": "t", "choices": {"overall_quality": "left"}}
# (method, path, module, the work function in_slot runs, request body)
ROUTES = [
    ("POST", "/api/v1/evaluate/join", api_evaluate, "answer_join", {"json": {"invite_token": "x"}}),
    ("GET", "/api/v1/evaluate/pair", api_evaluate, "answer_pair", {}),
    ("POST", "/api/v1/evaluate/votes", api_evaluate, "answer_vote", {"json": VOTE_JSON}),
    ("GET", "/join/someinvite", web_evaluator, "_invite", {}),
    ("POST", "/join/someinvite", web_evaluator, "_consent", {"data": {"consent": "yes"}}),
    ("GET", "/e/pair", web_evaluator, "_pair_page", {}),
    ("POST", "/e/vote", web_evaluator, "_vote", {"data": {"assignment": "t", "c_overall_quality": "left"}}),
]
WAIT_SECONDS = 5.0  # only reached when something is broken; the test never sleeps it out when it passes


@pytest.mark.parametrize(("method", "path", "module", "work", "body"), ROUTES,
                         ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_a_rating_route_runs_its_work_in_a_thread_and_within_the_gate(engine, monkeypatch, method, path, module,
                                                                      work, body):
    loop_threads: set[int] = set()
    work_threads: set[int] = set()
    lock = threading.Lock()
    running = [0, 0]  # now, most at once
    release = threading.Event()
    released = []

    def blocked_work(*_args):
        with lock:
            work_threads.add(threading.get_ident())
            running[0] += 1
            running[1] = max(running[1], running[0])
        # Blocks, as a request waiting for SQLite's write lock would, until the test has been answered elsewhere.
        released.append(release.wait(WAIT_SECONDS))
        with lock:
            running[0] -= 1
        return Response("worked", status_code=200)

    monkeypatch.setattr(module, work, blocked_work)
    app = create_app()

    async def main() -> tuple[list[httpx.Response], httpx.Response, int]:
        loop_threads.add(threading.get_ident())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            rating = [asyncio.create_task(client.request(method, path, **body)) for _ in range(6)]
            for _ in range(int(WAIT_SECONDS / 0.01)):
                if running[0] == 2:
                    break
                await asyncio.sleep(0.01)
            other = await client.get("/static/css/app.css")  # while two rating requests are blocked
            working_then = running[0]
            release.set()
            return await asyncio.gather(*rating), other, working_then

    answers, other, working_then = asyncio.run(main())
    assert [a.text for a in answers] == ["worked"] * 6
    assert running[1] == rating_requests_in_flight() == 2, "the gate let more (or fewer) requests work at once"
    assert not work_threads & loop_threads, "the route's work ran on the event loop's thread"
    assert other.status_code == 200 and working_then == 2, "another request waited for the blocked rating requests"
    assert all(released), "a rating request was still blocked when the test released them"


def test_a_slot_is_given_back_when_the_work_fails(engine, monkeypatch):
    """Work that raises (here the database busy past its timeout: 503) frees its slot; the next votes get in."""
    calls = []

    def busy_then_working(*_args):
        calls.append(threading.get_ident())
        if len(calls) <= 3:
            raise DatabaseBusy("database is locked: waited 30 s for another request of this process to finish")
        return Response("worked", status_code=200)

    monkeypatch.setattr(api_evaluate, "answer_vote", busy_then_working)
    app = create_app()

    async def main() -> tuple[list[int], int, list[str]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            def votes():
                return [client.post("/api/v1/evaluate/votes", json=VOTE_JSON) for _ in range(3)]
            try:  # a leaked slot would leave the later requests waiting for ever
                failed = await asyncio.wait_for(asyncio.gather(*votes()), WAIT_SECONDS)
                busy_after = rating_gate().busy
                worked = await asyncio.wait_for(asyncio.gather(*votes()), WAIT_SECONDS)
            except TimeoutError:
                pytest.fail(f"requests waited for a rating slot past {WAIT_SECONDS} s: a slot was not given back")
            return [r.status_code for r in failed], busy_after, [r.text for r in worked]

    failed, busy_after, worked = asyncio.run(main())
    assert failed == [503, 503, 503]
    assert busy_after == 0, "a failed request kept its rating slot"
    assert worked == ["worked"] * 3
