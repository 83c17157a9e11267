"""Votes written straight to the tables for the attention-check and QC tests (the vote service has its own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Assignment, Criterion, Evaluator, Pair, Vote, VoteChoice

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def assign(session: Session, *, pair: Pair, evaluator: Evaluator, a_left: bool = True,
           status: str = "open") -> Assignment:
    position = (session.scalar(select(func.count(Assignment.id)).where(Assignment.evaluator_id == evaluator.id))
                or 0) + 1
    left, right = (pair.clip_a_id, pair.clip_b_id) if a_left else (pair.clip_b_id, pair.clip_a_id)
    assignment = Assignment(evaluator_id=evaluator.id, pair_id=pair.id, position=position, left_clip_id=left,
                            right_clip_id=right, status=status, shown_at=T0 + timedelta(minutes=position))
    session.add(assignment)
    session.flush()
    return assignment


def vote(session: Session, *, pair: Pair, evaluator: Evaluator, sides: dict[str, str] | str, a_left: bool = True,
         time_ms: int = 9000, too_fast: bool = False) -> Vote:
    """``sides``: criterion key -> 'left' | 'right' | 'tie' as clicked, or one side for every criterion."""
    criteria = list(session.scalars(select(Criterion).where(Criterion.study_id == pair.study_id)
                                     .order_by(Criterion.position)))
    if isinstance(sides, str):
        sides = {c.key: sides for c in criteria}
    assignment = assign(session, pair=pair, evaluator=evaluator, a_left=a_left, status="done")
    submitted = assignment.shown_at + timedelta(milliseconds=time_ms)
    assignment.submitted_at = submitted
    v = Vote(assignment_id=assignment.id, study_id=pair.study_id, evaluator_id=evaluator.id, pair_id=pair.id,
             shown_at=assignment.shown_at, submitted_at=submitted, time_spent_ms=time_ms, too_fast=too_fast)
    session.add(v)
    session.flush()
    model_a, model_b = pair.clip_a.model_id, pair.clip_b.model_id
    for c in criteria:
        side = sides[c.key]
        outcome = "tie" if side == "tie" else ("a" if (side == "left") == a_left else "b")
        session.add(VoteChoice(vote_id=v.id, criterion_id=c.id, side=side, model_a_id=model_a, model_b_id=model_b,
                               outcome=outcome, winner_model_id={"a": model_a, "b": model_b}.get(outcome)))
    session.flush()
    return v
