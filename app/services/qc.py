"""Flagging careless evaluators (failed attention checks, too-fast votes, straight-lining) and swarms.

The rules are pure functions of an evaluator's votes (tested on their own); ``evaluate_evaluator`` reads the
votes, counted (``answer_summary``: the attention checks in full, the others as counts), and applies them with the
study's ``QCSettings``, and ``refresh_flags`` stores the outcome on the
evaluator so the dashboard can show the reasons and the results can leave flagged evaluators out.
Flags are recomputed from all votes every time, never accumulated, so they are always consistent with the
data and a change of settings takes effect on the next refresh.

One rule looks across sessions: the sessions of one address that lean to one model far more than the study's
other sessions (``app.trust.collusion``) are all flagged, with a reason that starts ``CLUSTER_REASON``. It
needs the whole study's answers, so it is not re-judged on every vote but by ``refresh_cluster_flags``: when
any session completes, every ``CLUSTER_CHECK_EVERY`` votes of a session that shares its address, and when the
study's QC settings change. Between those, ``refresh_flags`` keeps the cluster reason it finds stored.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from typing import Protocol

import numpy as np
from sqlalchemy import Row, Text, bindparam, case, cast, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.db import (
    after_commit,
    database_key,
    engine_of,
    expire_cached,
    read_session_scope,
    release_read,
    session_scope,
)
from app.models import Clip, Criterion, Evaluator, Pair, Study, Vote, VoteChoice
from app.raw_sql import RawStatement
from app.services import rejudging_debts, rejudging_locks
from app.services.assignments import EvaluatorState
from app.services.attention import (
    CHECK_DEGRADED,
    CHECK_KINDS,
    CHECK_SAME,
    EXPECTED_WINS,
    AnswerSummary,
    QCSettings,
    answer_summary,
    grade_check,
    qc_settings,
    qc_settings_for,
)
from app.services.rejudging import REJUDGING, SETTLE_WAIT_S
from app.services.trust import CellInfo, session_answers
from app.trust.clusters import SessionInfo, address_clusters
from app.trust.collusion import LeanTest, lean_tests
from app.trust.reliability import CHOICES, AnswerTable, Reliability, rater_reliability, unreliable_raters

log = logging.getLogger(__name__)

# Every reason of the cross-session rule starts so: refresh_flags keeps them, refresh_cluster_flags renews them.
CLUSTER_REASON = "sessions from one address agree far more than the study does"
CLUSTER_CHECK_EVERY = 3  # votes of a session that shares its address between two cluster checks
CLUSTER_CHECK_COMPLETIONS = 10  # and every this many completed sessions of the study (the others move too)
MIN_OTHER_SESSIONS = 3  # a cluster is compared with at least this many sessions from elsewhere
# Every reason of the reliability rule starts so; like the cluster reasons they need other sessions' answers, so
# refresh_flags keeps them and refresh_reliability_flags renews them (a session's own completion, every
# CLUSTER_CHECK_COMPLETIONS completed sessions of the study, a change of QC settings).
RELIABILITY_REASON = "answers agree with the other raters far less than an honest rater's would"
# A rater whose decided answers go to one model this often answers by content (a taste), not carelessly; the
# reliability rule leaves them to the other rules (app/trust/reliability.py).
CONSISTENT_TASTE = 0.8


def failed_checks_reason(failures: Sequence[Sequence[str]], *, n_checks: int, max_failed: int) -> str | None:
    """``failures`` holds one list of reasons per answered check (empty when passed)."""
    failed = [reasons for reasons in failures if reasons]
    if len(failed) <= max_failed:
        return None
    first = failed[0][0]
    return (f"failed {len(failed)} of {n_checks} attention checks (more than the {max_failed} allowed); "
            f"first: {first}")


def too_fast_reason(times_ms: Sequence[int], *, min_seconds: float, max_share: float) -> str | None:
    """Too many votes submitted sooner than the study's minimum time per vote *as it is now*.

    Judged from each vote's stored duration, never from the ``too_fast`` mark the vote service stored with it:
    that mark was set under the threshold in force when the vote was cast, so counting it meant a lowered
    threshold never unflagged anyone ("8 of 8 votes were submitted in under 0 s").
    """
    if not times_ms:
        return None
    threshold = min_seconds * 1000
    fast = sum(1 for t in times_ms if t < threshold)
    if fast == 0 or fast / len(times_ms) <= max_share:
        return None
    return (f"{fast} of {len(times_ms)} votes were submitted in under {min_seconds:g} s "
            f"(more than {max_share:.0%} allowed)")


def straightline_reason(sides: Sequence[str], *, n_votes: int, min_votes: int, share: float) -> str | None:
    """One side (left or right) chosen for nearly every criterion of every vote.

    Only left/right count as straight-lining: "indistinguishable" everywhere can be an honest answer
    when two models are close, and a careless "tie" clicker is caught by the degraded-copy checks instead.
    """
    counts = Counter(sides)
    return straightline_counts_reason(counts["left"], counts["right"], len(sides), n_votes=n_votes,
                                      min_votes=min_votes, share=share)


def straightline_counts_reason(left: int, right: int, answers: int, *, n_votes: int, min_votes: int,
                               share: float) -> str | None:
    """``straightline_reason`` from the counts: ``left`` and ``right`` of ``answers`` answers in all. At an exact
    tie (possible only at a share of 0.5) the reason names left."""
    if n_votes < min_votes or not answers or not (left or right):
        return None
    side, n = ("left", left) if left >= right else ("right", right)
    if n / answers < share:
        return None
    return (f"chose '{side}' for {n} of {answers} answers across {n_votes} votes "
            f"(straight-lining: {share:.0%} or more on one side)")


def _evaluator(session: Session, evaluator_id: int) -> Evaluator:
    evaluator = session.get(Evaluator, evaluator_id)
    if evaluator is None:
        raise ValueError(f"evaluator {evaluator_id} does not exist")
    return evaluator


def _settings_of(session: Session, evaluator_id: int) -> QCSettings:
    """The QC settings of this evaluator's study."""
    evaluator = _evaluator(session, evaluator_id)
    study = session.get(Study, evaluator.study_id)
    if study is None:  # the foreign key forbids it; a hand-edited database might not
        raise ValueError(f"evaluator {evaluator_id} belongs to study {evaluator.study_id}, which does not exist")
    return qc_settings(study)


