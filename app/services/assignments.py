"""The evaluator's session: joining through an invite link and getting the next pair to rate.

Allocation rules (issue 2): an evaluator never gets the same pair twice; pairs with the fewest votes (plus
pairs currently being rated) go first, ties broken at random so the pair order is random per evaluator; the
left/right side is counterbalanced per pair so each model is on the left as often as on the right (+-1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Assignment, Evaluator, Pair, Study, utcnow
from app.services.attention import is_check_due, pick_check_pair, qc_settings

# An open assignment counts as load on its pair only this long: an evaluator who closed the tab for good
# must not keep a pair looking busy forever (it is still theirs to resume).
RESERVATION_TTL = timedelta(minutes=30)
EXTERNAL_ID_MAX = 200
USER_AGENT_MAX = 300

_rng = secrets.SystemRandom()


class EvaluationError(Exception):
    """A refusal the evaluator (or an API client) should read; ``status_code`` is the HTTP answer."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInvite(EvaluationError):
    status_code = 404


class StudyNotOpen(EvaluationError):
    status_code = 409


class StudyFull(EvaluationError):
    status_code = 409


class UnknownEvaluator(EvaluationError):
    status_code = 401


@dataclass(frozen=True)
class SessionProgress:
    """Where an evaluator stands: ``done`` pairs rated out of ``total`` in this session."""

    done: int
    total: int


def _ip_hash(ip: str) -> str:
    # Keyed so that the stored value cannot be reversed by hashing the IPv4 space.
    return hmac.new(get_settings().secret_key.encode(), f"ip:{ip}".encode(), hashlib.sha256).hexdigest()


def study_for_invite(session: Session, *, invite_token: str) -> Study:
    """The study behind an invite link, or ``InvalidInvite``."""
    study = session.scalar(select(Study).where(Study.invite_token == invite_token)) if invite_token else None
    if study is None:
        raise InvalidInvite("This invite link is not valid. Check that you copied the whole link.")
    return study


def check_can_join(session: Session, study: Study) -> None:
    """Refuse when the study is not open or has all the sessions it asked for."""
    if study.status != "open":
        raise StudyNotOpen("This study is not accepting answers right now. Please try again later.")
    limit = qc_settings(study).sessions_per_invite
    if limit:
        joined = session.scalar(select(func.count(Evaluator.id)).where(Evaluator.study_id == study.id))
        if joined >= limit:
            raise StudyFull("This study already has all the participants it needs. Thank you for your interest.")


