from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.criteria import DEFAULT_CRITERIA
from app.models import Assignment, Clip, Criterion, Pair, Prompt, Study, StudyModel, Vote
from app.services.prompts import PromptSpec
from app.services.studies import (
    DEFAULT_SETTINGS,
    ModelSpec,
    StudyError,
    create_study,
    get_study,
    invite_url,
    list_studies,
    set_status,
    study_progress,
)
from tests.conftest import BACKENDS
from tests.factories import make_evaluator, make_pairs, make_study

MODELS = [ModelSpec("lightning", "4-step", preset="animatediff-lightning-4step", overrides={"steps": 4}),
          ModelSpec("animatediff", "25-step", preset="animatediff")]
PROMPTS = [PromptSpec("nature-001", "a waterfall in a misty forest", "nature", "short", ("water",)),
           PromptSpec("sports-001", "a surfer riding a large wave at sunset", "sports")]


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_create_study_stores_models_criteria_prompts_and_settings(session):
    study = create_study(session, name="Lightning vs AnimateDiff", models=MODELS, prompts=PROMPTS,
                         votes_per_pair=4, pairs_per_session=7, settings={"seeds": [0, 1]})
    session.commit()
    study = get_study(session, study.id)
    assert study.slug == "lightning-vs-animatediff"
    assert study.status == "draft"
    assert (study.votes_per_pair, study.pairs_per_session) == (4, 7)
    assert study.settings == {**DEFAULT_SETTINGS, "seeds": [0, 1]}
    assert [(m.name, m.preset, m.position, m.overrides) for m in study.models] == [
        ("lightning", "animatediff-lightning-4step", 0, {"steps": 4}), ("animatediff", "animatediff", 1, {})]
    assert [c.key for c in study.criteria] == [c.key for c in DEFAULT_CRITERIA]
    prompts = {p.external_id: p for p in session.scalars(select(Prompt).where(Prompt.study_id == study.id))}
    assert set(prompts) == {"nature-001", "sports-001"}
    assert prompts["nature-001"].detail == "short" and prompts["nature-001"].tags == ["water"]
    assert invite_url(study, "https://lab.example/").endswith(study.invite_token)
    assert study.invite_token not in str(study.id)


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_slugs_are_made_unique(session):
    a = create_study(session, name="Same name", models=MODELS, prompts=PROMPTS)
    b = create_study(session, name="Same name", models=MODELS, prompts=PROMPTS)
    c = create_study(session, name="Same name", models=MODELS, prompts=PROMPTS)
    session.commit()
    assert [a.slug, b.slug, c.slug] == ["same-name", "same-name-2", "same-name-3"]
    assert [s.id for s in list_studies(session)] == [c.id, b.id, a.id]