def evaluate_evaluator(session: Session, *, evaluator_id: int, settings: QCSettings | None = None) -> list[str]:
    """Every reason to flag this evaluator, in words; empty when nothing is wrong or QC is off."""
    if settings is None:
        settings = _settings_of(session, evaluator_id)
    if not settings.enabled:
        return []
    return flag_reasons(answer_summary(session, evaluator_id=evaluator_id), settings)


def flag_reasons(answers: AnswerSummary, settings: QCSettings) -> list[str]:
    """The three rules applied to one evaluator's votes."""
    reasons: list[str] = []
    checks = answers.checks
    failures = [grade_check(v.pair, v.choices, v.left_clip_id) for v in checks]
    reason = failed_checks_reason(failures, n_checks=len(checks), max_failed=settings.max_failed_checks)
    if reason:
        reasons.append(reason)

    # Time and straight-lining are judged on every vote, checks included: a check looks like any pair,
    # so how fast it was answered says as much about care as any other vote.
    reason = too_fast_reason([t.time_spent_ms for t in answers.votes], min_seconds=settings.min_seconds_per_vote,
                             max_share=settings.max_too_fast_share)
    if reason:
        reasons.append(reason)

    # Straight-lining on the real pairs only: on a same-clip check the honest answer is all "tie", and on a
    # degraded check it is all on one side, which would make an attentive evaluator look like a clicker.
    real = answers.real_sides
    reason = straightline_counts_reason(real.left, real.right, real.answers, n_votes=real.votes,
                                        min_votes=settings.straightline_min_votes, share=settings.straightline_share)
    if reason:
        reasons.append(reason)
    return reasons


_evaluators = Evaluator.__table__
_SET_FLAGS = RawStatement(update(_evaluators).where(_evaluators.c.id == bindparam("evaluator_id"))
                          .values(flagged=bindparam("flagged"), flag_reasons=bindparam("reasons")))


def is_cluster_reason(reason: str) -> bool:
    return reason.startswith(CLUSTER_REASON)


def is_reliability_reason(reason: str) -> bool:
    return reason.startswith(RELIABILITY_REASON)


def is_cross_session_reason(reason: str) -> bool:
    """A reason judged against the study's other sessions: kept by refresh_flags, renewed by its own refresh."""
    return is_cluster_reason(reason) or is_reliability_reason(reason)


