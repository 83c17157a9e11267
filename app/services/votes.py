"""Recording a vote: every criterion answered, stored as clicked (side) and in model space (outcome).

Submitting is idempotent: one evaluator's requests run one after another (its row lock on PostgreSQL,
BEGIN IMMEDIATE on SQLite), a done assignment answers "already recorded", and the vote is inserted with ON
CONFLICT DO NOTHING on the unique ``votes.assignment_id``, so even a submit racing past the check stores
nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db import expire_cached
from app.models import Assignment, Clip, Pair, Vote, VoteChoice, utcnow
from app.raw_sql import RawStatement
from app.services.answers import BOTH_BAD, InvalidExtras, answer_options, clean_extras
from app.services.assignments import (
    RELEASED,
    EvaluationError,
    EvaluatorState,
    StudyNotOpen,
    as_utc,
    evaluator_state,
    is_abandoned,
    mark_completed_if_done,
    release_assignment,
    study_criteria,
)
from app.services.attention import is_too_fast
from app.services.qc import refresh_cluster_flags_after_vote, refresh_flags, refresh_reliability_after_vote

SIDES = ("left", "right", "tie")
CLIENT_TIME_MAX_MS = 24 * 3600 * 1000


class UnknownAssignment(EvaluationError):
    status_code = 404


class NotYourAssignment(EvaluationError):
    status_code = 403


class AssignmentReleased(EvaluationError):
    """The pair stayed unanswered past the study's abandon_after_minutes and went back to the pool."""

    status_code = 409
    title = "This pair was given to someone else"


