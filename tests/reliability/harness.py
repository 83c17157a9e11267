"""A real server (uvicorn subprocess) and simulated evaluators for the load, kill and fuzz tests.

Evaluators come in two kinds, so both real entry points are exercised: half use the HTML pages exactly as
a browser would (invite page, consent form with its CSRF token, pair page, vote form, redirects), half use
the JSON API (``/api/v1/evaluate``). Each one misbehaves at random the way real people and networks do:
double submits (two identical posts at once), retries of an answered vote (a lost response), and retries
after connection errors (the server being killed). Every request loop is bounded; only loopback is used.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app.models import Assignment, Criterion, Evaluator, Pair, Vote, VoteChoice
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SIDES = ("left", "right", "tie")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ASSIGNMENT = re.compile(r'name="assignment" value="([^"]+)"')
_CRITERION = re.compile(r'name="c_([a-z0-9_]+)" value="left"')
_POSITION = re.compile(r"<title>Pair (\d+) of (\d+)")


class LiveServer:
    """``uvicorn --factory app.main:create_app`` on a fixed free port, restartable on the same database."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/api/v1/openapi.json", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown handler, no flush, like a crash or an OOM kill."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "BLINDPAIR_DATABASE_URL": database_url,
        "BLINDPAIR_DATA_DIR": str(data_dir),
        "BLINDPAIR_ENVIRONMENT": "test",
        "BLINDPAIR_SECRET_KEY": os.environ.get("BLINDPAIR_SECRET_KEY", "reliability-secret-key-0123456789-abcdef"),
        # Every simulated evaluator comes from 127.0.0.1; the per-IP join limit is tested elsewhere.
        "BLINDPAIR_JOIN_RATE_LIMIT_PER_MINUTE": "100000",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@dataclass
class Tally:
    """What the clients saw: every status code, and every vote the server acknowledged."""

    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    acked: dict[str, dict[str, str]] = field(default_factory=dict)  # assignment token -> choices sent
    recorded_responses: Counter = field(default_factory=Counter)  # token -> number of "recorded" answers
    transport_errors: int = 0
    finished: set[int] = field(default_factory=set)
    # evaluator index -> positions of the pairs it was shown, in order (to check resumption)
    positions: dict[int, list[int]] = field(default_factory=dict)


class Unreachable(RuntimeError):
    pass


async def request(client: httpx.AsyncClient, tally: Tally, method: str, url: str, *, attempts: int = 300,
                  **kw) -> httpx.Response:
    """One request, retried on connection errors (the server may be restarting); bounded."""
    for attempt in range(attempts):
        try:
            r = await client.request(method, url, **kw)
        except httpx.TransportError:
            tally.transport_errors += 1
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
            continue
        tally.statuses[r.status_code] += 1
        if r.status_code >= 500:
            tally.server_errors.append(f"{method} {url} -> {r.status_code}: {r.text[:300]}")
        return r
    raise Unreachable(f"{method} {url}: no answer after {attempts} attempts")


@dataclass
class Behaviour:
    double_submit: float = 0.15  # two identical posts at once
    resubmit: float = 0.1  # the same post again after the answer (a lost response, or Back + Submit)
    stop_after: int | None = None  # leave after this many votes (the kill test brings them back)
    pages: bool = True  # half the evaluators use the HTML pages (False: all use the JSON API)


async def _send_vote(client, tally, *, html: bool, token: str, choices: dict[str, str], csrf: str,
                     headers: dict[str, str]) -> bool:
    """Post one vote; return True when the server acknowledged it as stored (now or before)."""
    if html:
        data = {"csrf_token": csrf, "assignment": token, "client_time_ms": "5000",
                **{f"c_{k}": v for k, v in choices.items()}}
        r = await request(client, tally, "POST", "/e/vote", data=data)
        # Post/Redirect/Get to the next pair means "recorded or already recorded".
        return r.status_code == 303 and r.headers.get("location") == "/e/pair"
    r = await request(client, tally, "POST", "/api/v1/evaluate/votes", headers=headers,
                      json={"assignment_token": token, "choices": choices, "client_time_ms": 5000})
    if r.status_code == 200:
        if r.json()["status"] == "recorded":
            tally.recorded_responses[token] += 1
        return True
    return False


