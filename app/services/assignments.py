"""The evaluator's session: joining through an invite link and getting the next pair to rate.

Allocation rules (issue 2): an evaluator never gets the same pair twice; pairs with the fewest votes (plus
pairs currently being rated) go first, ties broken at random so the pair order is random per evaluator; the
left/right side is counterbalanced per pair so each model is on the left as often as on the right (+-1).
A study with QC setting ``pair_selection = "adaptive"`` (issue 13) chooses the model pair by a sequential optimal
design for every rating's interval, or with ``"arena_eq9"`` draws it by Chatbot Arena's Eq. 9 (``_pick_adaptive``,
``app.stats.adaptive``), then the least-loaded pair of it; the other two rules stay.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import ColumnElement, Integer, ScalarSelect, Select, bindparam, case, func, insert, select, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import database_key, expire_cached
from app.models import (
    Assignment,
    Clip,
    Criterion,
    Evaluator,
    Pair,
    Prompt,
    Study,
    Vote,
    VoteChoice,
    new_token,
    utcnow,
)
from app.raw_sql import RawStatement
from app.services.attention import QCSettings, due_check_pair, qc_settings, qc_settings_for
from app.stats.adaptive import (
    MIN_VOTES_PER_PAIR,
    counted_models,
    design_scores,
    pair_variance,
    pick_least_score,
    rating_variances,
    sampling_weights,
)

EXTERNAL_ID_MAX = 200
PLATFORM_SESSION_ID_MAX = 200
USER_AGENT_MAX = 300
# An assignment left open longer than the study's abandon_after_minutes is given back: this status, kept so the
# evaluator never gets the pair again (unique evaluator_id, pair_id) and a late answer to it is refused.
RELEASED = "released"
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)

_rng = secrets.SystemRandom()


class EvaluationError(Exception):
    """A refusal the evaluator (or an API client) should read; ``status_code`` is the HTTP answer."""

    status_code = 400
    title = ""  # the page's heading; empty: one chosen by status code

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


class TooManySessionsFromAddress(EvaluationError):
    """The address already started the study's ``sessions_per_address`` sessions."""

    status_code = 403
    title = "Already taking part from this network"


class SessionInProgress(EvaluationError):
    """A participant id with an unfinished (or finished) session, claimed without proof it is the same person."""

    status_code = 409
    title = "Session already started"


def _ip_hash(ip: str) -> str:
    # Keyed so that the stored value cannot be reversed by hashing the IPv4 space.
    return hmac.new(get_settings().secret_key.encode(), f"ip:{ip}".encode(), hashlib.sha256).hexdigest()


def study_for_invite(session: Session, *, invite_token: str) -> Study:
    """The study behind an invite link, or ``InvalidInvite``."""
    study = session.scalar(select(Study).where(Study.invite_token == invite_token)) if invite_token else None
    if study is None:
        raise InvalidInvite("This invite link is not valid. Check that you copied the whole link.")
    return study


def check_can_join(session: Session, study: Study, *, ip: str | None = None) -> None:
    """Refuse when the study is not open, has all the sessions it asked for, or ``ip`` has its share of them."""
    if study.status != "open":
        raise StudyNotOpen("This study is not accepting answers right now. Please try again later.")
    qc = qc_settings(study)
    limit = qc.session_limit
    if limit:
        joined = session.scalar(select(func.count(Evaluator.id)).where(Evaluator.study_id == study.id)) or 0
        if joined >= limit:
            raise StudyFull("This study already has all the participants it needs. Thank you for your interest.")
    if ip and qc.sessions_per_address:
        from_here = session.scalar(select(func.count(Evaluator.id)).where(
            Evaluator.study_id == study.id, Evaluator.ip_hash == _ip_hash(ip))) or 0
        if from_here >= qc.sessions_per_address:
            raise TooManySessionsFromAddress(
                f"{from_here} sessions of this study have already been started from your network, the most one "
                "network may start. If you started one before, continue it in the browser where you began. If "
                "several people take part from one network (a lab or a classroom), ask the researcher to raise "
                "the study's limit of sessions per address.")


def _lock_study(session: Session, study_id: int) -> None:
    """Serialise joins of one study on PostgreSQL, so two at once cannot both pass the limits.

    FOR NO KEY UPDATE: it does not wait for the KEY SHARE locks that votes and assignments referencing the study
    hold. SQLite needs nothing: BEGIN IMMEDIATE already serialises every writing transaction (app/db.py).
    """
    if session.get_bind().dialect.name != "sqlite":
        session.execute(select(_st.c.id).where(_st.c.id == study_id).with_for_update(key_share=True))


def _same_platform_session(claimed: str | None, stored: str | None) -> bool:
    return bool(claimed and stored) and hmac.compare_digest((claimed or "").encode(), (stored or "").encode())