def join(
    session: Session,
    *,
    invite_token: str,
    external_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Evaluator:
    """Create an evaluator session for the study behind ``invite_token`` (consent is given by joining).

    An external id (e.g. Prolific's PROLIFIC_PID) that already has an unfinished session in this study gets
    that session back, so a participant who switches browser resumes instead of starting over.
    """
    study = study_for_invite(session, invite_token=invite_token)
    if study.status != "open":
        check_can_join(session, study)
    external_id = (external_id or "").strip()[:EXTERNAL_ID_MAX] or None
    if external_id:
        existing = session.scalar(
            select(Evaluator)
            .where(Evaluator.study_id == study.id, Evaluator.external_id == external_id,
                   Evaluator.completed_at.is_(None))
            .order_by(Evaluator.id.desc())
            .limit(1)
        )
        if existing is not None:
            return existing
    check_can_join(session, study)
    # The per-IP join rate limit is applied by the routes (app.ratelimit.check_rate, shared via Redis when
    # there is one); the keyed hash is kept so QC can spot many sessions from one address.
    ip_hash = _ip_hash(ip) if ip else None
    now = utcnow()
    evaluator = Evaluator(
        study_id=study.id,
        external_id=external_id,
        ip_hash=ip_hash,
        user_agent=(user_agent or "")[:USER_AGENT_MAX] or None,
        created_at=now,
        consented_at=now,
    )
    session.add(evaluator)
    session.flush()
    return evaluator


def get_evaluator(session: Session, *, public_id: str) -> Evaluator:
    evaluator = session.scalar(select(Evaluator).where(Evaluator.public_id == public_id)) if public_id else None
    if evaluator is None:
        raise UnknownEvaluator("Your session was not found. Open the invite link again to start.")
    return evaluator


def session_quota(session: Session, study: Study) -> int:
    """How many pairs one session rates: the study's quota, or fewer if the study has fewer pairs."""
    n_pairs = session.scalar(select(func.count(Pair.id)).where(Pair.study_id == study.id, Pair.kind == "normal"))
    return min(qc_settings(study).max_pairs_per_session, n_pairs or 0)


def progress(session: Session, *, evaluator: Evaluator) -> SessionProgress:
    study = session.get(Study, evaluator.study_id)
    done = session.scalar(
        select(func.count(Assignment.id)).where(Assignment.evaluator_id == evaluator.id, Assignment.status == "done")
    )
    return SessionProgress(done=done or 0, total=session_quota(session, study))


def _open_assignment(session: Session, evaluator_id: int) -> Assignment | None:
    return session.scalar(
        select(Assignment)
        .where(Assignment.evaluator_id == evaluator_id, Assignment.status == "open")
        .order_by(Assignment.position)
        .limit(1)
    )


def _pick_pair_id(session: Session, *, study: Study, evaluator_id: int) -> int | None:
    """Among pairs this evaluator has not had, one with the least load (votes + live reservations), at random."""
    seen = select(Assignment.pair_id).where(Assignment.evaluator_id == evaluator_id)
    reserved = (
        select(Assignment.pair_id, func.count(Assignment.id).label("n"))
        .where(Assignment.status == "open", Assignment.shown_at >= utcnow() - RESERVATION_TTL)
        .group_by(Assignment.pair_id)
        .subquery()
    )
    load = Pair.votes_count + func.coalesce(reserved.c.n, 0)
    # Prompts of the attention checks this evaluator had: a normal pair repeating one (same prompt, same clip
    # URL) would show that the earlier pair was a check, so such pairs come last.
    check_prompts = set(session.scalars(
        select(Pair.prompt_id).join(Assignment, Assignment.pair_id == Pair.id)
        .where(Assignment.evaluator_id == evaluator_id, Pair.kind != "normal")
    ))
    rows = session.execute(
        select(Pair.id, Pair.prompt_id, load.label("load"))
        .outerjoin(reserved, reserved.c.pair_id == Pair.id)
        # Attention checks (kind != 'normal') are mixed in by app.services.attention, not by load.
        .where(Pair.study_id == study.id, Pair.kind == "normal", Pair.id.not_in(seen))
    ).all()
    rows = [r for r in rows if r.prompt_id not in check_prompts] or rows
    if not rows:
        return None
    least = min(r.load for r in rows)
    return _rng.choice([r.id for r in rows if r.load == least])


def _choose_a_left(pair: Pair) -> bool:
    """Counterbalance: put clip_a on the side it has been on less often; a coin flip when even."""
    a_right = pair.assigned_count - pair.a_left_count
    if pair.a_left_count != a_right:
        return pair.a_left_count < a_right
    return _rng.random() < 0.5


def _allocate(session: Session, *, evaluator: Evaluator, pair_id: int, position: int) -> Assignment:
    # Lock the pair row so concurrent allocations read and bump its counters one after another (Postgres;
    # SQLite transactions are already serialised by BEGIN IMMEDIATE, see app/db.py).
    pair = session.scalar(
        select(Pair).where(Pair.id == pair_id).with_for_update().execution_options(populate_existing=True)
    )
    a_left = _choose_a_left(pair)
    pair.assigned_count += 1
    pair.a_left_count += int(a_left)
    left, right = (pair.clip_a_id, pair.clip_b_id) if a_left else (pair.clip_b_id, pair.clip_a_id)
    assignment = Assignment(
        evaluator_id=evaluator.id, pair_id=pair.id, position=position, left_clip_id=left, right_clip_id=right,
        status="open", shown_at=utcnow(),
    )
    session.add(assignment)
    session.flush()
    return assignment


def next_assignment(session: Session, *, evaluator_id: int) -> Assignment | None:
    """The evaluator's open assignment (resume), else a newly allocated one; ``None`` once the session is done.

    Raises ``StudyNotOpen`` if the study stopped taking answers before this evaluator finished.
    """
    evaluator = session.get(Evaluator, evaluator_id)
    if evaluator is None:
        raise UnknownEvaluator("Your session was not found. Open the invite link again to start.")
    if evaluator.completed_at is not None:
        return None
    study = session.get(Study, evaluator.study_id)
    current = _open_assignment(session, evaluator.id)
    if current is not None:
        if study.status != "open":  # its vote would be refused: say so now, not after the evaluator answers
            raise StudyNotOpen("This study has stopped accepting answers. Thank you for your help so far.")
        return current
    had = session.scalar(select(func.count(Assignment.id)).where(Assignment.evaluator_id == evaluator.id)) or 0
    qc = qc_settings(study)
    if had >= qc.max_pairs_per_session:
        return _finish(session, evaluator)
    if study.status != "open":
        raise StudyNotOpen("This study has stopped accepting answers. Thank you for your help so far.")
    pair_id = None
    # Attention checks take a slot of the session's quota, so "Pair k of N" never changes when one comes up.
    if qc.enabled and is_check_due(position=had + 1, rate=qc.attention_rate, rng=_rng):
        check = pick_check_pair(session, evaluator_id=evaluator.id, study_id=study.id, rng=_rng)
        pair_id = check.id if check is not None else None
    if pair_id is None:
        pair_id = _pick_pair_id(session, study=study, evaluator_id=evaluator.id)
    if pair_id is None:  # this evaluator has rated every pair of the study
        return _finish(session, evaluator)
    try:
        with session.begin_nested():
            return _allocate(session, evaluator=evaluator, pair_id=pair_id, position=had + 1)
    except IntegrityError:
        # The same evaluator asked twice at once (two tabs): the other request allocated; give that one.
        current = _open_assignment(session, evaluator.id)
        if current is None:
            raise
        return current


def _finish(session: Session, evaluator: Evaluator) -> None:
    if evaluator.completed_at is None:
        evaluator.completed_at = utcnow()
        session.flush()
    return None


def mark_completed_if_done(session: Session, *, evaluator: Evaluator, study: Study) -> bool:
    """After a vote: close the session once its quota is rated (so the completion code shows at once)."""
    done = session.scalar(
        select(func.count(Assignment.id)).where(Assignment.evaluator_id == evaluator.id, Assignment.status == "done")
    )
    if done >= session_quota(session, study) and evaluator.completed_at is None:
        evaluator.completed_at = utcnow()
        session.flush()
    return evaluator.completed_at is not None


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
