"""Two votes whose next pairs cross (each rater's next pair is the one the other just answered) must both be
stored, and neither wait on the other. On PostgreSQL a vote's transaction takes the answered pair's row (its vote
counter) and the next pair's (the reservation); taken in that order the two waited on each other until PostgreSQL
cancelled one (a deadlock, answered 503). They are now taken lower pair id first (``VoteCounter``,
app/services/votes.py), and a transaction PostgreSQL cancels all the same is run again (``retry_on_conflict``,
app/db.py)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from app import db
from app.db import get_sessionmaker
from app.models import Pair, Vote
from app.services import assignments
from tests.factories import NO_CHECKS, make_pairs, make_study
from tests.support.threads import run_in_threads


@pytest.mark.postgres
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
@pytest.mark.parametrize("retries", [0, db.CONFLICT_RETRIES], ids=["no-retry", "retries"])
def test_two_votes_whose_next_pairs_cross_are_both_stored(client, session, monkeypatch, caplog, retries):
    # With no retry too: the rows taken in one order, neither vote is cancelled in the first place.
    monkeypatch.setattr(db, "CONFLICT_RETRIES", retries)
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

    # Both votes reach the choice of their next pair together, each holding what it holds by then: when the vote
    # counter was taken first, the crossing that deadlocked, made certain. Only the first two choices wait (a
    # vote run again passes straight through).
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

    with caplog.at_level("INFO", logger="app"):
        assert run_in_threads(vote, 2) == []
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]  # none cancelled, none run again
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
