"""The reliability estimate written answer by answer, as its definition reads (app/trust/reliability.py's
docstring), and the study's answers read the way the app read them for it: the app now does both on integer
columns for speed, and tests/app/trust/test_reliability.py and tests/app/services/test_qc.py check that both
ways give the same."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Clip, Criterion, Pair, Vote, VoteChoice
from app.services.attention import CHECK_KINDS
from app.services.qc import _known_answer
from app.trust.reliability import CHOICES, MIN_VOTE_SD, Answer, Reliability


def _normalised(counts: Mapping[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    if total <= 0:
        return dict.fromkeys(CHOICES, 1 / len(CHOICES))
    return {c: counts.get(c, 0.0) / total for c in CHOICES}


def _known_distribution(answer: str, accuracy: float) -> dict[str, float]:
    other = (1 - accuracy) / (len(CHOICES) - 1)
    return {c: (accuracy if c == answer else other) for c in CHOICES}


def reference_reliability(answers: Iterable[Answer], *, raters: Sequence[int] | None = None,
                      consensus_from: set[int] | None = None, prior_weight: float = 2.0,
                      check_accuracy: float = 0.9) -> dict[int, Reliability]:
    """The estimate as app/trust/reliability.py's docstring defines it, answer by answer: the code the app ran
    before it judged columns (``rater_reliability``), kept as the reference that one is checked against."""
    answers = list(answers)
    if not 0 < check_accuracy < 1:
        raise ValueError("check_accuracy must be between 0 and 1")
    counts: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    by_criterion: dict[str, Counter[str]] = defaultdict(Counter)
    for a in answers:
        if a.choice not in CHOICES:
            raise ValueError(f"answer choice must be one of {CHOICES}, got {a.choice!r}")
        if a.known is None and (consensus_from is None or a.rater in consensus_from):
            counts[(a.pair, a.criterion)][a.choice] += 1
            by_criterion[a.criterion][a.choice] += 1
    prior = {k: _normalised(v) for k, v in by_criterion.items()}

    wanted = set(raters) if raters is not None else {a.rater for a in answers}
    votes: dict[int, dict[int, list[Answer]]] = defaultdict(lambda: defaultdict(list))
    for a in answers:
        if a.rater in wanted:
            votes[a.rater][a.vote].append(a)

    out: dict[int, Reliability] = {}
    for rater, by_vote in votes.items():
        observed = expected = variance = 0.0
        n_votes = 0
        won: Counter[int] = Counter()
        decided = 0
        for items in by_vote.values():
            scores, means, sds = [], [], []
            for a in items:
                if a.known is not None:
                    p = _known_distribution(a.known, check_accuracy)
                else:
                    own_counted = consensus_from is None or rater in consensus_from
                    item = Counter(counts.get((a.pair, a.criterion), Counter()))
                    if own_counted:
                        item[a.choice] -= 1  # leave this rater's own answer out
                    n = sum(item.values())
                    base = prior.get(a.criterion, dict.fromkeys(CHOICES, 1 / len(CHOICES)))
                    p = {c: (item[c] + prior_weight * base[c]) / (n + prior_weight) for c in CHOICES}
                    if a.choice != "tie":
                        decided += 1
                        winner = a.model_a if a.choice == "a" else a.model_b
                        won[winner] += 1
                mean = sum(q * q for q in p.values())
                second = sum(q ** 3 for q in p.values())
                scores.append(p[a.choice])
                means.append(mean)
                sds.append(math.sqrt(max(second - mean * mean, 0.0)))
            if not scores:
                continue
            n_votes += 1
            observed += sum(scores) / len(scores)
            expected += sum(means) / len(means)
            # Criteria of one vote taken as perfectly correlated; floored, because where the consensus is near
            # an even split the formula's spread is near zero and a few votes give z's with tails far heavier than
            # the normal (an honest coin-flipping rater of two equal models drew a flag in the swarm test).
            variance += max(sum(sds) / len(sds), MIN_VOTE_SD) ** 2
        # The model this rater chose most, as a share of their decided answers on real pairs.
        lean = max(won.values()) / decided if decided else 0.0
        out[rater] = Reliability(rater=rater, votes=n_votes, observed=observed, expected=expected,
                                 chance=n_votes / len(CHOICES), sd=math.sqrt(variance), decided=decided,
                                 lean=lean)
    return out


def reference_study_answers(session: Session, *, study_id: int) -> list[Answer]:
    """A study's answers as the app read them before it read integer columns (``app.services.qc.study_answers``):
    one join with the criterion's key, the pair's kind and the copy's variant per row, one ``Answer`` per row."""
    vt, vc, cr, pr = Vote.__table__, VoteChoice.__table__, Criterion.__table__, Pair.__table__
    copy = Clip.__table__.alias("copy")
    query = (
        select(vt.c.evaluator_id, vt.c.id, vt.c.pair_id, cr.c.key, vc.c.outcome, vc.c.model_a_id, vc.c.model_b_id,
               pr.c.kind, copy.c.variant)
        .select_from(vt).join(vc, vc.c.vote_id == vt.c.id).join(cr, cr.c.id == vc.c.criterion_id)
        .join(pr, pr.c.id == vt.c.pair_id).join(copy, copy.c.id == pr.c.clip_b_id)
        .where(vt.c.study_id == study_id)
    )
    rows = session.execute(query).all()
    criteria = {row.key for row in rows}
    answers = []
    for rater, vote_id, pair_id, key, outcome, model_a, model_b, kind, variant in rows:
        known = _known_answer(kind, variant or "", key, criteria) if kind in CHECK_KINDS else None
        if kind in CHECK_KINDS and known is None:
            continue
        answers.append(Answer(rater=rater, vote=vote_id, pair=pair_id, criterion=key, choice=outcome,
                              model_a=model_a, model_b=model_b, known=known))
    return answers
