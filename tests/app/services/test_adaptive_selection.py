"""Adaptive pair selection (issue 13, Chatbot Arena's Eq. 9) through the service, against least-voted first."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from sqlalchemy import select

from app.models import Assignment, Clip, Pair
from app.services.assignments import join, next_assignment
from app.services.attention import qc_settings
from app.services.votes import submit_vote
from tests.conftest import BACKENDS
from tests.factories import make_pairs, make_study

# Model 0 beats everyone (a lopsided pair: little to learn); 1, 2 and 3 are evenly matched (coin flips).
MODELS = ("strong", "even1", "even2", "even3")


def _run(session, *, pair_selection: str | None, evaluators: int = 45, seed: int = 7):
    """Evaluators rate 6 pairs each; the rater prefers 'strong' always, else flips a coin per criterion."""
    rng = random.Random(seed)
    qc = {"enabled": False, **({"pair_selection": pair_selection} if pair_selection else {})}
    study = make_study(session, models=MODELS, n_prompts=8, pairs_per_session=6, qc=qc)
    make_pairs(session, study)
    model_of = {c.id: c.model.name for c in session.scalars(select(Clip).where(Clip.study_id == study.id))}
    per_evaluator: dict[int, list[int]] = defaultdict(list)
    for _ in range(evaluators):
        ev = join(session, invite_token=study.invite_token)
        while (view := next_assignment(session, evaluator_id=ev.id)) is not None:
            per_evaluator[ev.id].append(view.pair_id)
            left, right = model_of[view.left_clip_id], model_of[view.right_clip_id]
            choices = {}
            for c in study.criteria:
                if "strong" in (left, right):
                    choices[c.key] = "left" if left == "strong" else "right"
                else:
                    choices[c.key] = rng.choice(("left", "right", "tie"))
            submit_vote(session, assignment_token=view.token, evaluator_id=ev.id, choices=choices)
    votes = Counter()
    for pair in session.scalars(select(Pair).where(Pair.study_id == study.id)):
        key = tuple(sorted((model_of[pair.clip_a_id], model_of[pair.clip_b_id])))
        votes[key] += pair.votes_count
    return study, per_evaluator, votes


def _lopsided_share(votes: Counter) -> float:
    return sum(n for k, n in votes.items() if "strong" in k) / sum(votes.values())


def test_the_default_is_least_voted_and_spreads_votes_evenly(session):
    study, _, votes = _run(session, pair_selection=None)
    assert qc_settings(study).pair_selection == "least_voted"
    # 45 x 6 = 270 votes over 6 model pairs of 8 pairs each: least-voted first keeps them within a pair's worth.
    assert max(votes.values()) - min(votes.values()) <= 8, votes
    assert abs(_lopsided_share(votes) - 0.5) < 0.05


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_adaptive_spends_votes_on_the_uncertain_pairs_without_repeats_and_balanced(session):
    study, per_evaluator, votes = _run(session, pair_selection="adaptive")
    assert qc_settings(study).pair_selection == "adaptive"
    # Half the model pairs involve 'strong' (never in doubt): Eq. 9 gives them clearly less than half the votes.
    assert _lopsided_share(votes) < 0.43, votes
    # Every model pair still got votes (the first ones least-voted first, then Eq. 9 never starves a pair).
    assert min(votes.values()) >= 4, votes
    # Never a pair twice for one evaluator.
    for pairs in per_evaluator.values():
        assert len(pairs) == len(set(pairs)) == 6
    # Left/right counterbalanced per pair: clip A on the left as often as on the right, +-1.
    sides: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    rows = session.execute(select(Assignment.pair_id, Assignment.left_clip_id, Pair.clip_a_id)
                           .join(Pair, Pair.id == Assignment.pair_id).where(Pair.study_id == study.id)).all()
    for pair_id, left, clip_a in rows:
        sides[pair_id][0 if left == clip_a else 1] += 1
    assert all(abs(a - b) <= 1 for a, b in sides.values()), dict(sides)