def refresh_flags(session: Session, *, evaluator_id: int, settings: QCSettings | None = None,
                  stored: tuple[bool, list[str]] | None = None) -> list[str]:
    """Recompute and store ``Evaluator.flagged`` / ``flag_reasons``; return the reasons.

    ``stored`` is the evaluator's current (flagged, reasons) when the caller has read them already: the row
    is then written only when the outcome changed (the vote path passes it, and most votes change nothing).
    A stored cross-session reason is kept while QC is on (``refresh_cluster_flags`` and
    ``refresh_reliability_flags`` renew those).
    """
    if settings is None:
        settings = _settings_of(session, evaluator_id)
    reasons = evaluate_evaluator(session, evaluator_id=evaluator_id, settings=settings)
    if stored is None:
        evaluator = _evaluator(session, evaluator_id)
        stored = (bool(evaluator.flagged), list(evaluator.flag_reasons or []))
    if settings.enabled:
        reasons = reasons + [r for r in stored[1] if is_cross_session_reason(r)]
    if stored != (bool(reasons), reasons):
        _SET_FLAGS.run(session, {"evaluator_id": evaluator_id, "flagged": bool(reasons), "reasons": reasons})
        expire_cached(session, Evaluator, evaluator_id, "flagged", "flag_reasons")
    return reasons


def refresh_study_flags(session: Session, *, study_id: int) -> int:
    """Refresh every evaluator of a study (after its QC settings change); return how many are flagged."""
    ids = session.scalars(select(Evaluator.id).where(Evaluator.study_id == study_id)).all()
    for evaluator_id in ids:
        refresh_flags(session, evaluator_id=evaluator_id)
    refresh_reliability_flags(session, study_id=study_id)
    refresh_cluster_flags(session, study_id=study_id)
    # A re-judging already running elsewhere read the old settings: owed again, it cannot leave the last word.
    for rule in RULES:
        rejudging_debts.record(session, study_id=study_id, rule=rule)
    return session.scalar(select(func.count(Evaluator.id)).where(Evaluator.study_id == study_id,
                                                                 Evaluator.flagged.is_(True))) or 0


# ------------------------------------------------------------------------------------- across sessions


def _cluster_reason(test: LeanTest, cell: CellInfo) -> str:
    toward_a = test.cluster_share >= 0.5
    model = cell.model_a if toward_a else cell.model_b
    mine = test.cluster_share if toward_a else 1 - test.cluster_share
    theirs = test.rest_share if toward_a else 1 - test.rest_share
    return (f"{CLUSTER_REASON}: the {test.sessions} sessions of this address (cluster of "
            f"{test.cluster.size}, {test.cluster.user_agents} user agent(s)) chose {model} in {mine:.0%} of their "
            f"decided answers on {cell.what} ({cell.model_a} against {cell.model_b}), the study's "
            f"{test.rest_sessions} other sessions in {theirs:.0%} "
            f"(p = {test.p_adjusted:.1g} after Bonferroni across the criteria tested)")


# A study's session as the cross-session rule reads it: id, ip_hash, user_agent, flag_reasons.
_EvaluatorRow = Row[int, str | None, str | None, list[str]]


_SESSIONS = select(Evaluator.id, Evaluator.ip_hash, Evaluator.user_agent, Evaluator.flag_reasons)


def _study_evaluators(session: Session, study_id: int) -> Sequence[_EvaluatorRow]:
    return session.execute(_SESSIONS.where(Evaluator.study_id == study_id).order_by(Evaluator.id)).all()


class _Verdicts(Protocol):
    """A study-wide rule: evaluator id -> the reason to flag it (``cluster_reasons``, ``reliability_reasons``)."""

    def __call__(self, session: Session, *, study_id: int, settings: QCSettings,
                 rows: Sequence[_EvaluatorRow] | None = None) -> dict[int, str]: ...


def cluster_reasons(session: Session, *, study_id: int, settings: QCSettings,
                    rows: Sequence[_EvaluatorRow] | None = None) -> dict[int, str]:
    """Evaluator id -> the cross-session reason to flag it, for every session of a flagged cluster.

    Sessions flagged for their own reasons are left out on both sides: they are not counted in the results.
    ``rows`` are the study's evaluators (id, ip_hash, user_agent, flag_reasons) when the caller has read them.
    """
    if not settings.enabled or not settings.cluster_check_alpha:
        return {}
    if rows is None:
        if not _may_have_comparable_cluster(session, study_id):
            return {}
        rows = _study_evaluators(session, study_id)
    kept = [SessionInfo(id=r.id, address=r.ip_hash, user_agent=r.user_agent) for r in rows
            if not any(not is_cluster_reason(x) for x in (r.flag_reasons or []))]
    clusters = address_clusters(kept)
    if not any(c.size >= 2 and c.has_address and len(kept) - c.size >= MIN_OTHER_SESSIONS for c in clusters):
        return {}  # the usual case (no address has two sessions, or nobody else to compare with): nothing to read
    answers, words = session_answers(session, study_id=study_id, sessions=[s.id for s in kept])
    tests = lean_tests(answers, [c for c in clusters if c.has_address], alpha=settings.cluster_check_alpha,
                       min_rest=MIN_OTHER_SESSIONS)
    strongest: dict[str, LeanTest] = {}
    for test in tests:
        if test.flagged and (test.cluster.key not in strongest
                             or test.p_value < strongest[test.cluster.key].p_value):
            strongest[test.cluster.key] = test
    return {s: _cluster_reason(t, words[t.cell]) for t in strongest.values() for s in t.cluster.sessions}