def _returning(session: Session, study: Study, *, external_id: str,
               platform_session_id: str | None) -> Evaluator | None:
    """The session this participant id already has in the study, if the caller proves it is theirs.

    A platform's participant id (PROLIFIC_PID, workerId) is no secret: it appears in links, exports and
    screenshots. Resuming by it alone handed a stranger the participant's session and completion code. The
    proof is the platform's own id of this attempt (Prolific's SESSION_ID, MTurk's assignmentId), stored at
    join; a participant who lost it can still resume with the cookie (the routes check that first).
    Returns ``None`` when the id has no session here yet; raises ``SessionInProgress`` on a claim without proof.
    """
    existing = session.scalar(
        select(Evaluator)
        .where(Evaluator.study_id == study.id, Evaluator.external_id == external_id)
        .order_by(Evaluator.id.desc())
        .limit(1)
    )
    if existing is None:
        return None
    if _same_platform_session(platform_session_id, existing.platform_session_id):
        return existing
    if existing.completed_at is not None:
        raise SessionInProgress(
            "A session with this participant id has already been completed in this study, so it cannot be started "
            "again. If it was yours, your completion code is on the page where you finished, in that browser.")
    raise SessionInProgress(
        "A session with this participant id is already in progress. Continue it in the browser where you started, "
        "or open the study again from your platform's link (it carries your session id). If you did not start a "
        "session, contact the researcher.")


