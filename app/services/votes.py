"""Recording a vote: every criterion answered, stored as clicked (side) and in model space (outcome).

Submitting is idempotent: the assignment row is locked, a done assignment answers "already recorded", and
``votes.assignment_id`` is unique, so even two submits racing past the check store one vote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Assignment, Clip, Criterion, Evaluator, Pair, Study, Vote, VoteChoice, utcnow
from app.services.assignments import EvaluationError, StudyNotOpen, as_utc, mark_completed_if_done
from app.services.attention import is_too_fast, qc_settings
from app.services.qc import refresh_flags

SIDES = ("left", "right", "tie")
CLIENT_TIME_MAX_MS = 24 * 3600 * 1000


class UnknownAssignment(EvaluationError):
    status_code = 404


class NotYourAssignment(EvaluationError):
    status_code = 403


class InvalidChoices(EvaluationError):
    """Some criteria are missing or have a value other than left/right/tie; nothing was stored."""

    status_code = 422

    def __init__(self, message: str, *, missing: list[str] | None = None, invalid: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []
        self.invalid = invalid or []


@dataclass
class SubmitResult:
    """``status`` is "recorded" or "already_recorded"; ``completed`` says the session's quota is done."""

    status: str
    assignment: Assignment
    vote: Vote | None = None
    completed: bool = False
    choices: dict[str, str] = field(default_factory=dict)


def validate_choices(criteria: list[Criterion], choices: dict[str, str]) -> dict[str, str]:
    """Every criterion answered with left/right/tie, and nothing else; raises ``InvalidChoices`` otherwise."""
    by_key = {c.key: c for c in criteria}
    missing = [c.label for c in criteria if not choices.get(c.key)]
    invalid = [by_key[k].label for k, v in choices.items() if k in by_key and v and v not in SIDES]
    unknown = sorted(k for k in choices if k not in by_key)
    if unknown:
        raise InvalidChoices(f"Unknown criteria: {', '.join(unknown)}. Expected: {', '.join(by_key)}.")
    if missing or invalid:
        parts = []
        if missing:
            parts.append("Please answer every question. Missing: " + ", ".join(missing) + ".")
        if invalid:
            parts.append("Answers must be left, right or tie for: " + ", ".join(invalid) + ".")
        raise InvalidChoices(" ".join(parts), missing=missing, invalid=invalid)
    return {c.key: choices[c.key] for c in criteria}


def _outcome(side: str, *, a_left: bool) -> str:
    if side == "tie":
        return "tie"
    return "a" if (side == "left") == a_left else "b"


def submit_vote(
    session: Session,
    *,
    assignment_token: str,
    evaluator_id: int,
    choices: dict[str, str],
    client_time_ms: int | None = None,
) -> SubmitResult:
    """Record this evaluator's answer to one assignment (see the module docstring for the guarantees)."""
    assignment = session.scalar(
        select(Assignment)
        .where(Assignment.token == (assignment_token or ""))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if assignment is None:
        raise UnknownAssignment("This pair was not found. Reload the page to get your current pair.")
    if assignment.evaluator_id != evaluator_id:
        raise NotYourAssignment("This pair belongs to another session; you can only answer your own pairs.")
    evaluator = session.get(Evaluator, evaluator_id)
    study = session.get(Study, evaluator.study_id)
    if assignment.status == "done":
        return SubmitResult("already_recorded", assignment, completed=evaluator.completed_at is not None)
    if study.status != "open":
        raise StudyNotOpen("This study has stopped accepting answers; your answer was not stored.")
    criteria = list(study.criteria)
    clean = validate_choices(criteria, {str(k): (v or "") for k, v in (choices or {}).items()})

    pair = session.get(Pair, assignment.pair_id)
    clip_a, clip_b = session.get(Clip, pair.clip_a_id), session.get(Clip, pair.clip_b_id)
    a_left = assignment.left_clip_id == pair.clip_a_id
    now = utcnow()
    spent = max(0, int((now - as_utc(assignment.shown_at)).total_seconds() * 1000))
    if client_time_ms is not None:
        client_time_ms = max(0, min(int(client_time_ms), CLIENT_TIME_MAX_MS))
    try:
        with session.begin_nested():
            vote = Vote(
                assignment_id=assignment.id, study_id=study.id, evaluator_id=evaluator_id, pair_id=pair.id,
                shown_at=assignment.shown_at, submitted_at=now, time_spent_ms=spent, client_time_ms=client_time_ms,
                too_fast=is_too_fast(spent, qc_settings(study)),
            )
            session.add(vote)
            session.flush()  # the unique assignment_id refuses a racing second vote here
            for criterion in criteria:
                outcome = _outcome(clean[criterion.key], a_left=a_left)
                winner = {"a": clip_a.model_id, "b": clip_b.model_id}.get(outcome)
                session.add(VoteChoice(
                    vote_id=vote.id, criterion_id=criterion.id, side=clean[criterion.key],
                    model_a_id=clip_a.model_id, model_b_id=clip_b.model_id, outcome=outcome, winner_model_id=winner,
                ))
            assignment.status = "done"
            assignment.submitted_at = now
            # In SQL, not in Python: concurrent votes on the same pair must not lose an increment.
            session.execute(update(Pair).where(Pair.id == pair.id).values(votes_count=Pair.votes_count + 1))
            session.flush()
    except IntegrityError:
        session.refresh(assignment)
        return SubmitResult("already_recorded", assignment, completed=evaluator.completed_at is not None)
    # Flags are recomputed from all of the evaluator's votes, so the dashboard is current after every vote.
    refresh_flags(session, evaluator_id=evaluator_id)
    completed = mark_completed_if_done(session, evaluator=evaluator, study=study)
    return SubmitResult("recorded", assignment, vote=vote, completed=completed, choices=clean)