def _may_have_comparable_cluster(session: Session, study_id: int) -> bool:
    """Whether some address has two sessions and at least MIN_OTHER_SESSIONS sessions elsewhere, counted over
    all the study's sessions (an upper bound of the kept ones): when not, ``cluster_reasons`` has nothing to
    test, and an index scan told it without loading every session (a study behind one address, the
    benchmark's loopback, otherwise loaded thousands of rows at every completion)."""
    params = {"study_id": study_id}
    total = _SESSIONS_IN_STUDY.scalar(session, params) or 0
    return any(total - size >= MIN_OTHER_SESSIONS for size in _SESSIONS_PER_SHARED_ADDRESS.scalars(session, params))


# Built once (see app/services/assignments.py): they run at every cluster re-judging.
_SESSIONS_IN_STUDY = RawStatement(select(func.count()).select_from(_evaluators)
                                  .where(_evaluators.c.study_id == bindparam("study_id")))
_SESSIONS_PER_SHARED_ADDRESS = RawStatement(
    select(func.count()).select_from(_evaluators)
    .where(_evaluators.c.study_id == bindparam("study_id"), _evaluators.c.ip_hash.is_not(None))
    .group_by(_evaluators.c.ip_hash).having(func.count() >= 2))


def refresh_cluster_flags(session: Session, *, study_id: int, settings: QCSettings | None = None) -> int:
    """Re-judge the cross-session rule for the whole study and store what changed; return the rows written.
    """
    return _refresh_in(session, study_id, settings, check=cluster_reasons, reason=CLUSTER_REASON)


def _refresh_in(session: Session, study_id: int, settings: QCSettings | None, *, check: _Verdicts,
                reason: str) -> int:
    """One study-wide rule re-judged inside ``session``'s transaction (a change of QC settings, the CLI); the
    vote path uses ``rejudge`` instead, outside the vote's transaction."""
    if settings is None:
        study = session.get(Study, study_id)
        if study is None:
            raise ValueError(f"study {study_id} does not exist")
        settings = qc_settings(study)
    rows = _study_evaluators(session, study_id)  # one read of the study's sessions serves both steps
    verdicts = check(session, study_id=study_id, settings=settings, rows=rows)
    return _renew_flags(session, rows, verdicts, reason)


def refresh_cluster_flags_after_vote(session: Session, *, state: EvaluatorState, done: int, completed: bool) -> None:
    """After a vote: re-judge the study's clusters every few votes of a session that shares its address with
    another (a swarm need never complete a session) and when it completes, and every few completed sessions of
    the study (the honest sessions it is compared with change too). It reads every vote of the study, so not
    on every vote, not inside the vote's transaction (``rejudge_after_commit``), and in a large study no more
    often than ``app.services.rejudging`` allows (a trigger that comes too soon is owed to the study's next
    vote); between checks ``refresh_flags`` keeps what the last one found."""
    qc = state.qc
    if not qc.enabled or not qc.cluster_check_alpha:
        return
    key = (database_key(session), state.study_id, "clusters")
    triggered = (completed or done % CLUSTER_CHECK_EVERY == 0) and _cluster_check_due(session, state, completed)
    if triggered or REJUDGING.owed(key):
        rejudge_after_commit(session, key, state.study_id, triggered=triggered, force=triggered and completed)


def rejudge_after_commit(session: Session, key: tuple, study_id: int, *, triggered: bool, force: bool) -> None:
    """Once the vote in ``session`` has committed, re-judge one study-wide rule (``key[-1]``: 'clusters' or
    'reliability') through ``REJUDGING`` (which spaces it and owes what it holds back): verdicts from a snapshot
    that includes the vote, then a short write (``rejudge``). The vote's write transaction, and with it every
    other rater's vote, never waits for it; a failure leaves the vote stored and the re-judging owed. The
    re-judging reads the study's QC settings itself (``rejudge``).

    A trigger is owed in the database too, in the vote's own transaction (``rejudging_debts``): results in any
    process settle it, whether or not this process lives to run it."""
    rule = key[-1]
    if triggered:
        rejudging_debts.record(session, study_id=study_id, rule=rule)
    after_commit(session, lambda: REJUDGING.run_if_allowed(
        key, triggered=triggered, force=force, job=_paying(engine_of(session), study_id, rule, *RULES[rule])))


