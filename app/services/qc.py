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

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from app.db import expire_cached
from app.models import Evaluator, Study
from app.services.attention import CHECK_KINDS, AnsweredVote, QCSettings, answered_votes, grade_check, qc_settings


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


def _evaluator(session: Session, evaluator_id: int) -> Evaluator:
    evaluator = session.get(Evaluator, evaluator_id)
    if evaluator is None:
        raise ValueError(f"evaluator {evaluator_id} does not exist")
    return evaluator


def evaluate_evaluator(session: Session, *, evaluator_id: int, settings: QCSettings | None = None) -> list[str]:
    """Every reason to flag this evaluator, in words; empty when nothing is wrong or QC is off."""
    if settings is None:
        evaluator = _evaluator(session, evaluator_id)
        study = session.get(Study, evaluator.study_id)
        if study is None:  # the foreign key forbids it; a hand-edited database might not
            raise ValueError(f"evaluator {evaluator_id} belongs to study {evaluator.study_id}, which does not exist")
        settings = qc_settings(study)
    if not settings.enabled:
        return []
    votes = answered_votes(session, evaluator_id=evaluator_id)
    return flag_reasons(votes, settings)


def flag_reasons(votes: Sequence[AnsweredVote], settings: QCSettings) -> list[str]:
    """The three rules applied to one evaluator's votes."""
    reasons: list[str] = []
    checks = [v for v in votes if v.pair.kind in CHECK_KINDS]
    failures = [grade_check(v.pair, v.choices, v.left_clip_id) for v in checks]
    reason = failed_checks_reason(failures, n_checks=len(checks), max_failed=settings.max_failed_checks)
    if reason:
        reasons.append(reason)

    # Time and straight-lining are judged on every vote, checks included: a check looks like any pair,
    # so how fast it was answered says as much about care as any other vote.
    reason = too_fast_reason([v.time_spent_ms for v in votes], [v.too_fast for v in votes],
                             min_seconds=settings.min_seconds_per_vote, max_share=settings.max_too_fast_share)
    if reason:
        reasons.append(reason)

    # Straight-lining on the real pairs only: on a same-clip check the honest answer is all "tie", and on a
    # degraded check it is all on one side, which would make an attentive evaluator look like a clicker.
    real = [v for v in votes if v.pair.kind not in CHECK_KINDS]
    sides = [side for v in real for side in v.choices.values()]
    reason = straightline_reason(sides, n_votes=len(real), min_votes=settings.straightline_min_votes,
                                 share=settings.straightline_share)
    if reason:
        reasons.append(reason)
    return reasons


_evaluators = Evaluator.__table__
_SET_FLAGS = (update(_evaluators).where(_evaluators.c.id == bindparam("evaluator_id"))
              .values(flagged=bindparam("flagged"), flag_reasons=bindparam("reasons")))


def refresh_flags(session: Session, *, evaluator_id: int, settings: QCSettings | None = None,
                  stored: tuple[bool, list[str]] | None = None) -> list[str]:
    """Recompute and store ``Evaluator.flagged`` / ``flag_reasons``; return the reasons.

    ``stored`` is the evaluator's current (flagged, reasons) when the caller has read them already: the row
    is then written only when the outcome changed (the vote path passes it, and most votes change nothing).
    """
    reasons = evaluate_evaluator(session, evaluator_id=evaluator_id, settings=settings)
    if stored is None:
        evaluator = _evaluator(session, evaluator_id)
        stored = (bool(evaluator.flagged), list(evaluator.flag_reasons or []))
    if stored != (bool(reasons), reasons):
        session.execute(_SET_FLAGS, {"evaluator_id": evaluator_id, "flagged": bool(reasons), "reasons": reasons})
        expire_cached(session, Evaluator, evaluator_id, "flagged", "flag_reasons")
    return reasons


def refresh_study_flags(session: Session, *, study_id: int) -> int:
    """Refresh every evaluator of a study (after its QC settings change); return how many are flagged."""
    ids = session.scalars(select(Evaluator.id).where(Evaluator.study_id == study_id)).all()
    return sum(1 for evaluator_id in ids if refresh_flags(session, evaluator_id=evaluator_id))
