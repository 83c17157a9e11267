"""Two votes whose next pairs cross (each rater's next pair is the one the other just answered) must both be
stored: on PostgreSQL each vote's transaction holds its answered pair's row (the vote counter) and then asks for
the next pair's (the reservation), so the two wait on each other and PostgreSQL cancels one to break the deadlock.
That vote is run again rather than answered 503 (``retry_on_conflict``, app/db.py)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from app.db import get_sessionmaker
from app.models import Pair, Vote
from app.services import assignments
from tests.factories import NO_CHECKS, make_pairs, make_study
from tests.support.threads import run_in_threads

@pytest.mark.postgres
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
def test_two_votes_whose_next_pairs_cross_are_both_stored(client, session, monkeypatch):
    study = make_study(session, n_prompts=2, pairs_per_session=2, qc=NO_CHECKS)
    make_pairs(session, study)
    session.commit()
    keys = [c.key for c in study.criteria]
    raters = []
    for _ in range(2):  # the first is given one pair, the second the other (the least loaded)
        r = client.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token})
        headers = {"X-Evaluator-Token": r.json()["evaluator_token"]}
        pair = client.get("/api/v1/evaluate/pair", headers=headers).json()["pair"]
        raters.append((headers, pair["assignment_token"]))

    # Both votes counted before either asks for its next pair: the crossing that deadlocks, made certain.
    # Only the first two choices wait (a vote run again passes straight through).
    both_counted = threading.Barrier(2, timeout=30)
    calls = iter(range(1_000))
    original = assignments._pick_pair_id

    def pick_after_both_counted(*args, **kwargs):
        if next(calls) < 2:
            both_counted.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(assignments, "_pick_pair_id", pick_after_both_counted)
    answers = {}
    turn = iter(raters)
    lock = threading.Lock()

    def vote() -> None:
        with lock:
            headers, token = next(turn)
        r = client.post("/api/v1/evaluate/votes?next=true", headers=headers,
                        json={"assignment_token": token, "choices": dict.fromkeys(keys, "left")})
        answers[token] = r

    assert run_in_threads(vote, 2) == []
    assert [r.status_code for r in answers.values()] == [200, 200], [r.text for r in answers.values()]
    assert all(r.json()["status"] == "recorded" and r.json()["next"]["status"] == "pair" for r in answers.values())
    with get_sessionmaker()() as s:
        assert s.scalar(select(func.count(Vote.id))) == 2
        # each pair: one vote, and two assignments given (the first rater's and the other's next)
        assert sorted(s.execute(select(Pair.votes_count, Pair.assigned_count).where(Pair.kind == "normal"))
                      .all()) == [(1, 2), (1, 2)]


def test_every_rating_work_that_can_take_two_pairs_rows_is_run_again_on_a_conflict():
    # The API's vote is tested above; the pages' vote and pair and the API's pair run through the same wrapper
    # (a pair page gives an abandoned pair back and reserves the next: two pairs' rows too).
    from app.api import evaluate
    from app.web import evaluator

    for work in (evaluate.answer_vote, evaluate.answer_pair, evaluator._vote, evaluator._pair_page):
        assert getattr(work, "__wrapped__", None) is not None, work.__name__