def _paying(engine: Engine, study_id: int, rule: str, check: _Verdicts, reason: str) -> Callable[[], int]:
    """The job that re-judges ``rule`` and pays the study's debts of it, never beside the same re-judging in
    another process (``rejudging_locks.exclusive``: ``Busy``, and the job stays owed)."""
    def job() -> int:
        with rejudging_locks.exclusive(engine, study_id=study_id, rule=rule):
            return rejudge(engine, study_id=study_id, check=check, reason=reason, rule=rule)
    return job


def settle(session: Session, *, study_id: int, spaced: bool = False) -> bool:
    """Run the re-judgings the study was owed when called, by this process or (kept in the database) by any,
    before results or exports count its votes or its flagged sessions. Returns whether they all ran.

    ``spaced``: only those whose spacing allows (``app.services.rejudging``), without waiting, for counts a page
    polls every few seconds (the study's progress): forcing them there would undo the spacing's bound on their
    cost. What such a count shows lags the votes as the vote path's flags do, by at most the spacing.

    ``session``'s read transaction is ended first (``release_read``): what its caller reads next is read after
    the settling, and on SQLite the re-judging's own write does not wait for this thread's lock. A re-judging of
    the study running now, here or in another process, is waited for, then the debts are read again, until none
    of those owed at the call is left or ``SETTLE_WAIT_S`` has passed in all: one may be judging votes the caller
    is about to count. Debts that votes write meanwhile are left to the vote path: under steady voting a busy
    study is never free of them, and chasing them would run one forced re-judging after another. Past the wait,
    or if a re-judging fails, the caller goes on with what is stored, and the log says so."""
    engine = engine_of(session)
    if not release_read(session) and engine.dialect.name == "sqlite":
        log.warning("study %s: QC re-judgings not settled: the caller's transaction has unsaved changes and holds "
                    "the write lock; flags may lag the votes until the next re-judging", study_id)
        return False
    prefix = (database_key(session), study_id)
    try:
        if spaced:
            ran = [REJUDGING.run_if_allowed(prefix + (rule,), triggered=True,
                                            job=_paying(engine, study_id, rule, *RULES[rule]))
                   for rule in _owed(engine, study_id)]  # every rule, not only up to the first held back
            return all(ran)
        return _settle_forced(engine, prefix, study_id)
    except Exception:  # a results page still shows what is stored (the log tells the operator what failed)
        log.exception("study %s: a QC re-judging owed before counting failed; the flags shown may lag the votes",
                      study_id)
        return False


_SETTLE_POLL_S = 0.05


def _owed(engine: Engine, study_id: int, upto: int | None = None) -> list[str]:
    """The rules the study owes a re-judging of (``upto``: by debts up to that id), read on a snapshot of its own."""
    with read_session_scope(engine) as read:
        return rejudging_debts.owed_rules(read, study_id=study_id, upto=upto)


def _settle_forced(engine: Engine, prefix: tuple, study_id: int) -> bool:
    deadline = time.monotonic() + SETTLE_WAIT_S
    with read_session_scope(engine) as read:
        upto = rejudging_debts.latest(read, study_id=study_id)
    while True:
        REJUDGING.settle(prefix, timeout=max(0.0, deadline - time.monotonic()))
        rules = _owed(engine, study_id, upto)
        if not rules:
            return True
        if time.monotonic() >= deadline:
            log.warning("study %s: QC re-judgings of %s still owed after %.0f s (another process kept them busy); "
                        "the flags shown may lag the votes until they run", study_id, ", ".join(rules),
                        SETTLE_WAIT_S)
            return False
        # Forced past the spacing, never waiting on another process here: Busy owes it, and this loop waits.
        ran = [REJUDGING.run_if_allowed(prefix + (rule,), triggered=True, force=True,
                                        job=_paying(engine, study_id, rule, *RULES[rule])) for rule in rules]
        if not all(ran):
            time.sleep(_SETTLE_POLL_S)