async def run_evaluator(base_url: str, invite: str, idx: int, tally: Tally, rng: random.Random,
                        behaviour: Behaviour, *, max_steps: int = 200) -> None:
    """One evaluator from invite to completion code (or to ``behaviour.stop_after`` votes)."""
    html = behaviour.pages and idx % 2 == 0
    external_id = f"load-{idx}"  # a retried join (lost response) gets the same session back ...
    platform_session = f"load-session-{idx}"  # ... with the platform's session id beside it (issue 12)
    positions = tally.positions.setdefault(idx, [])
    async with httpx.AsyncClient(base_url=base_url, timeout=60, follow_redirects=False) as client:
        headers: dict[str, str] = {}
        if html:
            r = await request(client, tally, "GET", f"/join/{invite}",
                              params={"PROLIFIC_PID": external_id, "SESSION_ID": platform_session})
            if r.status_code == 303:  # cookie from an earlier run of this evaluator: resume
                pass
            else:
                assert r.status_code == 200, r.text[:300]
                csrf = _CSRF.search(r.text).group(1)
                r = await request(client, tally, "POST", f"/join/{invite}",
                                  data={"csrf_token": csrf, "consent": "yes", "external_id": external_id,
                                        "platform_session_id": platform_session})
                assert r.status_code == 303, r.text[:300]
        else:
            r = await request(client, tally, "POST", "/api/v1/evaluate/join",
                              json={"invite_token": invite, "external_id": external_id,
                                    "platform_session_id": platform_session})
            assert r.status_code == 201, r.text[:300]
            headers = {"X-Evaluator-Token": r.json()["evaluator_token"]}
        votes = 0
        for _ in range(max_steps):
            if behaviour.stop_after is not None and votes >= behaviour.stop_after:
                return
            if html:
                r = await request(client, tally, "GET", "/e/pair")
                if r.status_code == 303 and r.headers["location"] == "/e/done":
                    tally.finished.add(idx)
                    return
                assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
                token = _ASSIGNMENT.search(r.text).group(1)
                csrf = _CSRF.search(r.text).group(1)
                keys = _CRITERION.findall(r.text)
                positions.append(int(_POSITION.search(r.text).group(1)))
            else:
                r = await request(client, tally, "GET", "/api/v1/evaluate/pair", headers=headers)
                assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
                body = r.json()
                if body["status"] == "done":
                    tally.finished.add(idx)
                    return
                token, csrf = body["pair"]["assignment_token"], ""
                keys = [c["key"] for c in body["pair"]["criteria"]]
                positions.append(body["pair"]["position"])
            # A pair already answered before a crash keeps its first answer: resend exactly that.
            choices = tally.acked.get(token) or {k: rng.choice(SIDES) for k in keys}
            send = {"html": html, "token": token, "choices": choices, "csrf": csrf, "headers": headers}
            if rng.random() < behaviour.double_submit:
                results = await asyncio.gather(*(_send_vote(client, tally, **send) for _ in range(2)))
            else:
                results = [await _send_vote(client, tally, **send)]
            if any(results):
                tally.acked[token] = choices
                votes += 1
            if rng.random() < behaviour.resubmit:
                await _send_vote(client, tally, **send)


async def run_crowd(base_url: str, invite: str, n: int, tally: Tally, *, seed: int, behaviour: Behaviour,
                    indices: list[int] | None = None) -> list[BaseException]:
    rng = random.Random(seed)
    indices = indices if indices is not None else list(range(n))
    results = await asyncio.gather(
        *(run_evaluator(base_url, invite, i, tally, random.Random(rng.getrandbits(64)), behaviour)
          for i in indices),
        return_exceptions=True,
    )
    return [r for r in results if isinstance(r, BaseException)]


# ------------------------------------------------------------------------------------------ the checks


def check_database(database_url: str, tally: Tally, *, study_id: int, n_evaluators: int, votes_each: int) -> None:
    """Every acknowledged vote stored once with what was sent; sessions complete; counterbalancing holds."""
    engine = create_engine(database_url)
    try:
        with Session(engine) as s:
            keys = {c.id: c.key for c in s.scalars(select(Criterion).where(Criterion.study_id == study_id))}
            n_votes = s.scalar(select(func.count(Vote.id)))
            n_distinct = s.scalar(select(func.count(func.distinct(Vote.assignment_id))))
            assert n_votes == n_distinct, "an assignment has two votes"
            stored = dict(s.execute(
                select(Assignment.token, Vote.id).join(Vote, Vote.assignment_id == Assignment.id)).all())
            lost = [t for t in tally.acked if t not in stored]
            assert not lost, f"{len(lost)} acknowledged votes are missing from the database"
            assert n_votes == len(tally.acked), f"{n_votes} votes stored but {len(tally.acked)} acknowledged"
            sides: dict[int, dict[str, str]] = {}
            for vote_id, criterion_id, side in s.execute(
                    select(VoteChoice.vote_id, VoteChoice.criterion_id, VoteChoice.side)):
                sides.setdefault(vote_id, {})[keys[criterion_id]] = side
            wrong = [t for t, choices in tally.acked.items() if sides.get(stored[t]) != choices]
            assert not wrong, f"{len(wrong)} stored votes differ from what was sent"

            evaluators = s.scalars(select(Evaluator).where(Evaluator.study_id == study_id)).all()
            assert len(evaluators) == n_evaluators, "a retried join created a second session"
            for ev in evaluators:
                rows = s.execute(select(Assignment.position, Assignment.status, Assignment.pair_id)
                                 .where(Assignment.evaluator_id == ev.id).order_by(Assignment.position)).all()
                assert [r.position for r in rows] == list(range(1, votes_each + 1)), ev.external_id
                assert all(r.status == "done" for r in rows), ev.external_id
                assert len({r.pair_id for r in rows}) == votes_each, f"{ev.external_id} saw a pair twice"
                assert ev.completed_at is not None, ev.external_id

            for pair in s.scalars(select(Pair).where(Pair.study_id == study_id)):
                lefts = s.execute(select(Assignment.left_clip_id).where(Assignment.pair_id == pair.id)).scalars().all()
                a_left = sum(1 for c in lefts if c == pair.clip_a_id)
                b_left = len(lefts) - a_left
                assert abs(a_left - b_left) <= 1, f"pair {pair.id}: clip_a left {a_left} times, right {b_left}"
                assert (pair.assigned_count, pair.a_left_count) == (len(lefts), a_left), f"pair {pair.id} counters"
                votes = s.scalar(select(func.count(Vote.id)).where(Vote.pair_id == pair.id))
                assert pair.votes_count == votes, f"pair {pair.id}: votes_count {pair.votes_count} != {votes}"
    finally:
        engine.dispose()


def run_async(coro):
    """``asyncio.run`` in a fresh thread: the browser tests' Playwright (sync API) keeps an event loop running
    in the main thread of a pytest worker, and asyncio.run refuses to start inside a running loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
