"""Abandoned sessions give their pairs back (issue 12): after the study's abandon_after_minutes an open pair
is no longer reserved, the returning participant continues with a fresh pair, and the late answer is refused,
so every pair reaches its quota without waiting and nothing is counted twice. Time is a hand-moved clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from app.db import get_sessionmaker
from app.models import Assignment, Pair, Vote
from app.services.assignments import RELEASED, join, next_assignment
from app.services.votes import AssignmentReleased, submit_vote
from tests.app.services.qc_votes import T0, assign
from tests.conftest import BACKENDS
from tests.factories import make_evaluator, make_pairs, make_study
from tests.support import clock as fake_clock


@pytest.fixture
def clock(monkeypatch):
    return fake_clock.install(monkeypatch, start=T0 + timedelta(minutes=10))


def _abandoned_pair(session, **qc):
    """Pairs X, Y, Z: Y and Z have 2 votes each; X has none, but three sessions opened it at T0 and left."""
    study = make_study(session, n_prompts=3, pairs_per_session=3, qc={"enabled": False, **qc})
    x, y, z = make_pairs(session, study)
    y.votes_count = z.votes_count = 2
    leavers = [make_evaluator(session, study) for _ in range(3)]
    for ev in leavers:
        assign(session, pair=x, evaluator=ev, a_left=True)  # shown at T0 + 1 min, never answered
    x.assigned_count = x.a_left_count = 3
    session.flush()
    return study, x, leavers


def _all(study, side="left"):
    return {c.key: side for c in study.criteria}


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_an_abandoned_pair_goes_back_to_the_pool_after_the_study_time(session, clock):
    study, x, leavers = _abandoned_pair(session, abandon_after_minutes=5)
    newcomer = join(session, invite_token=study.invite_token)
    view = next_assignment(session, evaluator_id=newcomer.id)
    assert view.pair_id == x.id  # X has no votes and no live reservation: it goes first
    submit_vote(session, assignment_token=view.token, evaluator_id=newcomer.id, choices=_all(study))

    # A leaver comes back: their pair went to someone else, so they continue with a fresh one.
    back = leavers[0]
    old = session.scalar(select(Assignment).where(Assignment.evaluator_id == back.id))
    fresh = next_assignment(session, evaluator_id=back.id)
    assert fresh.replaced and fresh.pair_id != x.id and fresh.position == 2
    session.refresh(old)
    assert old.status == RELEASED
    # Their answer to the old page is refused, and nothing is stored for it.
    with pytest.raises(AssignmentReleased, match="given to another participant"):
        submit_vote(session, assignment_token=old.token, evaluator_id=back.id, choices=_all(study))
    session.refresh(x)
    assert x.votes_count == 1 and session.scalar(select(func.count(Vote.id)).where(Vote.pair_id == x.id)) == 1
    # Counterbalance over the assignments still live: 3 leavers with A left, the newcomer got A on the right
    # (4, 3); the release takes the returning leaver's A-left assignment out.
    assert (x.assigned_count, x.a_left_count) == (3, 2)
    # The fresh pair counts in the session as any other: it answers normally, the quota is not used up.
    submit_vote(session, assignment_token=fresh.token, evaluator_id=back.id, choices=_all(study))
    assert next_assignment(session, evaluator_id=back.id) is not None


def test_a_late_answer_to_an_open_but_expired_pair_is_refused(session, clock):
    study, x, leavers = _abandoned_pair(session, abandon_after_minutes=5)
    token = session.scalar(select(Assignment.token).where(Assignment.evaluator_id == leavers[1].id))
    with pytest.raises(AssignmentReleased):
        submit_vote(session, assignment_token=token, evaluator_id=leavers[1].id, choices=_all(study))
    assert session.scalar(select(Assignment.status).where(Assignment.token == token)) == RELEASED
    assert session.scalar(select(func.count(Vote.id))) == 0


def test_within_the_time_or_with_zero_the_reservation_holds(session, clock):
    study, x, leavers = _abandoned_pair(session, abandon_after_minutes=0)  # 0: never give back
    clock.advance(minutes=60 * 24 * 3)
    view = next_assignment(session, evaluator_id=join(session, invite_token=study.invite_token).id)
    assert view.pair_id != x.id
    resumed = next_assignment(session, evaluator_id=leavers[0].id)
    assert resumed.pair_id == x.id and not resumed.replaced


def test_the_returning_participant_is_told_over_http(client, session, clock):
    study = make_study(session, n_prompts=4, pairs_per_session=3, qc={"enabled": False})
    make_pairs(session, study)
    session.commit()
    page = client.get(f"/join/{study.invite_token}")
    csrf = BeautifulSoup(page.text, "html.parser").find("input", attrs={"name": "csrf_token"})["value"]
    client.post(f"/join/{study.invite_token}", data={"csrf_token": csrf, "consent": "yes"})
    first = BeautifulSoup(client.get("/e/pair").text, "html.parser")
    old_form = {i["name"]: i.get("value", "") for i in first.find_all("input", attrs={"type": "hidden"})}
    old_form |= {i["name"]: "tie" for i in first.find_all("input", attrs={"type": "radio"})}

    clock.advance(minutes=31)  # past the default 30 minutes
    again = client.get("/e/pair")
    assert again.status_code == 200 and "given to another participant" in again.text
    assert "Pair 1 of 3" in again.text  # numbering does not jump over the pair given back
    late = client.post("/e/vote", data=old_form, follow_redirects=False)
    assert late.status_code == 409 and "not stored" in late.text and 'href="/e/pair"' in late.text
    with get_sessionmaker()() as s:
        assert s.scalar(select(func.count(Vote.id))) == 0
        assert s.scalar(select(func.count(Pair.id)).where(Pair.votes_count > 0)) == 0