def rejudge(engine: Engine, *, study_id: int, check: _Verdicts, reason: str, rule: str) -> int:
    """Re-judge one study-wide rule (``check``: ``cluster_reasons`` or ``reliability_reasons``, ``rule`` its name)
    outside any vote: read the study on a snapshot (on SQLite without the write lock, however long it takes),
    then write the rows whose reasons of this kind change in a transaction of its own. Returns the rows written.

    The snapshot reads the rule's debts first, so it holds every vote behind them, and the write pays exactly
    those (``rejudging_debts``); none left means a re-judging with a later snapshot has paid them, and there is
    nothing to judge. The study's QC settings are read in the same snapshot, never kept from the trigger: an
    admin's change since must not be undone by a re-judging owed before it.

    The write re-reads those rows under lock (PostgreSQL): a flag another vote stored since the snapshot must
    not be overwritten with the snapshot's. Only rows that had or get a reason of this kind can change, so only
    they are read. A row a vote holds is waited for (the vote's transaction is short, and holds no other
    evaluator's row), up to ``REJUDGING_LOCK_TIMEOUT``."""
    with read_session_scope(engine) as read:
        paid = rejudging_debts.owed_ids(read, study_id=study_id, rule=rule)
        study = _STUDY_QC.one_or_none(read, {"study_id": study_id}) if paid else None
        if study is None:
            return 0
        settings = qc_settings_for(study.qc, pairs_per_session=study.pairs_per_session,
                                   sessions_per_invite=study.sessions_per_invite)
        verdicts = check(read, study_id=study_id, settings=settings)
        holding = _holding(reason).scalars(read, {"study_id": study_id})
    touched = sorted(set(verdicts) | set(holding))
    with session_scope(engine) as write:
        rejudging_debts.forget(write, paid)
        if not touched:
            return 0
        fresh = _SESSIONS.where(Evaluator.id.in_(touched)).order_by(Evaluator.id)
        if write.get_bind().dialect.name != "sqlite":  # SQLite: the write lock is the whole database's already
            write.execute(text(f"SET LOCAL lock_timeout = '{REJUDGING_LOCK_TIMEOUT}'"))
            fresh = fresh.with_for_update(key_share=True)
        return _renew_flags(write, write.execute(fresh).all(), verdicts, reason)


REJUDGING_LOCK_TIMEOUT = "10s"
# Built once, as the vote path's are: a re-judging runs after a session completes (forced, so every twentieth vote
# or so in a study of 20-pair sessions), and building these per run cost as much as its judging in the benchmark.
_studies = Study.__table__
_STUDY_QC = RawStatement(select(_studies.c.qc, _studies.c.pairs_per_session, _studies.c.sessions_per_invite)
                         .where(_studies.c.id == bindparam("study_id")))


@cache
def _holding(reason: str) -> RawStatement:
    """The study's sessions holding a reason of this kind, found in the stored JSON text (every reason of a kind
    starts with ``reason``: '["<reason>...'): in the benchmark most sessions are flagged, and reading them all took
    as long as the judging."""
    return RawStatement(select(_evaluators.c.id).where(
        _evaluators.c.study_id == bindparam("study_id"), _evaluators.c.flagged.is_(True),
        cast(_evaluators.c.flag_reasons, Text).contains(json.dumps(reason)[:-1], autoescape=True)))


# Built once (see app/services/assignments.py): these run on every third vote.
_SHARING = select(func.count()).select_from(
    select(_evaluators.c.id).where(_evaluators.c.study_id == bindparam("study_id"),
                                   _evaluators.c.ip_hash == bindparam("ip_hash")).limit(2).subquery())
_FINISHED = select(func.count()).select_from(_evaluators).where(
    _evaluators.c.study_id == bindparam("study_id"), _evaluators.c.completed_at.is_not(None))
# (database, study, address) known to have two sessions or more: sessions are never taken from a study that
# keeps rating, so once shared an address stays shared, and its votes need not ask again.
_SHARED_ADDRESSES: set[tuple[str, int, str]] = set()
_SHARED_ADDRESSES_MAX = 100_000


def _address_shared(session: Session, study_id: int, ip_hash: str) -> bool:
    key = (database_key(session), study_id, ip_hash)
    if key in _SHARED_ADDRESSES:
        return True
    if (session.scalar(_SHARING, {"study_id": study_id, "ip_hash": ip_hash}) or 0) < 2:
        return False
    if len(_SHARED_ADDRESSES) >= _SHARED_ADDRESSES_MAX:
        _SHARED_ADDRESSES.clear()
    _SHARED_ADDRESSES.add(key)
    return True


def finished_sessions(session: Session, study_id: int) -> int:
    """How many of the study's sessions have completed."""
    return session.scalar(_FINISHED, {"study_id": study_id}) or 0


