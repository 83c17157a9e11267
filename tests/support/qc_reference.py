"""The per-session QC rules as they read before votes were counted in SQL: on every answer of the session,
criterion by criterion (``AnsweredVote``). The app now judges a session from its counted answers
(``AnswerSummary``, app/services/attention.py); tests/app/services/test_qc.py checks that both give the same
reasons and the same call for an extra check."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from app.services.attention import (
    CHECK_DEGRADED,
    CHECK_KINDS,
    CHECK_SAME,
    SUSPICIOUS_MIN_VOTES,
    SUSPICIOUS_SHARE,
    AnsweredVote,
    QCSettings,
    grade_check,
    is_too_fast,
)
from app.services.qc import failed_checks_reason, too_fast_reason


def reference_straightline(sides: Sequence[str], *, n_votes: int, min_votes: int, share: float) -> str | None:
    if n_votes < min_votes or not sides:
        return None
    counts = Counter(s for s in sides if s in ("left", "right"))
    if not counts:
        return None
    side, n = counts.most_common(1)[0]
    # The one intended change: at an exact tie (only possible at a share of 0.5) the app names left, where this
    # named whichever side came first (tests/app/services/test_qc.py, test_straightlining_at_an_even_split_names_left).
    if counts["left"] == counts["right"]:
        side = "left"
    if n / len(sides) < share:
        return None
    return (f"chose '{side}' for {n} of {len(sides)} answers across {n_votes} votes "
            f"(straight-lining: {share:.0%} or more on one side)")


def reference_flag_reasons(votes: Sequence[AnsweredVote], settings: QCSettings) -> list[str]:
    reasons: list[str] = []
    checks = [v for v in votes if v.pair.kind in CHECK_KINDS]
    failures = [grade_check(v.pair, v.choices, v.left_clip_id) for v in checks]
    reason = failed_checks_reason(failures, n_checks=len(checks), max_failed=settings.max_failed_checks)
    if reason:
        reasons.append(reason)
    reason = too_fast_reason([v.time_spent_ms for v in votes], min_seconds=settings.min_seconds_per_vote,
                             max_share=settings.max_too_fast_share)
    if reason:
        reasons.append(reason)
    real = [v for v in votes if v.pair.kind not in CHECK_KINDS]
    sides = [side for v in real for side in v.choices.values()]
    reason = reference_straightline(sides, n_votes=len(real), min_votes=settings.straightline_min_votes,
                                    share=settings.straightline_share)
    if reason:
        reasons.append(reason)
    return reasons


def reference_suspicion(votes: Sequence[AnsweredVote], settings: QCSettings) -> str | None:
    for v in votes:
        if v.pair.kind in CHECK_KINDS and grade_check(v.pair, v.choices, v.left_clip_id):
            return v.pair.kind
    real = [side for v in votes if v.pair.kind not in CHECK_KINDS for side in v.choices.values()]
    n_real = sum(1 for v in votes if v.pair.kind not in CHECK_KINDS)
    if n_real >= SUSPICIOUS_MIN_VOTES and real:
        counts = Counter(real)
        if counts["tie"] / len(real) >= SUSPICIOUS_SHARE:
            return CHECK_DEGRADED
        if max(counts["left"], counts["right"]) / len(real) >= SUSPICIOUS_SHARE:
            return CHECK_SAME
    fast = sum(1 for v in votes if is_too_fast(v.time_spent_ms, settings))
    if votes and fast / len(votes) > settings.max_too_fast_share:
        return "any"
    return None