def test_custom_criteria_as_tuples(session):
    study = create_study(session, name="x", models=MODELS, prompts=PROMPTS,
                         criteria=[("sharpness", "Sharpness", "Which is sharper?"), ("fun", "Fun", "")])
    assert [(c.key, c.label, c.position) for c in study.criteria] == [("sharpness", "Sharpness", 0), ("fun", "Fun", 1)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "  "}, "name"),
        ({"models": MODELS[:1]}, "at least two models"),
        ({"models": [ModelSpec("a"), ModelSpec("A")]}, "Two models are called"),
        ({"models": [ModelSpec("a"), ModelSpec("")]}, "Model 2 has no name"),
        ({"prompts": []}, "at least one prompt"),
        ({"prompts": PROMPTS + PROMPTS[:1]}, "repeated: nature-001"),
        ({"votes_per_pair": 0}, "Votes per pair"),
        ({"pairs_per_session": -1}, "Pairs per session"),
        ({"votes_per_pair": 10**11}, "Votes per pair"),  # was stored on SQLite, a 500 on PostgreSQL
        ({"pairs_per_session": 2**31}, "Pairs per session"),
        ({"settings": {"width": 500}}, "multiple of 8"),
        ({"settings": {"seeds": []}}, "seeds must be"),
        ({"settings": {"steps": 4}}, "unknown setting(s) steps"),
        ({"models": [ModelSpec("a", preset="no-such-preset"), ModelSpec("b")]}, "unknown preset 'no-such-preset'"),
        ({"models": [ModelSpec("a", overrides={"frames": 8}), ModelSpec("b")]}, "cannot override frames"),
        ({"settings": {"dtype": "int8"}}, "dtype"),
        ({"criteria": []}, "at least one criterion"),
        ({"criteria": [("Bad Key", "x", "")]}, "Criterion key"),
        ({"criteria": [("a", "A", ""), ("a", "B", "")]}, "unique"),
        ({"redirect_url": "javascript:alert(1)"}, "redirect URL"),
        ({"name": "nul\x00name"}, "NUL characters"),
        ({"settings": {"fps": float("nan")}}, "no NaN"),
        ({"models": [ModelSpec("a", overrides={"steps": float("inf")}), ModelSpec("b")]}, "no NaN"),
        # refused by the prompts service after the study rows were flushed: the savepoint must undo them
        ({"prompts": [PromptSpec("bad id/..", "a cat", "animals")]}, "may only use letters"),
        ({"prompts": [PromptSpec("long", "a very long prompt " * 30, "animals")]}, "CLIP tokens"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(session, kwargs, message):
    args = {"name": "A study", "models": MODELS, "prompts": PROMPTS, **kwargs}
    with pytest.raises(StudyError) as err:
        create_study(session, **args)
    assert message in str(err.value)
    # No rollback here: the caller's transaction must hold nothing of the refused study.
    assert _count(session, Study) == _count(session, StudyModel) == _count(session, Prompt) == 0
    assert _count(session, Criterion) == 0


# Study creation checks presets, overrides and settings with the worker's rules, so a study never holds a model
# that queue_batch would refuse; app.services.generation.validate_models is the generation side's own check.
GENERATION_CASES = [
    ([("a", "demo-smooth", {}), ("b", "demo-jittery", {})], {}, True),
    ([("a", "animatediff-lightning-4step", {"steps": 2, "off_card": True}), ("b", "", {})],
     {"width": 256, "height": 256}, True),
    # Steps other than the preset's card, not marked as an off-card variant (issue 21).
    ([("a", "animatediff-lightning-4step", {"steps": 25}), ("b", "animatediff", {})], {}, False),
    ([("a", "animatediff-lightning-4step", {"guidance": 7.5}), ("b", "animatediff", {})], {}, False),
    ([("a", "no-such-preset", {}), ("b", "animatediff", {})], {}, False),
    ([("a", "animatediff", {"steps": -1}), ("b", "animatediff", {})], {}, False),
    ([("a", "animatediff", {"guidance": 80}), ("b", "animatediff", {})], {}, False),
    ([("a", "animatediff", {"fps": 4}), ("b", "animatediff", {})], {}, False),
    ([("a", "animatediff", {}), ("b", "animatediff", {})], {"height": 260}, False),
    ([("a", "animatediff", {}), ("b", "animatediff", {})], {"frames": 0}, False),
]


@pytest.mark.parametrize(("models", "settings", "ok"), GENERATION_CASES)
def test_study_creation_agrees_with_the_generation_check(session, models, settings, ok):
    from app.services.generation import GenerationError, validate_models

    try:
        validate_models(settings=settings, models=models)
        generation_ok = True
    except GenerationError:
        generation_ok = False
    assert generation_ok is ok
    specs = [ModelSpec(name, preset=preset, overrides=overrides) for name, preset, overrides in models]
    if ok:
        study = create_study(session, name="g", models=specs, prompts=PROMPTS, settings=settings)
        assert [(m.preset, m.overrides) for m in study.models] == [(p, o) for _, p, o in models]
        return
    with pytest.raises(StudyError) as err:
        create_study(session, name="g", models=specs, prompts=PROMPTS, settings=settings)
    assert any(word in str(err.value) for word in ("preset", "steps", "guidance", "override", "multiple of 8",
                                                    "frames"))
    assert _count(session, Study) == _count(session, StudyModel) == _count(session, Prompt) == 0


def test_every_problem_is_reported_at_once(session):
    with pytest.raises(StudyError) as err:
        create_study(session, name="", models=[], prompts=[], votes_per_pair=0)
    assert len(err.value.errors) == 4


def test_status_transitions(session):
    study = create_study(session, name="s", models=MODELS, prompts=PROMPTS)
    with pytest.raises(StudyError, match="draft study cannot be set to closed"):
        set_status(session, study_id=study.id, status="closed")
    assert set_status(session, study_id=study.id, status="open").status == "open"
    assert set_status(session, study_id=study.id, status="open").status == "open"  # idempotent
    assert set_status(session, study_id=study.id, status="closed").status == "closed"
    assert set_status(session, study_id=study.id, status="open").status == "open"  # reopened
    with pytest.raises(StudyError, match="cannot be set to draft"):
        set_status(session, study_id=study.id, status="draft")
    with pytest.raises(StudyError, match="Unknown status"):
        set_status(session, study_id=study.id, status="paused")
    with pytest.raises(StudyError, match="no study with id"):
        set_status(session, study_id=999, status="open")


def add_vote(session, pair: Pair, evaluator, position: int) -> Vote:
    now = datetime.now(UTC)
    assignment = Assignment(evaluator_id=evaluator.id, pair_id=pair.id, position=position,
                            left_clip_id=pair.clip_a_id, right_clip_id=pair.clip_b_id, status="done",
                            shown_at=now, submitted_at=now)
    session.add(assignment)
    session.flush()
    vote = Vote(assignment_id=assignment.id, study_id=pair.study_id, evaluator_id=evaluator.id, pair_id=pair.id,
                shown_at=now, submitted_at=now, time_spent_ms=5000)
    session.add(vote)
    session.flush()
    return vote


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_progress_counts_what_is_stored(session):
    study = make_study(session, n_prompts=3, votes_per_pair=2)  # two models -> one pair per prompt
    pairs = make_pairs(session, study)
    session.add(Clip(study_id=study.id, model_id=study.models[0].id, prompt_id=pairs[0].prompt_id, seed=7,
                     status="failed", error="out of memory"))
    e1, e2, e3 = (make_evaluator(session, study) for _ in range(3))
    e1.completed_at = datetime.now(UTC)
    add_vote(session, pairs[0], e1, 1)
    add_vote(session, pairs[0], e2, 1)
    add_vote(session, pairs[0], e3, 1)  # above target: must not lower the votes still needed
    add_vote(session, pairs[1], e1, 2)
    open_a = Assignment(evaluator_id=e2.id, pair_id=pairs[2].id, position=2, left_clip_id=pairs[2].clip_a_id,
                        right_clip_id=pairs[2].clip_b_id)
    session.add(open_a)
    # An attention check (clip against itself) with a vote: kept out of the pair and vote numbers.
    check = Pair(study_id=study.id, prompt_id=pairs[1].prompt_id, clip_a_id=pairs[1].clip_a_id,
                 clip_b_id=pairs[1].clip_a_id, kind="check_same")
    session.add(check)
    session.flush()
    add_vote(session, check, e3, 2)
    session.commit()

    p = study_progress(session, study_id=study.id)
    assert p["clips"] == {"queued": 0, "running": 0, "done": 6, "failed": 1, "total": 7}
    assert p["pairs"] == 3 and p["check_pairs"] == 1
    assert p["votes"] == 4 and p["check_votes"] == 1
    assert p["votes_target"] == 6
    # pair0 has 3 (>= 2), pair1 has 1 (needs 1), pair2 has 0 (needs 2)
    assert p["pairs_short"] == 2 and p["pairs_complete"] == 1
    assert p["votes_needed"] == 3
    assert p["percent_complete"] == 50.0
    assert (p["evaluators"], p["evaluators_completed"], p["evaluators_flagged"]) == (3, 1, 0)
    assert p["assignments_open"] == 1
    assert p["prompts"] == 3 and p["models"] == 2


def test_progress_of_an_empty_study(session):
    study = create_study(session, name="empty", models=MODELS, prompts=PROMPTS)
    p = study_progress(session, study_id=study.id)
    assert p["pairs"] == p["votes"] == p["votes_needed"] == p["evaluators"] == 0
    assert p["percent_complete"] == 0.0
    with pytest.raises(StudyError):
        study_progress(session, study_id=study.id + 1)


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_a_refused_prompt_leaves_the_transaction_usable(session):
    with pytest.raises(StudyError, match="CLIP tokens"):
        create_study(session, name="Too long", models=MODELS,
                     prompts=[PromptSpec("long", "a very long prompt " * 30, "animals")])
    study = create_study(session, name="Fine", models=MODELS, prompts=PROMPTS)
    session.commit()
    assert [s.name for s in list_studies(session)] == ["Fine"]
    assert _count(session, StudyModel) == 2 and _count(session, Prompt) == 2
    assert study.slug == "fine"
