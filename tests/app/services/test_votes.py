"""Recording votes: validation, idempotency, ownership and model-space outcomes, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import Assignment, Pair, StudyModel, Vote, VoteChoice, utcnow
from app.services.assignments import StudyNotOpen, join, next_assignment
from app.services.votes import InvalidChoices, NotYourAssignment, UnknownAssignment, submit_vote
from tests.conftest import BACKENDS
from tests.factories import make_pairs, make_study


def _setup(session, **kw):
    study = make_study(session, **kw)
    make_pairs(session, study)
    ev = join(session, invite_token=study.invite_token)
    return study, ev, next_assignment(session, evaluator_id=ev.id)


def _count(session, model):
    return session.scalar(select(func.count(model.id)))


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_vote_is_stored_in_model_space(session, db_backend):
    study, ev, a = _setup(session)
    keys = [c.key for c in study.criteria]
    clicked = dict(zip(keys, ["left", "right", "tie", "left", "right", "tie"], strict=True))
    result = submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=clicked, client_time_ms=4321)
    session.commit()
    assert result.status == "recorded"
    pair = session.get(Pair, a.pair_id)
    models = {m.id: m.name for m in session.scalars(select(StudyModel))}
    left_model = models[pair.clip_a.model_id if a.left_clip_id == pair.clip_a_id else pair.clip_b.model_id]
    right_model = models[pair.clip_b.model_id if a.left_clip_id == pair.clip_a_id else pair.clip_a.model_id]
    vote = session.scalar(select(Vote))
    assert vote.client_time_ms == 4321 and vote.time_spent_ms >= 0 and vote.shown_at is not None
    by_key = {c.key: c.id for c in study.criteria}
    for key, side in clicked.items():
        choice = session.scalar(select(VoteChoice).where(VoteChoice.criterion_id == by_key[key]))
        assert choice.side == side
        expected_winner = {"left": left_model, "right": right_model, "tie": None}[side]
        assert (models.get(choice.winner_model_id)) == expected_winner
        expected_outcome = "tie" if side == "tie" else ("a" if expected_winner == models[pair.clip_a.model_id]
                                                        else "b")
        assert choice.outcome == expected_outcome
        assert (choice.model_a_id, choice.model_b_id) == (pair.clip_a.model_id, pair.clip_b.model_id)
    assert pair.votes_count == 1
    assert session.get(Assignment, a.id).status == "done"


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_resubmission_is_idempotent(session, db_backend):
    study, ev, a = _setup(session)
    choices = {c.key: "left" for c in study.criteria}
    assert submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=choices).status == "recorded"
    session.commit()
    again = submit_vote(session, assignment_token=a.token, evaluator_id=ev.id,
                        choices={c.key: "right" for c in study.criteria})
    session.commit()
    assert again.status == "already_recorded"
    assert _count(session, Vote) == 1 and _count(session, VoteChoice) == 6
    assert session.scalar(select(VoteChoice.side).limit(1)) == "left"
    assert session.get(Pair, a.pair_id).votes_count == 1


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_racing_second_vote_is_caught_by_the_unique_constraint(session, db_backend):
    """A vote that slipped in between (the assignment still looks open) makes the insert fail: one vote."""
    study, ev, a = _setup(session)
    session.add(Vote(assignment_id=a.id, study_id=study.id, evaluator_id=ev.id, pair_id=a.pair_id,
                     shown_at=a.shown_at, time_spent_ms=1))
    session.commit()
    result = submit_vote(session, assignment_token=a.token, evaluator_id=ev.id,
                         choices={c.key: "left" for c in study.criteria})
    session.commit()
    assert result.status == "already_recorded"
    assert _count(session, Vote) == 1 and _count(session, VoteChoice) == 0
    assert session.get(Pair, a.pair_id).votes_count == 0


def test_foreign_assignment_is_refused_and_changes_nothing(session):
    study, ev, a = _setup(session)
    other = join(session, invite_token=study.invite_token)
    with pytest.raises(NotYourAssignment) as exc:
        submit_vote(session, assignment_token=a.token, evaluator_id=other.id,
                    choices={c.key: "left" for c in study.criteria})
    assert exc.value.status_code == 403
    assert _count(session, Vote) == 0
    assert session.get(Assignment, a.id).status == "open"
    # Even once done, the other evaluator gets a refusal, not "already recorded".
    submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices={c.key: "tie" for c in study.criteria})
    with pytest.raises(NotYourAssignment):
        submit_vote(session, assignment_token=a.token, evaluator_id=other.id, choices={})
    with pytest.raises(UnknownAssignment):
        submit_vote(session, assignment_token="forged", evaluator_id=ev.id, choices={})


def test_missing_and_invalid_criteria_are_named(session):
    study, ev, a = _setup(session)
    choices = {c.key: "left" for c in study.criteria}
    del choices["motion_amplitude"]
    choices["overall_quality"] = ""
    with pytest.raises(InvalidChoices) as exc:
        submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=choices)
    assert exc.value.missing == ["Motion amplitude", "Overall quality"]
    assert "Missing: Motion amplitude, Overall quality." in exc.value.message
    choices.update(motion_amplitude="up", overall_quality="tie")
    with pytest.raises(InvalidChoices, match="left, right or tie for: Motion amplitude"):
        submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=choices)
    choices.update(motion_amplitude="tie", colour="left")
    with pytest.raises(InvalidChoices, match="Unknown criteria: colour"):
        submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=choices)
    assert _count(session, Vote) == 0 and session.get(Assignment, a.id).status == "open"


def test_time_spent_is_measured_by_the_server_and_fast_votes_flagged(session):
    study, ev, a = _setup(session, qc={"min_vote_seconds": 5})
    choices = {c.key: "tie" for c in study.criteria}
    submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=choices, client_time_ms=10**9)
    fast = session.scalar(select(Vote))
    assert fast.too_fast is True
    assert fast.client_time_ms == 24 * 3600 * 1000  # clamped: the client's number is only a hint
    b = next_assignment(session, evaluator_id=ev.id)
    session.get(Assignment, b.id).shown_at = utcnow() - timedelta(seconds=30)
    session.flush()
    submit_vote(session, assignment_token=b.token, evaluator_id=ev.id, choices=choices)
    slow = session.scalar(select(Vote).where(Vote.assignment_id == b.id))
    assert slow.too_fast is False and 29_000 <= slow.time_spent_ms < 60_000


def test_votes_refused_once_the_study_is_closed(session):
    study, ev, a = _setup(session)
    study.status = "closed"
    with pytest.raises(StudyNotOpen):
        submit_vote(session, assignment_token=a.token, evaluator_id=ev.id,
                    choices={c.key: "tie" for c in study.criteria})
    assert _count(session, Vote) == 0


def test_last_vote_completes_the_session(session):
    study, ev, a = _setup(session, n_prompts=2, pairs_per_session=2)
    choices = {c.key: "left" for c in study.criteria}
    assert submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=choices).completed is False
    b = next_assignment(session, evaluator_id=ev.id)
    assert submit_vote(session, assignment_token=b.token, evaluator_id=ev.id, choices=choices).completed is True
    assert ev.completed_at is not None
