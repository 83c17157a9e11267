"""Flagging careless evaluators: failed attention checks, too-fast votes and straight-lining.

The rules are pure functions of an evaluator's votes (tested on their own); ``evaluate_evaluator`` reads the
votes and applies them with the study's ``QCSettings``, and ``refresh_flags`` stores the outcome on the
evaluator so the dashboard can show the reasons and the results can leave flagged evaluators out.
Flags are recomputed from all votes every time, never accumulated, so they are always consistent with the
data and a change of settings takes effect on the next refresh.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Evaluator, Pair, Study, Vote, VoteChoice
from app.services.attention import CHECK_KINDS, QCSettings, check_votes, grade_check, qc_settings


def failed_checks_reason(failures: Sequence[Sequence[str]], *, n_checks: int, max_failed: int) -> str | None:
    """``failures`` holds one list of reasons per answered check (empty when passed)."""
    failed = [reasons for reasons in failures if reasons]
    if len(failed) <= max_failed:
        return None
    first = failed[0][0]
    return (f"failed {len(failed)} of {n_checks} attention checks (more than the {max_failed} allowed); "
            f"first: {first}")


def too_fast_reason(times_ms: Sequence[int], flagged_fast: Sequence[bool], *, min_seconds: float,
                    max_share: float) -> str | None:
    """Too many votes submitted sooner than the study's minimum time per vote."""
    if not times_ms:
        return None
    threshold = min_seconds * 1000
    fast = sum(1 for t, f in zip(times_ms, flagged_fast, strict=True) if f or t < threshold)
    if fast == 0 or fast / len(times_ms) <= max_share:
        return None
    return (f"{fast} of {len(times_ms)} votes were submitted in under {min_seconds:g} s "
            f"(more than {max_share:.0%} allowed)")


def straightline_reason(sides: Sequence[str], *, n_votes: int, min_votes: int, share: float) -> str | None:
    """One side (left or right) chosen for nearly every criterion of every vote.

    Only left/right count as straight-lining: "indistinguishable" everywhere can be an honest answer
    when two models are close, and a careless "tie" clicker is caught by the degraded-copy checks instead.
    """
    if n_votes < min_votes or not sides:
        return None
    counts = Counter(s for s in sides if s in ("left", "right"))
    if not counts:
        return None
    side, n = counts.most_common(1)[0]
    if n / len(sides) < share:
        return None
    return (f"chose '{side}' for {n} of {len(sides)} answers across {n_votes} votes "
            f"(straight-lining: {share:.0%} or more on one side)")


def evaluate_evaluator(session: Session, *, evaluator_id: int, settings: QCSettings | None = None) -> list[str]:
    """Every reason to flag this evaluator, in words; empty when nothing is wrong or QC is off."""
    evaluator = session.get(Evaluator, evaluator_id)
    if evaluator is None:
        raise ValueError(f"evaluator {evaluator_id} does not exist")
    settings = settings or qc_settings(session.get(Study, evaluator.study_id))
    if not settings.enabled:
        return []
    reasons: list[str] = []

    checks = check_votes(session, evaluator_id=evaluator_id)
    failures = [grade_check(pair, choices, left) for pair, choices, left in checks]
    reason = failed_checks_reason(failures, n_checks=len(checks), max_failed=settings.max_failed_checks)
    if reason:
        reasons.append(reason)

    # Time and straight-lining are judged on every vote, checks included: a check looks like any pair,
    # so how fast it was answered says as much about care as any other vote.
    votes = session.execute(
        select(Vote.id, Vote.time_spent_ms, Vote.too_fast).where(Vote.evaluator_id == evaluator_id)
    ).all()
    reason = too_fast_reason([v.time_spent_ms for v in votes], [bool(v.too_fast) for v in votes],
                             min_seconds=settings.min_seconds_per_vote, max_share=settings.max_too_fast_share)
    if reason:
        reasons.append(reason)

    # Straight-lining on the real pairs only: on a same-clip check the honest answer is all "tie", and on a
    # degraded check it is all on one side, which would make an attentive evaluator look like a clicker.
    sides = session.scalars(
        select(VoteChoice.side)
        .join(Vote, Vote.id == VoteChoice.vote_id)
        .join(Pair, Pair.id == Vote.pair_id)
        .where(Vote.evaluator_id == evaluator_id, Pair.kind.not_in(CHECK_KINDS))
    ).all()
    n_real = len({v.id for v in votes}) - len(checks)
    reason = straightline_reason(sides, n_votes=n_real, min_votes=settings.straightline_min_votes,
                                 share=settings.straightline_share)
    if reason:
        reasons.append(reason)
    return reasons


def refresh_flags(session: Session, *, evaluator_id: int) -> list[str]:
    """Recompute and store ``Evaluator.flagged`` / ``flag_reasons``; return the reasons."""
    reasons = evaluate_evaluator(session, evaluator_id=evaluator_id)
    evaluator = session.get(Evaluator, evaluator_id)
    if evaluator.flag_reasons != reasons or evaluator.flagged != bool(reasons):
        evaluator.flag_reasons = reasons
        evaluator.flagged = bool(reasons)
        session.flush()
    return reasons


def refresh_study_flags(session: Session, *, study_id: int) -> int:
    """Refresh every evaluator of a study (after its QC settings change); return how many are flagged."""
    ids = session.scalars(select(Evaluator.id).where(Evaluator.study_id == study_id)).all()
    return sum(1 for evaluator_id in ids if refresh_flags(session, evaluator_id=evaluator_id))