def _cluster_check_due(session: Session, state: EvaluatorState, completed: bool) -> bool:
    if state.ip_hash and _address_shared(session, state.study_id, state.ip_hash):
        return True
    if not completed:
        return False
    return finished_sessions(session, state.study_id) % CLUSTER_CHECK_COMPLETIONS == 0


# ------------------------------------------------------------------------------------ rater reliability


_vt, _vc, _cr, _pr = Vote.__table__, VoteChoice.__table__, Criterion.__table__, Pair.__table__
_copy = Clip.__table__.alias("copy")
# Integers only, the outcome coded as app.trust.reliability.CHOICES ('a', 'b', 'tie' -> 0, 1, 2; anything else
# -1, which AnswerTable refuses): a study's answers are read whole into arrays at every re-judging (see
# study_answers).
_OUTCOME_CODE = case(*((_vc.c.outcome == c, i) for i, c in enumerate(CHOICES)), else_=-1)
_STUDY_ANSWERS = RawStatement(
    select(_vt.c.evaluator_id, _vt.c.id, _vt.c.pair_id, _vc.c.criterion_id, _OUTCOME_CODE, _vc.c.model_a_id,
           _vc.c.model_b_id)
    .select_from(_vt)
    .join(_vc, _vc.c.vote_id == _vt.c.id)
    .where(_vt.c.study_id == bindparam("study_id"))
)
_STUDY_CHECKS = (select(_pr.c.id, _pr.c.kind, _copy.c.variant).join(_copy, _copy.c.id == _pr.c.clip_b_id)
                 .where(_pr.c.study_id == bindparam("study_id"), _pr.c.kind.in_(CHECK_KINDS)))
_STUDY_CRITERIA = select(_cr.c.id, _cr.c.key).where(_cr.c.study_id == bindparam("study_id"))


def _known_answer(kind: str, variant: str, criterion: str, criteria: set[str]) -> str | None:
    """The honest answer to one criterion of a check in model space ('a' = the original), or None when the
    check says nothing about that criterion (a degraded copy is not worse on every criterion)."""
    if kind == CHECK_SAME:
        return "tie"
    if kind == CHECK_DEGRADED:
        expected = [k for k in EXPECTED_WINS.get(variant, ("overall_quality",)) if k in criteria]
        return "a" if criterion in expected else None
    return None


def study_answers(session: Session, *, study_id: int) -> AnswerTable:
    """The study's answers in model space, checks with their known answer, for the reliability estimate.

    As integer columns (``AnswerTable``), the outcome coded in SQL, rather than one object per answer with its
    criterion's key and its pair's kind as strings: the read is most of a re-judging's time (bench/rejudging.py:
    most of the 0.22-0.23 s at 20,000 votes). tests/app/services/test_qc.py checks it against the join it replaced."""
    params = {"study_id": study_id}
    # Flattened straight into one array: an array built from the result's rows took twice as long.
    columns = np.fromiter((x for row in _STUDY_ANSWERS.all(session, params, named=False) for x in row),
                          dtype=np.int64).reshape(-1, 7)
    rater, vote, pair, criterion, choice, model_a, model_b = columns.T
    known = np.full(len(columns), -1, dtype=np.int64)
    checks = {pair_id: (kind, variant or "") for pair_id, kind, variant in session.execute(_STUDY_CHECKS, params)}
    if checks:
        keys: dict[int, str] = {row.id: row.key for row in session.execute(_STUDY_CRITERIA, params)}
        present = {keys[c] for c in np.unique(criterion).tolist() if c in keys}
        # A check's honest answer depends on its kind, variant and criterion only: judged once per pair and
        # criterion; a check that says nothing about a criterion (a degraded copy is not worse on every
        # criterion) is left out of the table.
        honest: dict[tuple[int, int], int] = {}
        for pair_id, (kind, variant) in checks.items():
            for criterion_id, key in keys.items():
                answer = _known_answer(kind, variant, key, present)
                honest[(pair_id, criterion_id)] = -2 if answer is None else CHOICES.index(answer)
        at = np.flatnonzero(np.isin(pair, np.fromiter(checks, dtype=np.int64, count=len(checks))))
        known[at] = [honest[(p, c)] for p, c in zip(pair[at].tolist(), criterion[at].tolist(), strict=True)]
    keep = known != -2
    return AnswerTable(rater=rater[keep], vote=vote[keep], pair=pair[keep], criterion=criterion[keep],
                       choice=choice[keep], model_a=model_a[keep], model_b=model_b[keep], known=known[keep])