class InvalidChoices(EvaluationError):
    """Some criteria are missing or have a value other than left/right/tie; nothing was stored."""

    status_code = 422

    def __init__(self, message: str, *, missing: list[str] | None = None, invalid: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []
        self.invalid = invalid or []


@dataclass
class SubmitResult:
    """``status`` is "recorded" or "already_recorded"; ``completed`` says the session's quota is done.
    ``counter``: the answered pair's vote counter, still owed when ``submit_vote`` was asked to defer it."""

    status: str
    assignment_id: int
    vote_id: int | None = None
    completed: bool = False
    choices: dict[str, str] = field(default_factory=dict)
    counter: VoteCounter | None = None


@dataclass
class VoteCounter:
    """The answered pair's vote counter, for a vote whose transaction also reserves the next pair.

    Counting takes the answered pair's row and reserving takes the next pair's (PostgreSQL: until the commit).
    Taken in that order, two votes whose next pairs are each other's answered ones waited on each other until
    PostgreSQL cancelled one (a deadlock). Taken lower pair id first, they cannot: ``before_reserving`` counts
    now if the answered pair's id is the lower, and ``count`` (after the reservation) otherwise.
    """

    pair_id: int
    counted: bool = False

    def before_reserving(self, session: Session, next_pair_id: int) -> None:
        if self.pair_id < next_pair_id:
            self.count(session)

    def count(self, session: Session) -> None:
        if not self.counted:
            _COUNT_VOTE.run(session, {"pair_id": self.pair_id})
            expire_cached(session, Pair, self.pair_id, "votes_count")
            self.counted = True


# Built once with bind parameters (see app/services/assignments.py: building statements cost more than running them).
_clip_a, _clip_b = Clip.__table__.alias("clip_a"), Clip.__table__.alias("clip_b")
_votes, _assignments, _pairs = Vote.__table__, Assignment.__table__, Pair.__table__
_FIND_ASSIGNMENT = RawStatement(
    select(_assignments.c.id, _assignments.c.evaluator_id, _assignments.c.status, _assignments.c.shown_at,
           _assignments.c.left_clip_id, _pairs.c.id.label("pair_id"), _pairs.c.clip_a_id,
           _clip_a.c.model_id.label("model_a_id"), _clip_b.c.model_id.label("model_b_id"))
    .join(_pairs, _pairs.c.id == _assignments.c.pair_id)
    .join(_clip_a, _clip_a.c.id == _pairs.c.clip_a_id)
    .join(_clip_b, _clip_b.c.id == _pairs.c.clip_b_id)
    .where(_assignments.c.token == bindparam("token"))
)
# The dialect's INSERT, which has on_conflict_do_nothing (the generic insert does not).
_VOTE_COLUMNS = ("assignment_id", "study_id", "evaluator_id", "pair_id", "shown_at", "submitted_at", "time_spent_ms",
                 "client_time_ms", "too_fast", "comment", "reason_tags")
_INSERT_VOTE = {
    name: RawStatement(dialect.insert(_votes).on_conflict_do_nothing(index_elements=["assignment_id"])
                       .returning(_votes.c.id), columns=_VOTE_COLUMNS)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_MARK_DONE = RawStatement(update(_assignments).where(_assignments.c.id == bindparam("assignment_id"))
                          .values(status="done", submitted_at=bindparam("now")))
# The table, not the class: Core sends one executemany (the ORM's bulk insert split rows by their None keys).
# inline(): no RETURNING of each row's id, which PostgreSQL would otherwise be asked for and executemany drops.
_INSERT_CHOICES = RawStatement(insert(VoteChoice.__table__).inline(), columns=(
    "vote_id", "criterion_id", "side", "model_a_id", "model_b_id", "outcome", "winner_model_id"))
# In SQL, not in Python: concurrent votes on the same pair must not lose an increment.
_COUNT_VOTE = RawStatement(update(_pairs).where(_pairs.c.id == bindparam("pair_id"))
                           .values(votes_count=_pairs.c.votes_count + 1))


def _insert_vote(session: Session) -> RawStatement:
    return _INSERT_VOTE["postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"]


class LabelledCriterion(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...


def validate_choices(criteria: Sequence[LabelledCriterion], choices: dict[str, str],
                     sides: Sequence[str] = SIDES) -> dict[str, str]:
    """Every criterion answered with left/right/tie (or ``sides``: "both_bad" where the study offers it), and
    nothing else; raises ``InvalidChoices`` otherwise."""
    by_key = {c.key: c for c in criteria}
    missing = [c.label for c in criteria if not choices.get(c.key)]
    invalid = [by_key[k].label for k, v in choices.items() if k in by_key and v and v not in sides]
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
    if side in ("tie", BOTH_BAD):  # "both are bad" prefers neither model: a tie (app/services/answers.py)
        return "tie"
    return "a" if (side == "left") == a_left else "b"


def submit_vote(
    session: Session,
    *,
    assignment_token: str,
    evaluator_id: int,
    choices: dict[str, str],
    client_time_ms: int | None = None,
    state: EvaluatorState | None = None,
    comment: str | None = None,
    reason_tags: Sequence[str] | None = None,
    defer_count: bool = False,
) -> SubmitResult:
    """Record this evaluator's answer to one assignment (see the module docstring for the guarantees).

    SQLAlchemy Core statements, about ten round trips: this is the request every evaluator makes most, and
    the ORM version (25 statements, objects for every row) cost 20-30 ms of CPU per vote (BENCHMARKS.md).
    ``state`` is the evaluator's state read under ``lock=True`` in this transaction, when the caller has it.
    ``defer_count``: the caller reserves the next pair in this transaction; the pair's vote counter is then left to
    it (``SubmitResult.counter``: counted, before or after the reservation, as ``VoteCounter`` says; a no-op
    where it was taken at once).
    """
    state = state or evaluator_state(session, evaluator_id=evaluator_id, lock=True)
    found = _FIND_ASSIGNMENT.one_or_none(session, {"token": assignment_token or ""})
    if found is None:
        raise UnknownAssignment("This pair was not found. Reload the page to get your current pair.")
    if found.evaluator_id != evaluator_id or state is None:
        raise NotYourAssignment("This pair belongs to another session; you can only answer your own pairs.")
    if found.status == "done":
        return SubmitResult("already_recorded", found.id, completed=state.completed_at is not None)
    if state.study_status != "open":
        raise StudyNotOpen("This study has stopped accepting answers; your answer was not stored.")
    if found.status == RELEASED or is_abandoned(found.shown_at, state.qc):
        # Its pair went back to the pool and may have been rated by someone else since: counting this answer
        # too would rate the pair once more than planned. Releasing it here is what next_assignment would do.
        # The caller must commit (not roll back) for the release to hold; the refusal changes nothing else.
        release_assignment(session, assignment_id=found.id, pair_id=found.pair_id,
                           a_left=found.left_clip_id == found.clip_a_id)
        minutes = state.qc.abandon_after_minutes
        raise AssignmentReleased(
            f"This pair stayed unanswered for more than {minutes} minutes, so it was given to another "
            "participant and your answer was not stored. Continue with a new pair.")
    criteria = study_criteria(session, state.study_id)
    options = answer_options(state.answer_options)
    clean = validate_choices(criteria, {str(k): (v or "") for k, v in (choices or {}).items()},
                             (*SIDES, BOTH_BAD) if options.both_bad else SIDES)
    try:
        comment, tags = clean_extras(options, comment=comment, reason_tags=reason_tags)
    except InvalidExtras as exc:
        raise InvalidChoices(str(exc)) from exc

    now = utcnow()
    spent = max(0, int((now - as_utc(found.shown_at)).total_seconds() * 1000))
    if client_time_ms is not None:
        client_time_ms = max(0, min(int(client_time_ms), CLIENT_TIME_MAX_MS))
    # The guard against a double submit is votes.assignment_id's unique index: a second vote for the same
    # assignment inserts nothing and returns no id (ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike;
    # cheaper than a savepoint around a failing insert). The evaluator's lock makes a racing submit wait.
    vote_id = _insert_vote(session).scalar(session, {
        "assignment_id": found.id, "study_id": state.study_id, "evaluator_id": evaluator_id,
        "pair_id": found.pair_id, "shown_at": found.shown_at, "submitted_at": now, "time_spent_ms": spent,
        "client_time_ms": client_time_ms, "too_fast": is_too_fast(spent, state.qc),
        "comment": comment, "reason_tags": tags,
    })
    if vote_id is None:
        return SubmitResult("already_recorded", found.id, completed=state.completed_at is not None)
    _MARK_DONE.run(session, {"assignment_id": found.id, "now": now})
    expire_cached(session, Assignment, found.id, "status", "submitted_at")
    a_left = found.left_clip_id == found.clip_a_id
    winners = {"a": found.model_a_id, "b": found.model_b_id}
    rows = []
    for criterion in criteria:
        outcome = _outcome(clean[criterion.key], a_left=a_left)
        rows.append({"vote_id": vote_id, "criterion_id": criterion.id, "side": clean[criterion.key],
                     "model_a_id": found.model_a_id, "model_b_id": found.model_b_id, "outcome": outcome,
                     "winner_model_id": winners.get(outcome)})
    _INSERT_CHOICES.run(session, rows)
    counter = VoteCounter(found.pair_id)
    # The "adaptive" rule reads the pairs' vote counters to choose the next pair: there the counter is taken at
    # once, in the old order (a deadlock it meets is run again, app.db.retry_on_conflict).
    if not defer_count or state.qc.pair_selection == "adaptive":
        counter.count(session)
    # Flags are recomputed from all of the evaluator's votes, so the dashboard is current after every vote.
    refresh_flags(session, evaluator_id=evaluator_id, settings=state.qc, stored=(state.flagged, state.flag_reasons))
    completed = mark_completed_if_done(session, state=state, done=state.done + 1)
    refresh_reliability_after_vote(session, state=state, completed=completed)
    refresh_cluster_flags_after_vote(session, state=state, done=state.done + 1, completed=completed)
    return SubmitResult("recorded", found.id, vote_id=vote_id, completed=completed, choices=clean,
                        counter=counter if defer_count else None)
