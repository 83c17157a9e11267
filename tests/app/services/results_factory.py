"""Votes written straight to the tables, for the results tests (the vote service is tested on its own).

Each vote records its assignment (which clip was left) and its choices both as clicked and in model space,
exactly as ``app.models.VoteChoice`` documents, so the results code is tested against the real schema.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Assignment, Criterion, Evaluator, Pair, Study, Vote, VoteChoice
from tests.factories import make_evaluator, make_pairs, make_study

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def cast_vote(session: Session, *, pair: Pair, evaluator: Evaluator, choices: dict[str, str], a_left: bool,
              submitted_at: datetime | None = None, time_ms: int = 9000) -> Vote:
    """choices: criterion key -> 'left' | 'right' | 'tie' (what the evaluator clicked)."""
    position = (session.scalar(select(func.count(Assignment.id)).where(Assignment.evaluator_id == evaluator.id))
                or 0) + 1
    left, right = (pair.clip_a_id, pair.clip_b_id) if a_left else (pair.clip_b_id, pair.clip_a_id)
    submitted_at = submitted_at or T0 + timedelta(minutes=position)
    shown_at = submitted_at - timedelta(milliseconds=time_ms)
    assignment = Assignment(evaluator_id=evaluator.id, pair_id=pair.id, position=position, left_clip_id=left,
                            right_clip_id=right, status="done", shown_at=shown_at, submitted_at=submitted_at)
    session.add(assignment)
    session.flush()
    vote = Vote(assignment_id=assignment.id, study_id=pair.study_id, evaluator_id=evaluator.id, pair_id=pair.id,
                shown_at=shown_at, submitted_at=submitted_at, time_spent_ms=time_ms)
    session.add(vote)
    session.flush()
    criteria = {c.key: c for c in session.scalars(select(Criterion).where(Criterion.study_id == pair.study_id))}
    model_a, model_b = pair.clip_a.model_id, pair.clip_b.model_id
    for key, side in choices.items():
        if side == "tie":
            outcome = "tie"
        else:
            outcome = "a" if (side == "left") == a_left else "b"
        winner = {"a": model_a, "b": model_b, "tie": None}[outcome]
        session.add(VoteChoice(vote_id=vote.id, criterion_id=criteria[key].id, side=side, model_a_id=model_a,
                               model_b_id=model_b, outcome=outcome, winner_model_id=winner))
    pair.votes_count += 1
    session.flush()
    return vote


def voted_study(session: Session, *, n_prompts: int = 6, n_evaluators: int = 5, p_b: float = 0.75,
                p_tie: float = 0.15, seed: int = 1, models: tuple[str, ...] = ("lightning", "animatediff"),
                themes: tuple[str, ...] = ("nature", "sports")) -> Study:
    """A study where every evaluator votes on every pair; model_b (the second model) wins with prob. p_b."""
    rng = random.Random(seed)
    study = make_study(session, models=models, n_prompts=n_prompts, themes=themes)
    pairs = make_pairs(session, study)
    keys = [c.key for c in study.criteria]
    minute = 0
    for _ in range(n_evaluators):
        ev = make_evaluator(session, study)
        for pair in pairs:
            a_left = rng.random() < 0.5
            choices = {}
            for key in keys:
                r = rng.random()
                outcome = "tie" if r < p_tie else ("b" if rng.random() < p_b else "a")
                if outcome == "tie":
                    choices[key] = "tie"
                else:
                    choices[key] = "left" if (outcome == "a") == a_left else "right"
            minute += 7
            cast_vote(session, pair=pair, evaluator=ev, choices=choices, a_left=a_left,
                      submitted_at=T0 + timedelta(minutes=minute), time_ms=4000 + rng.randrange(8000))
    session.flush()
    return study


def swarm_study(session: Session, *, swarm: int, honest: int = 10, n_prompts: int = 12) -> Study:
    """``honest`` sessions on their own addresses, each splitting its votes evenly; ``swarm`` sessions from
    one address, each always choosing lightning."""
    study = make_study(session, n_prompts=n_prompts)
    pairs = make_pairs(session, study)
    keys = [c.key for c in study.criteria]
    minute = 0
    people = [(make_evaluator(session, study, ip_hash=f"honest-{i}", user_agent="UA"), i) for i in range(honest)]
    people += [(make_evaluator(session, study, ip_hash="swarm", user_agent="bot"), None) for _ in range(swarm)]
    for ev, i in people:
        for n, pair in enumerate(pairs):
            # pair.clip_a is lightning's clip; honest raters split each prompt's votes evenly between the models
            wants_a = i is None or (n + i) % 2 == 0
            a_left = (n // 2) % 2 == 0  # counterbalanced: nobody straight-lines a side
            minute += 1
            cast_vote(session, pair=pair, evaluator=ev, a_left=a_left, submitted_at=T0 + timedelta(minutes=minute),
                      choices=dict.fromkeys(keys, "left" if wants_a == a_left else "right"))
    session.commit()
    return study
