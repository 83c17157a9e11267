"""ensure_pairs: only complete prompt/seeds, every model pair, clip_a by model position, idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Clip, Pair
from app.services.pairs import ensure_pairs
from tests.conftest import BACKENDS
from tests.factories import make_clip, make_study


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_pairs_only_when_every_model_is_done(session):
    study = make_study(session, models=("fast", "slow"), n_prompts=2)
    fast, slow = study.models
    p0, p1 = sorted(study.prompts, key=lambda p: p.id)
    make_clip(session, model=fast, prompt=p0)
    make_clip(session, model=fast, prompt=p1)
    slow_p1 = make_clip(session, model=slow, prompt=p1)
    slow_p1.status = "running"
    session.flush()
    assert ensure_pairs(session, study_id=study.id) == 0  # p0 lacks a slow clip, p1's is not done

    slow_p0 = make_clip(session, model=slow, prompt=p0)
    assert ensure_pairs(session, study_id=study.id) == 1
    assert ensure_pairs(session, study_id=study.id) == 0  # idempotent
    pair = session.scalars(select(Pair)).one()
    assert (pair.prompt_id, pair.clip_b_id, pair.kind) == (p0.id, slow_p0.id, "normal")
    assert session.get(Clip, pair.clip_a_id).model_id == fast.id

    slow_p1.status = "done"
    session.flush()
    assert ensure_pairs(session, study_id=study.id, prompt_id=p0.id) == 0  # limited to p0
    assert ensure_pairs(session, study_id=study.id, prompt_id=p1.id) == 1
    session.commit()
    assert len(session.scalars(select(Pair)).all()) == 2


def test_three_models_give_every_pair_ordered_by_position(session):
    study = make_study(session, models=("m0", "m1", "m2"), n_prompts=1)
    prompt = study.prompts[0]
    # Positions decide clip_a, not insertion order or ids.
    m0, m1, m2 = study.models
    m0.position, m2.position = 5, -1
    session.flush()
    clips = {m.name: make_clip(session, model=m, prompt=prompt) for m in (m0, m1, m2)}
    assert ensure_pairs(session, study_id=study.id) == 3
    got = {(session.get(Clip, p.clip_a_id).model.name, session.get(Clip, p.clip_b_id).model.name)
           for p in session.scalars(select(Pair))}
    assert got == {("m2", "m1"), ("m2", "m0"), ("m1", "m0")}
    assert len(clips) == 3


def test_seeds_pair_separately_and_degraded_copies_are_ignored(session):
    study = make_study(session, models=("a", "b"), n_prompts=1)
    prompt = study.prompts[0]
    a, b = study.models
    for seed in (0, 1):
        make_clip(session, model=a, prompt=prompt, seed=seed)
    make_clip(session, model=b, prompt=prompt, seed=1)
    degraded = make_clip(session, model=b, prompt=prompt, seed=0)
    degraded.variant = "frozen"
    session.flush()
    assert ensure_pairs(session, study_id=study.id) == 1
    pair = session.scalars(select(Pair)).one()
    assert session.get(Clip, pair.clip_a_id).seed == 1


def test_single_model_study_makes_no_pairs(session):
    study = make_study(session, models=("only",), n_prompts=1)
    make_clip(session, model=study.models[0], prompt=study.prompts[0])
    assert ensure_pairs(session, study_id=study.id) == 0