def join(
    session: Session,
    *,
    invite_token: str,
    external_id: str | None = None,
    platform_session_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Evaluator:
    """Create an evaluator session for the study behind ``invite_token`` (consent is given by joining).

    An external id (e.g. Prolific's PROLIFIC_PID) that already has a session in this study gets that session
    back only with the same ``platform_session_id`` (Prolific's SESSION_ID, MTurk's assignmentId) it joined
    with, so a participant who switches browser resumes; anyone else naming the id is refused
    (``SessionInProgress``) and no second session is started for it.
    """
    study = study_for_invite(session, invite_token=invite_token)
    if study.status != "open":
        check_can_join(session, study)
    _lock_study(session, study.id)
    external_id = (external_id or "").strip()[:EXTERNAL_ID_MAX] or None
    platform_session_id = (platform_session_id or "").strip()[:PLATFORM_SESSION_ID_MAX] or None
    if external_id:
        existing = _returning(session, study, external_id=external_id, platform_session_id=platform_session_id)
        if existing is not None:
            return existing
    check_can_join(session, study, ip=ip)
    # The per-IP join rate limit is applied by the routes (app.ratelimit.check_rate, shared via Redis when
    # there is one); the keyed hash is kept so QC can spot many sessions from one address.
    ip_hash = _ip_hash(ip) if ip else None
    now = utcnow()
    evaluator = Evaluator(
        study_id=study.id,
        external_id=external_id,
        platform_session_id=platform_session_id if external_id else None,
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


@dataclass(frozen=True)
class EvaluatorState:
    """An evaluator session and what the rating flow needs of its study, read in one query.

    The hot path (a pair page, a vote) works on this instead of ORM objects: it is one round trip where
    loading an Evaluator, its Study and counting assignments and pairs took six (see BENCHMARKS.md).
    """

    id: int
    study_id: int
    completed_at: datetime | None
    completion_code: str
    flagged: bool
    flag_reasons: list[str]
    study_status: str
    redirect_url: str
    qc: QCSettings
    n_pairs: int  # normal pairs in the study
    had: int  # assignments given so far (open, done, or released after abandon_after_minutes)
    done: int  # assignments answered
    open: int = 0  # assignments on screen, not yet answered (at most one)
    ip_hash: str | None = None  # the keyed hash of the address it joined from
    answer_options: dict[str, Any] | None = None  # the study's optional answers as stored (app/services/answers.py)

    @property
    def quota(self) -> int:
        """How many pairs this session rates: the study's quota, or fewer if the study has fewer pairs."""
        return min(self.qc.pairs_quota, self.n_pairs)


@dataclass(frozen=True)
class PairView:
    """An assignment with everything its page shows (prompt, both clips' media tokens, size and duration)."""

    id: int
    token: str
    position: int
    pair_id: int
    kind: str
    clip_a_id: int
    left_clip_id: int
    right_clip_id: int
    shown_at: datetime
    prompt: str
    left_media_token: str
    right_media_token: str
    width: int
    height: int
    play_ms: int
    # The evaluator's previous pair was given back to the pool (left unanswered too long); this is a new one.
    replaced: bool = False
    # gif | mp4 | webm: one format per study, so the same for both sides (app/media/video.py); and the frame
    # rate the player steps by (both sides share it: the import and the worker check it).
    clip_format: str = "gif"
    fps: float = 8.0
    frames: int = 0
    # The study's optional answers as stored (app/services/answers.py): "both are bad", reason tags, a comment.
    answer_options: dict[str, Any] | None = None


# The rating flow's statements are built once, with bind parameters, on the tables rather than the ORM
# classes: building a statement (coercing columns, proxying the columns of aliases, computing its cache key)
# cost more CPU than running it on SQLite, and an ORM-enabled SELECT costs about twice a Core one to run
# (85 against 45 us for the criteria). They run on every pair page and every vote.
_ev, _st, _pr, _as = Evaluator.__table__, Study.__table__, Pair.__table__, Assignment.__table__
_cr, _pm = Criterion.__table__, Prompt.__table__
# FOR NO KEY UPDATE (key_share=True), not FOR UPDATE: it still serialises the writers of the row, but does not
# wait for the KEY SHARE locks that every concurrent insert referencing the row (an assignment or a vote
# pointing at this pair or evaluator) holds until its commit.
_LOCK_EVALUATOR = RawStatement(select(_ev.c.id).where(_ev.c.id == bindparam("evaluator_id"))
                               .with_for_update(key_share=True))
_LOCK_BY_PUBLIC_ID = (select(_ev.c.id).where(_ev.c.public_id == bindparam("public_id"))
                      .with_for_update(key_share=True))


def _count(*where: ColumnElement[bool]) -> ScalarSelect[int]:
    return select(func.count(_as.c.id)).where(*where).scalar_subquery()


_STATE = (
    select(_ev.c.id, _ev.c.study_id, _ev.c.completed_at, _ev.c.completion_code,
           _ev.c.flagged, _ev.c.flag_reasons, _ev.c.ip_hash, _st.c.status, _st.c.redirect_url, _st.c.qc,
           _st.c.pairs_per_session, _st.c.sessions_per_invite, _st.c.answer_options,
           select(func.count(_pr.c.id)).where(_pr.c.study_id == _st.c.id, _pr.c.kind == "normal")
           .scalar_subquery().label("n_pairs"),
           _count(_as.c.evaluator_id == _ev.c.id).label("had"),
           _count(_as.c.evaluator_id == _ev.c.id, _as.c.status == "done").label("done"),
           _count(_as.c.evaluator_id == _ev.c.id, _as.c.status == "open").label("open"))
    .join(_st, _st.c.id == _ev.c.study_id)
)
_STATE_BY_ID = RawStatement(_STATE.where(_ev.c.id == bindparam("evaluator_id")))
_STATE_BY_PUBLIC_ID = RawStatement(_STATE.where(_ev.c.public_id == bindparam("public_id")))


def lock_evaluator(session: Session, evaluator_id: int) -> None:
    """Serialise one evaluator's requests (two tabs, a double submit) on PostgreSQL with a row lock.

    Taken in its own statement, before anything is counted: under READ COMMITTED the statements after it see
    whatever the request that held the lock committed. SQLite needs nothing: BEGIN IMMEDIATE already
    serialises every writing transaction (app/db.py).
    """
    if session.get_bind().dialect.name != "sqlite":
        _LOCK_EVALUATOR.all(session, {"evaluator_id": evaluator_id})


def evaluator_state(session: Session, *, evaluator_id: int | None = None, public_id: str | None = None,
                    lock: bool = False) -> EvaluatorState | None:
    """The evaluator (by id or public id) with its study and counts; ``lock`` serialises its requests first."""
    if evaluator_id is None and not public_id:
        return None
    # Core statements do not autoflush: send pending ORM changes of this session (scripts, tests) first.
    session.flush()
    if lock and session.get_bind().dialect.name != "sqlite":
        if evaluator_id is None:  # find and lock in one statement
            evaluator_id = session.scalar(_LOCK_BY_PUBLIC_ID, {"public_id": public_id})
            if evaluator_id is None:
                return None
        else:
            lock_evaluator(session, evaluator_id)
    if evaluator_id is not None:
        row = _STATE_BY_ID.one_or_none(session, {"evaluator_id": evaluator_id})
    else:
        row = _STATE_BY_PUBLIC_ID.one_or_none(session, {"public_id": public_id})
    if row is None:
        return None
    return EvaluatorState(
        id=row.id, study_id=row.study_id, completed_at=row.completed_at, completion_code=row.completion_code,
        flagged=bool(row.flagged), flag_reasons=list(row.flag_reasons or []), study_status=row.status,
        redirect_url=row.redirect_url or "",
        qc=qc_settings_for(row.qc, pairs_per_session=row.pairs_per_session,
                           sessions_per_invite=row.sessions_per_invite),
        n_pairs=row.n_pairs or 0, had=row.had or 0, done=row.done or 0, open=row.open or 0, ip_hash=row.ip_hash,
        answer_options=row.answer_options,
    )


# What a pair's page shows of each clip, labelled by side ("l"/"r" in the view, "a"/"b" for a pair being
# reserved, see _PAIR_FOR_UPDATE): one list, so that a view built from either reads the same.
_CLIP_FIELDS = ("media_token", "width", "height", "frames", "fps", "storage_name")


def _clip_columns(clip: Any, side: str) -> list[Any]:
    return [clip.c[name].label(f"{side}_{name}") for name in _CLIP_FIELDS]


_LEFT, _RIGHT = Clip.__table__.alias("left_clip"), Clip.__table__.alias("right_clip")
_VIEW_COLUMNS = (
    _as.c.id, _as.c.token, _as.c.position, _as.c.pair_id, _pr.c.kind, _pr.c.clip_a_id,
    _as.c.left_clip_id, _as.c.right_clip_id, _as.c.shown_at, _pm.c.text,
    *_clip_columns(_LEFT, "l"), *_clip_columns(_RIGHT, "r"), _st.c.answer_options,
)


def clip_format_of(storage_name: str | None) -> str:
    """gif, mp4 or webm from a stored file's name (random hex + the format's suffix)."""
    suffix = (storage_name or "").rsplit(".", 1)[-1].lower()
    return suffix if suffix in ("mp4", "webm") else "gif"


def duration_ms(frames: int | None, fps: float | None) -> int:
    """How long a clip plays once; 0 when its frames or fps are unknown."""
    if not frames or not fps:
        return 0
    return math.ceil(frames * 1000 / fps)


_VIEW = (
    select(*_VIEW_COLUMNS)
    .join(_pr, _pr.c.id == _as.c.pair_id)
    .join(_pm, _pm.c.id == _pr.c.prompt_id)
    .join(_st, _st.c.id == _pr.c.study_id)
    .join(_LEFT, _LEFT.c.id == _as.c.left_clip_id)
    .join(_RIGHT, _RIGHT.c.id == _as.c.right_clip_id)
)
_VIEW_OPEN = RawStatement(_VIEW.where(_as.c.evaluator_id == bindparam("evaluator_id"), _as.c.status == "open")
                          .order_by(_as.c.position).limit(1))
_VIEW_BY_TOKEN = RawStatement(_VIEW.where(_as.c.token == bindparam("token")))


def pair_view(session: Session, *, evaluator_id: int | None = None, token: str | None = None) -> PairView | None:
    """The evaluator's open assignment, or the assignment with this token, with what its page shows."""
    if token is not None:
        row = _VIEW_BY_TOKEN.one_or_none(session, {"token": token})
    else:
        row = _VIEW_OPEN.one_or_none(session, {"evaluator_id": evaluator_id})
    if row is None:
        return None
    return _view_of(row)


def _view_of(row: Any) -> PairView:
    """A PairView from a row (or any object) holding ``_VIEW_COLUMNS`` by name."""
    return PairView(
        id=row.id, token=row.token, position=row.position, pair_id=row.pair_id, kind=row.kind,
        clip_a_id=row.clip_a_id, left_clip_id=row.left_clip_id, right_clip_id=row.right_clip_id,
        shown_at=row.shown_at, prompt=row.text, left_media_token=row.l_media_token,
        right_media_token=row.r_media_token,
        width=row.l_width or row.r_width or 256, height=row.l_height or row.r_height or 256,
        # One number for both sides (the longer clip), so it cannot tell which clip is which.
        play_ms=max(duration_ms(row.l_frames, row.l_fps), duration_ms(row.r_frames, row.r_fps)),
        clip_format=clip_format_of(row.l_storage_name), fps=float(row.l_fps or row.r_fps or 8.0),
        frames=max(row.l_frames or 0, row.r_frames or 0), answer_options=row.answer_options,
    )


_CRITERIA = (select(_cr.c.id, _cr.c.key, _cr.c.label, _cr.c.description)
             .where(_cr.c.study_id == bindparam("study_id")).order_by(_cr.c.position))


class CriterionRow(NamedTuple):
    id: int
    key: str
    label: str
    description: str


# Per engine (a test's fresh database gets a fresh engine, and study ids repeat across databases), per study.
_criteria_cache: weakref.WeakKeyDictionary[Engine, dict[int, tuple[CriterionRow, ...]]] = weakref.WeakKeyDictionary()
_CRITERIA_CACHE_MAX = 10_000


def study_criteria(session: Session, study_id: int) -> list[CriterionRow]:
    """The study's criteria in page order, as light rows.

    Kept per process once read: a study's criteria are written with the study (app/services/studies.py) and
    never change, and every vote read them twice (about 110 µs of the vote's CPU in two statements). A study
    with no criteria yet is not kept."""
    engine = session.get_bind().engine
    per_study = _criteria_cache.setdefault(engine, {})
    cached = per_study.get(study_id)
    if cached is not None:
        return list(cached)
    rows = [CriterionRow(*row) for row in session.execute(_CRITERIA, {"study_id": study_id})]
    if rows:
        if len(per_study) >= _CRITERIA_CACHE_MAX:
            per_study.clear()
        per_study[study_id] = tuple(rows)
    return rows


_PICK_A, _PICK_B = Clip.__table__.alias("pick_a"), Clip.__table__.alias("pick_b")
# A model pair, unordered: (lower model id, higher model id) of the pair's two clips.
_MODEL_LO = case((_PICK_A.c.model_id < _PICK_B.c.model_id, _PICK_A.c.model_id), else_=_PICK_B.c.model_id)
_MODEL_HI = case((_PICK_A.c.model_id < _PICK_B.c.model_id, _PICK_B.c.model_id), else_=_PICK_A.c.model_id)


def _build_pick(*, in_model_pair: bool = False) -> Select:
    """Among pairs this evaluator has not had, one with the least load (votes + live reservations), at random.

    One query: the load, the pairs already seen and the check prompts are all worked out by the database,
    which returns the single pair chosen (ties broken by its random()). ``in_model_pair``: only pairs of the
    two models bound as ``lo`` and ``hi`` (their ids, lo < hi), for adaptive selection.
    """
    evaluator_id = bindparam("evaluator_id", type_=Integer)
    seen = select(_as.c.pair_id).where(_as.c.evaluator_id == evaluator_id)
    # Open assignments of each pair count as load until the study's abandon_after_minutes (index
    # assignments(pair_id, status)); after that the pair is back in the pool.
    reserved = _count(_as.c.pair_id == _pr.c.id, _as.c.status == "open",
                      _as.c.shown_at >= bindparam("since"))
    # Prompts of the attention checks this evaluator had: a normal pair repeating one (same prompt, same clip
    # URL) would show that the earlier pair was a check, so such pairs come last.
    checked = _pr.alias("checked")
    check_prompts = (
        select(checked.c.prompt_id).join(_as, _as.c.pair_id == checked.c.id)
        .where(_as.c.evaluator_id == evaluator_id, checked.c.kind != "normal")
    )
    pick = (
        select(_pr.c.id)
        # Attention checks (kind != 'normal') are mixed in by app.services.attention, not by load.
        .where(_pr.c.study_id == bindparam("study_id"), _pr.c.kind == "normal", _pr.c.id.not_in(seen))
        .order_by(case((_pr.c.prompt_id.in_(check_prompts), 1), else_=0), _pr.c.votes_count + reserved,
                  func.random())
        .limit(1)
    )
    if in_model_pair:
        pick = (pick.join(_PICK_A, _PICK_A.c.id == _pr.c.clip_a_id).join(_PICK_B, _PICK_B.c.id == _pr.c.clip_b_id)
                .where(_MODEL_LO == bindparam("lo"), _MODEL_HI == bindparam("hi")))
    return pick


_PICK = RawStatement(_build_pick())
_PICK_IN_MODEL_PAIR = _build_pick(in_model_pair=True)


def _build_model_pair_load() -> Select:
    """Per model pair of the study's normal pairs: its load (assignments given and not given back: votes plus
    votes on screen, ``Pair.assigned_count``, a cached counter), its votes (``Pair.votes_count``) and how many
    of its pairs this evaluator has not had. One aggregate over the pairs table, not the votes."""
    seen = select(_as.c.pair_id).where(_as.c.evaluator_id == bindparam("evaluator_id", type_=Integer))
    return (
        select(_MODEL_LO.label("lo"), _MODEL_HI.label("hi"), func.sum(_pr.c.assigned_count).label("load"),
               func.sum(_pr.c.votes_count).label("votes"),
               func.sum(case((_pr.c.id.not_in(seen), 1), else_=0)).label("unseen"))
        .select_from(_pr.join(_PICK_A, _PICK_A.c.id == _pr.c.clip_a_id)
                     .join(_PICK_B, _PICK_B.c.id == _pr.c.clip_b_id))
        .where(_pr.c.study_id == bindparam("study_id"), _pr.c.kind == "normal")
        .group_by(_MODEL_LO, _MODEL_HI)
    )


_MODEL_PAIR_LOAD = _build_model_pair_load()
_vc, _vt = VoteChoice.__table__, Vote.__table__
# Outcomes per model pair and criterion (a: the pair's clip_a model won). Every vote counts, flagged raters'
# too: this only steers where votes go next, it is not a result.
_TALLIES = (
    select(_vc.c.model_a_id, _vc.c.model_b_id, _vc.c.criterion_id, _vc.c.outcome, func.count().label("n"))
    .join(_vt, _vt.c.id == _vc.c.vote_id).join(_pr, _pr.c.id == _vt.c.pair_id)
    .where(_vt.c.study_id == bindparam("study_id"), _pr.c.kind == "normal")
    .group_by(_vc.c.model_a_id, _vc.c.model_b_id, _vc.c.criterion_id, _vc.c.outcome)
)
# Seconds the outcome tallies of a study are reused: they scan the study's votes, the rest of the adaptive
# choice does not; the estimates move slowly, and the load (which does move) is read fresh on every pick.
TALLY_TTL_S = 15.0
# per (lo, hi) model ids: per criterion [wins of lo, wins of hi, ties]
Tallies = dict[tuple[int, int], dict[int, list[float]]]
# Keyed by the database as well as the study (app.db.database_key).
_tally_cache: dict[tuple[str, int], tuple[float, int, Tallies]] = {}


def _model_pair_tallies(session: Session, study_id: int, load: int) -> Tallies:
    """Wins of each model and ties, per model pair (lo, hi) and criterion, from the study's votes.

    Cached per study for ``TALLY_TTL_S`` seconds, and recomputed sooner once the study's ``load`` (assignments
    given) grew by a tenth since: the tallies scan every vote of the study, the rest of the choice does not.
    """
    now = time.monotonic()
    key = (database_key(session), study_id)
    cached = _tally_cache.get(key)
    if cached is not None and now - cached[0] < TALLY_TTL_S and cached[1] <= load <= cached[1] * 1.1 + 2:
        return cached[2]
    counts: Tallies = {}
    for row in session.execute(_TALLIES, {"study_id": study_id}):
        lo, hi = sorted((row.model_a_id, row.model_b_id))
        tally = counts.setdefault((lo, hi), {}).setdefault(row.criterion_id, [0.0, 0.0, 0.0])
        if row.outcome == "tie":
            tally[2] += row.n
        else:
            winner = row.model_a_id if row.outcome == "a" else row.model_b_id
            tally[0 if winner == lo else 1] += row.n
    _tally_cache[key] = (now, load, counts)
    return counts


def _eq9_choice(rows: list[Any], tallies: Tallies) -> Any:
    """Chatbot Arena's Eq. 9: draw a model pair with probability proportional to the drop in its win rate's
    standard error one more vote buys (``app.stats.adaptive.sampling_weights``)."""
    variances = {key: pair_variance([(t[0], t[1], t[2]) for t in per.values()]) for key, per in tallies.items()}
    # A model pair with votes on screen but none counted yet: the largest variance a vote can have (p = 1/2, all
    # decided) times the number of criteria seen elsewhere, rather than no information at all.
    fallback = max(variances.values(), default=0.25)
    weights = sampling_weights([int(r.load) for r in rows], [variances.get((r.lo, r.hi), fallback) for r in rows])
    draw = int(np.searchsorted(np.cumsum(weights), _rng.random() * weights.sum(), side="right"))
    return rows[min(draw, len(rows) - 1)]


def _design_choice(every: list[Any], rows: list[Any], tallies: Tallies) -> Any:
    """The optimal-design rule (``app.stats.adaptive``, "adaptive"): the model pair where one more vote shrinks
    the largest rating variances most (Kiefer's phi_p over every model and criterion), among ``rows``, the model
    pairs this evaluator still has pairs of. ``every``: all model pairs of the study (the information comes from
    all of them). Votes on screen count at their expected information."""
    models = sorted({r.lo for r in every} | {r.hi for r in every})
    index = {m: i for i, m in enumerate(models)}
    pairs = np.array([(index[r.lo], index[r.hi]) for r in every])
    criteria = sorted({c for per in tallies.values() for c in per}) or [0]
    counts = np.zeros((3, len(criteria), len(every)))
    for k, r in enumerate(every):
        for j, c in enumerate(criteria):
            counts[:, j, k] = tallies.get((r.lo, r.hi), {}).get(c, (0.0, 0.0, 0.0))
    voted = np.array([float(r.votes or 0) for r in every])
    pending = np.maximum(np.array([float(r.load or 0) for r in every]) - voted, 0.0)
    include = counted_models(counts[0], counts[1], counts[2], pairs, len(models))
    now, after, _ = rating_variances(counts[0], counts[1], counts[2], pairs, len(models),
                                     pending=np.broadcast_to(pending, counts[0].shape), include=include)
    scale = np.where(include, now, 0.0).max()  # one scale for every criterion, so their scores add up
    scores = design_scores(after, scale, include).sum(axis=0)  # (P,): summed over criteria
    open_pairs = {(r.lo, r.hi) for r in rows}
    allowed = np.array([(r.lo, r.hi) in open_pairs for r in every])
    scores = np.where(allowed, scores, np.inf)
    return every[int(pick_least_score(scores, np.random.default_rng(_rng.getrandbits(64))))]


def _pick_adaptive(session: Session, *, study_id: int, evaluator_id: int, qc: QCSettings) -> int | None:
    """Choose a model pair by the study's adaptive rule (``qc.pair_selection``: "adaptive", the optimal design
    for every rating's interval, or "arena_eq9"), then its least-loaded pair that this evaluator has not had;
    least-voted first (``_pick_pair_id``) while some model pair has too few votes to weigh. Left/right is
    counterbalanced afterwards by ``_allocate``, as for any pair."""
    every = list(session.execute(_MODEL_PAIR_LOAD, {"study_id": study_id, "evaluator_id": evaluator_id}).all())
    rows = [r for r in every if r.unseen]  # the model pairs this evaluator still has pairs of
    if len(rows) < 2 or min(int(r.load or 0) for r in rows) < MIN_VOTES_PER_PAIR:
        return _pick_pair_id(session, study_id=study_id, evaluator_id=evaluator_id, qc=qc)
    tallies = _model_pair_tallies(session, study_id, sum(int(r.load or 0) for r in every))
    if qc.pair_selection == "arena_eq9":
        chosen = _eq9_choice(rows, tallies)
    else:
        chosen = _design_choice(every, rows, tallies)
    pair_id = session.scalar(_PICK_IN_MODEL_PAIR, {
        "study_id": study_id, "evaluator_id": evaluator_id, "since": abandoned_before(qc),
        "lo": chosen.lo, "hi": chosen.hi})
    return pair_id if pair_id is not None else _pick_pair_id(session, study_id=study_id,
                                                              evaluator_id=evaluator_id, qc=qc)


def abandoned_before(qc: QCSettings) -> datetime:
    """Open assignments shown before this moment are abandoned: their pairs are back in the pool."""
    if not qc.abandon_after_minutes:
        return _NEVER
    return utcnow() - timedelta(minutes=qc.abandon_after_minutes)


def _pick_pair_id(session: Session, *, study_id: int, evaluator_id: int, qc: QCSettings | None = None) -> int | None:
    """The least-loaded pair for this evaluator (see ``_build_pick``); ``None`` when none is left.

    ``qc``: the study's settings (for abandon_after_minutes); the defaults when not given.
    """
    return _PICK.scalar(session, {"study_id": study_id, "evaluator_id": evaluator_id,
                                  "since": abandoned_before(qc or QCSettings())})


def _choose_a_left(assigned_count: int, a_left_count: int) -> bool:
    """Counterbalance: put clip_a on the side it has been on less often; a coin flip when even."""
    a_right = assigned_count - a_left_count
    if a_left_count != a_right:
        return a_left_count < a_right
    return _rng.random() < 0.5


_CLIP_A, _CLIP_B = Clip.__table__.alias("clip_a"), Clip.__table__.alias("clip_b")
# The pair's counters under its row lock (PostgreSQL: the pair's row only; SQLite's BEGIN IMMEDIATE already
# serialises), with everything its page shows: the new assignment's view is built from this row and the
# values inserted, not read back (the read back was a second six-table join on every vote).
_PAIR_FOR_UPDATE = RawStatement(
    select(_pr.c.clip_a_id, _pr.c.clip_b_id, _pr.c.assigned_count, _pr.c.a_left_count, _pr.c.kind, _pm.c.text,
           *_clip_columns(_CLIP_A, "a"), *_clip_columns(_CLIP_B, "b"), _st.c.answer_options)
    .join(_pm, _pm.c.id == _pr.c.prompt_id)
    .join(_st, _st.c.id == _pr.c.study_id)
    .join(_CLIP_A, _CLIP_A.c.id == _pr.c.clip_a_id)
    .join(_CLIP_B, _CLIP_B.c.id == _pr.c.clip_b_id)
    .where(_pr.c.id == bindparam("pair_id"))
    .with_for_update(of=_pr, key_share=True))
_pairs, _assignments = Pair.__table__, Assignment.__table__
_BUMP_ASSIGNED = RawStatement(update(_pairs).where(_pairs.c.id == bindparam("pair_id"))
                              .values(assigned_count=_pairs.c.assigned_count + 1,
                                      a_left_count=_pairs.c.a_left_count + bindparam("a_left")))
_INSERT_ASSIGNMENT = RawStatement(insert(_assignments).returning(_assignments.c.id), columns=(
    "token", "evaluator_id", "pair_id", "position", "left_clip_id", "right_clip_id", "status", "shown_at"))
# Giving a pair back: the assignment no longer counts for the counterbalance (it was never answered).
_RELEASE = (update(_assignments)
            .where(_assignments.c.id == bindparam("assignment_id"), _assignments.c.status == "open")
            .values(status=RELEASED))
_UNBUMP_ASSIGNED = (update(_pairs).where(_pairs.c.id == bindparam("pair_id"))
                    .values(assigned_count=_pairs.c.assigned_count - 1,
                            a_left_count=_pairs.c.a_left_count - bindparam("a_left")))


def _allocate(session: Session, *, evaluator_id: int, pair_id: int, position: int) -> PairView:
    """Reserve ``pair_id`` for this evaluator at ``position``, its sides counterbalanced; returns its view."""
    # Lock the pair row so concurrent allocations read and bump its counters one after another (Postgres;
    # SQLite transactions are already serialised by BEGIN IMMEDIATE, see app/db.py).
    pair = _PAIR_FOR_UPDATE.one(session, {"pair_id": pair_id})
    a_left = _choose_a_left(pair.assigned_count, pair.a_left_count)
    _BUMP_ASSIGNED.run(session, {"pair_id": pair_id, "a_left": int(a_left)})
    expire_cached(session, Pair, pair_id, "assigned_count", "a_left_count")
    left, right = (pair.clip_a_id, pair.clip_b_id) if a_left else (pair.clip_b_id, pair.clip_a_id)
    token, shown_at = new_token(), utcnow()
    assignment_id = _INSERT_ASSIGNMENT.scalar(session, {
        "token": token, "evaluator_id": evaluator_id, "pair_id": pair_id, "position": position,
        "left_clip_id": left, "right_clip_id": right, "status": "open", "shown_at": shown_at,
    })
    sides = {"l": "a", "r": "b"} if a_left else {"l": "b", "r": "a"}
    clips = {f"{side}_{name}": getattr(pair, f"{of}_{name}") for side, of in sides.items() for name in _CLIP_FIELDS}
    return _view_of(SimpleNamespace(
        id=assignment_id, token=token, position=position, pair_id=pair_id, kind=pair.kind,
        clip_a_id=pair.clip_a_id, left_clip_id=left, right_clip_id=right, shown_at=shown_at, text=pair.text,
        answer_options=pair.answer_options, **clips))


def is_abandoned(shown_at: datetime, qc: QCSettings) -> bool:
    """Whether an open assignment shown at ``shown_at`` has been left unanswered past the study's limit."""
    return bool(qc.abandon_after_minutes) and as_utc(shown_at) < abandoned_before(qc)


def release_assignment(session: Session, *, assignment_id: int, pair_id: int, a_left: bool) -> bool:
    """Give an abandoned assignment's pair back to the pool; ``False`` if it was no longer open.

    ``pair_id`` and ``a_left`` (whether the pair's clip A was shown on the left) are the assignment's, which
    both callers have read already. The row stays (status ``released``): the evaluator never gets the pair
    again, and an answer sent for it later is refused rather than counted on top of the vote of whoever rated
    the pair meanwhile.
    """
    released = session.execute(_RELEASE, {"assignment_id": assignment_id})
    if not isinstance(released, CursorResult) or not released.rowcount:  # an UPDATE's result is a CursorResult
        return False
    session.execute(_UNBUMP_ASSIGNED, {"pair_id": pair_id, "a_left": int(a_left)})
    expire_cached(session, Assignment, assignment_id, "status")
    expire_cached(session, Pair, pair_id, "assigned_count", "a_left_count")
    return True


def next_assignment(session: Session, *, evaluator_id: int, state: EvaluatorState | None = None,
                    before_reserving: Callable[[int], None] | None = None) -> PairView | None:
    """The evaluator's open assignment (resume), else a newly allocated one; ``None`` once the session is done.

    An open assignment left past the study's ``abandon_after_minutes`` is released first (its pair went back
    to the pool) and the evaluator continues with a fresh pair, marked ``replaced``. Raises ``StudyNotOpen``
    if the study stopped taking answers before this evaluator finished. ``state`` is the evaluator's state read
    under ``lock=True`` in this transaction, when the caller has it already. ``before_reserving`` is called with
    the chosen pair's id just before its row is taken (a vote's counter, ``app.services.votes.VoteCounter``).
    """
    state = state or evaluator_state(session, evaluator_id=evaluator_id, lock=True)
    if state is None:
        raise UnknownEvaluator("Your session was not found. Open the invite link again to start.")
    if state.completed_at is not None:
        return None
    qc = state.qc
    replaced = False
    # At most one assignment is open: the page to resume (no query when there is none).
    current = pair_view(session, evaluator_id=state.id) if state.open else None
    if current is not None and is_abandoned(current.shown_at, qc):
        replaced = release_assignment(session, assignment_id=current.id, pair_id=current.pair_id,
                                      a_left=current.left_clip_id == current.clip_a_id)
        current = None
    if current is not None:
        if state.study_status != "open":  # its vote would be refused: say so now, not after the evaluator answers
            raise StudyNotOpen("This study has stopped accepting answers. Thank you for your help so far.")
        return current
    # Released assignments do not use up the session's quota (their pairs were rated by someone else).
    if state.done >= qc.pairs_quota:
        _finish(session, state.id)
        return None
    if state.study_status != "open":
        raise StudyNotOpen("This study has stopped accepting answers. Thank you for your help so far.")
    pair_id = None
    # Attention checks take a slot of the session's quota, so "Pair k of N" never changes when one comes up.
    # Where they go is the session's plan (app.services.attention.check_plan); position counts pairs given back.
    if qc.enabled:
        pair_id = due_check_pair(session, evaluator_id=state.id, study_id=state.study_id, quota=state.quota,
                                 position=state.had + 1, settings=qc, rng=_rng)
    if pair_id is None and qc.pair_selection in ("adaptive", "arena_eq9"):
        pair_id = _pick_adaptive(session, study_id=state.study_id, evaluator_id=state.id, qc=qc)
    elif pair_id is None:
        pair_id = _pick_pair_id(session, study_id=state.study_id, evaluator_id=state.id, qc=qc)
    if pair_id is None:  # this evaluator has rated every pair of the study
        _finish(session, state.id)
        return None
    # No race to guard against here: the evaluator's row lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite) means
    # a second tab asking at the same moment waits, then finds this assignment open and resumes it.
    if before_reserving is not None:
        before_reserving(pair_id)
    view = _allocate(session, evaluator_id=state.id, pair_id=pair_id, position=state.had + 1)
    return replace(view, replaced=True) if replaced else view


_evaluators = Evaluator.__table__
_FINISH = RawStatement(update(_evaluators)
                       .where(_evaluators.c.id == bindparam("evaluator_id"), _evaluators.c.completed_at.is_(None))
                       .values(completed_at=bindparam("now")))


def _finish(session: Session, evaluator_id: int) -> None:
    _FINISH.run(session, {"evaluator_id": evaluator_id, "now": utcnow()})
    expire_cached(session, Evaluator, evaluator_id, "completed_at")


def mark_completed_if_done(session: Session, *, state: EvaluatorState, done: int) -> bool:
    """After a vote: close the session once its quota is rated (so the completion code shows at once)."""
    if state.completed_at is not None:
        return True
    if done >= state.quota:
        _finish(session, state.id)
        return True
    return False


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