def reliability_reason(r: Reliability, standardized_z: float, settings: QCSettings) -> str:
    """Why the reliability rule flags this rater, in words."""
    return (f"{RELIABILITY_REASON}: over {r.votes} votes their answers matched the other raters' consensus "
            f"{r.observed / r.votes:.0%} of the time on average, where an honest rater here would match about "
            f"{r.expected / r.votes:.0%} and a random clicker {r.chance / r.votes:.0%} (reliability "
            f"{r.reliability:.2f}, where honest = 1 and random = 0; {abs(standardized_z):.1f} spreads below the "
            f"study's raters, flagged beyond p = {settings.reliability_alpha:g})")


def reliability_reasons(session: Session, *, study_id: int, settings: QCSettings,
                        rows: Sequence[_EvaluatorRow] | None = None) -> dict[int, str]:
    """Evaluator id -> the reliability reason to flag it, for every session of the study.

    The consensus is formed by the sessions not flagged by their own rules (failed checks, speed,
    straight-lining): a careless rater the checks caught must not set the standard the others are held to.
    Every session is judged, flagged ones too (the reason is one more line on the dashboard).
    """
    if not settings.enabled or not settings.reliability_alpha:
        return {}
    if rows is None:
        rows = _study_evaluators(session, study_id)
    honest = {r.id for r in rows if not any(not is_cross_session_reason(x) for x in (r.flag_reasons or []))}
    estimates = rater_reliability(study_answers(session, study_id=study_id), consensus_from=honest)
    flagged = unreliable_raters(estimates, alpha=settings.reliability_alpha,
                                min_votes=settings.reliability_min_votes, max_lean=CONSISTENT_TASTE,
                                reference=honest)
    return {rater: reliability_reason(estimates[rater], z, settings) for rater, z in flagged.items()}


def refresh_reliability_flags(session: Session, *, study_id: int, settings: QCSettings | None = None) -> int:
    """Re-judge the reliability rule for the whole study and store what changed; return the rows written."""
    return _refresh_in(session, study_id, settings, check=reliability_reasons, reason=RELIABILITY_REASON)


def refresh_reliability_after_vote(session: Session, *, state: EvaluatorState, completed: bool) -> None:
    """After a vote that completes a session: re-judge the whole study's reliability every
    ``reliability_step(finished)`` completed sessions: every CLUSTER_CHECK_COMPLETIONS in a study of up to
    RELIABILITY_STEP_GROWS_AT sessions, then every twentieth of the sessions so far (it reads every answer of
    the study: at 6,000 votes 0.5 s every 200 votes with a fixed step). After the vote's commit
    (``rejudge_after_commit``), and spaced like the cluster check (``app.services.rejudging``): sessions that
    complete every few seconds made it 19% of the server's CPU at the step alone; a trigger held back is owed
    to the study's next vote of any kind, and results settle it before they count."""
    qc = state.qc
    if not qc.enabled or not qc.reliability_alpha:
        return
    key = (database_key(session), state.study_id, "reliability")
    due = False
    if completed:
        finished = finished_sessions(session, state.study_id)
        due = finished % reliability_step(finished) == 0
    if due or REJUDGING.owed(key):
        rejudge_after_commit(session, key, state.study_id, triggered=due, force=False)


# The study-wide rules by the name their keys and debts carry: what settling a debt of each runs.
RULES: dict[str, tuple[_Verdicts, str]] = {"clusters": (cluster_reasons, CLUSTER_REASON),
                                           "reliability": (reliability_reasons, RELIABILITY_REASON)}

RELIABILITY_STEP_GROWS_AT = 200


def reliability_step(finished: int) -> int:
    """Completed sessions between two reliability re-judgings of a study with ``finished`` completed sessions."""
    return max(CLUSTER_CHECK_COMPLETIONS, finished // RELIABILITY_STEP_GROWS_AT * CLUSTER_CHECK_COMPLETIONS)


def _renew_flags(session: Session, rows: Sequence[_EvaluatorRow], verdicts: dict[int, str], reason: str) -> int:
    """Replace each evaluator's flag reasons of one kind (those starting with ``reason``) with this re-judging's
    verdicts; write only the rows that change. Returns how many changed."""
    changed: dict[int, list[str]] = {}
    for row in rows:
        stored = list(row.flag_reasons or [])
        renewed = [r for r in stored if not r.startswith(reason)] + ([verdicts[row.id]] if row.id in verdicts else [])
        if renewed != stored:
            changed[row.id] = renewed
    for evaluator_id, reasons in changed.items():
        _SET_FLAGS.run(session, {"evaluator_id": evaluator_id, "flagged": bool(reasons), "reasons": reasons})
        expire_cached(session, Evaluator, evaluator_id, "flagged", "flag_reasons")
    return len(changed)
