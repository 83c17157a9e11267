"""The vote frame: the contract's columns, model-space winners, pseudonyms, no attention checks."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select

from app.criteria import DEFAULT_CRITERIA
from app.models import Clip, Pair, Vote
from app.services.results_data import (
    VOTE_COLUMNS,
    evaluator_rows,
    load_vote_frame,
    model_costs,
    pseudonym,
    vote_fingerprint,
)
from tests.app.services.results_factory import cast_vote, voted_study
from tests.conftest import BACKENDS
from tests.factories import make_clip, make_evaluator, make_pairs, make_study

KEYS = [c.key for c in DEFAULT_CRITERIA]


def _one_pair(session):
    study = make_study(session, n_prompts=1)
    (pair,) = make_pairs(session, study)
    return study, pair


def test_empty_study_gives_empty_frame_with_contract_columns(session):
    study = make_study(session)
    frame = load_vote_frame(session, study_id=study.id)
    assert list(frame.columns) == list(VOTE_COLUMNS)
    assert frame.empty
    assert str(frame["submitted_at"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_winner_is_in_model_space_when_clip_b_was_on_the_left(session):
    study, pair = _one_pair(session)
    ev = make_evaluator(session, study, public_id="evaluator-public-id")
    # clip_b (animatediff) shown on the left and the evaluator clicks "left" on every criterion except a tie.
    choices = dict.fromkeys(KEYS, "left") | {"motion_amplitude": "tie", "overall_quality": "right"}
    vote = cast_vote(session, pair=pair, evaluator=ev, choices=choices, a_left=False, time_ms=12345)
    frame = load_vote_frame(session, study_id=study.id)
    assert list(frame.columns) == list(VOTE_COLUMNS)
    assert len(frame) == len(KEYS)
    assert list(frame["criterion"]) == KEYS  # criterion order as the study lists them
    by = frame.set_index("criterion")
    assert (frame["model_a"] == "lightning").all() and (frame["model_b"] == "animatediff").all()
    assert (frame["left_model"] == "animatediff").all()
    assert by.at["text_relevance", "side"] == "left"
    assert by.at["text_relevance", "winner"] == "model_b"
    assert by.at["motion_amplitude", "winner"] == "tie"
    assert by.at["overall_quality", "winner"] == "model_a"
    assert (frame["vote_id"] == vote.id).all()
    assert (frame["time_spent_ms"] == 12345).all()
    assert (frame["evaluator"] == pseudonym("evaluator-public-id")).all()
    assert "evaluator-public-id" not in frame.to_csv()
    assert frame["prompt"].iloc[0] == "p000" and frame["theme"].iloc[0] == "nature"
    assert str(frame["submitted_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["flagged"].dtype == bool and not frame["flagged"].any()


def test_winner_when_clip_a_was_on_the_left(session):
    study, pair = _one_pair(session)
    ev = make_evaluator(session, study)
    cast_vote(session, pair=pair, evaluator=ev, choices=dict.fromkeys(KEYS, "left"), a_left=True)
    frame = load_vote_frame(session, study_id=study.id)
    assert (frame["left_model"] == "lightning").all()
    assert (frame["winner"] == "model_a").all()


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_attention_checks_are_excluded_and_flags_carried(session):
    study, pair = _one_pair(session)
    degraded = make_clip(session, model=study.models[0], prompt=pair.prompt, seed=1)
    degraded.variant = "frozen"
    check = Pair(study_id=study.id, prompt_id=pair.prompt_id, clip_a_id=pair.clip_a_id, clip_b_id=degraded.id,
                 kind="check_degraded")
    session.add(check)
    session.flush()
    flagged = make_evaluator(session, study, flagged=True, flag_reasons=["failed attention checks"])
    cast_vote(session, pair=pair, evaluator=flagged, choices=dict.fromkeys(KEYS, "tie"), a_left=True)
    cast_vote(session, pair=check, evaluator=flagged, choices=dict.fromkeys(KEYS, "left"), a_left=True)
    frame = load_vote_frame(session, study_id=study.id)
    assert len(frame) == len(KEYS)
    assert frame["flagged"].all()
    rows = evaluator_rows(session, study_id=study.id)
    assert rows[0]["votes"] == 2 and rows[0]["flagged"] and rows[0]["flag_reasons"] == ["failed attention checks"]


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_incremental_load_and_fingerprint(session):
    study = voted_study(session, n_prompts=2, n_evaluators=2)
    full = load_vote_frame(session, study_id=study.id)
    fp = vote_fingerprint(session, study_id=study.id)
    assert fp.votes == full["vote_id"].nunique() == 4
    assert fp.max_vote_id == full["vote_id"].max()
    tail = load_vote_frame(session, study_id=study.id, after_vote_id=int(full["vote_id"].iloc[0]))
    assert len(tail) == len(full) - len(KEYS)
    pd.testing.assert_frame_equal(tail.reset_index(drop=True), full.iloc[len(KEYS):].reset_index(drop=True))
    ev = make_evaluator(session, study)
    ev.flagged = True
    session.flush()
    assert vote_fingerprint(session, study_id=study.id).flagged != fp.flagged


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_model_costs_are_medians_of_recorded_seconds(session):
    study, pair = _one_pair(session)
    for seconds, clip_id in ((2.0, pair.clip_a_id), (30.0, pair.clip_b_id)):
        clip = session.get(Clip, clip_id)
        clip.wall_seconds, clip.encode_seconds = seconds, 1.0
        clip.denoise_seconds, clip.decode_seconds = seconds - 1.5, 0.5
    session.flush()
    costs = {c["model"]: c for c in model_costs(session, study_id=study.id)}
    assert costs["lightning"]["median_wall_seconds"] == 2.0
    assert costs["animatediff"]["median_wall_seconds"] == 30.0
    # The model's time on the device: denoise + decode, the GIF encoding left out.
    assert costs["lightning"]["median_model_seconds"] == 1.0
    assert costs["animatediff"]["median_model_seconds"] == 29.0
    assert costs["animatediff"]["timed_clips"] == 1


def test_votes_through_the_evaluator_services_land_in_the_frame_in_model_space(session):
    """End to end with H1's services: what the evaluator clicked, mapped through the assignment's left clip."""
    from app.models import Assignment, Study
    from app.services.assignments import join, next_assignment
    from app.services.votes import submit_vote

    study = make_study(session, n_prompts=3, pairs_per_session=3)
    make_pairs(session, study)
    session.commit()
    invite = session.get(Study, study.id).invite_token
    clicked: dict[int, str] = {}
    for _ in range(2):
        ev = join(session, invite_token=invite)
        while (assignment := next_assignment(session, evaluator_id=ev.id)) is not None:
            side = "left" if assignment.position % 2 else "right"
            submit_vote(session, assignment_token=assignment.token, evaluator_id=ev.id,
                        choices=dict.fromkeys(KEYS, side) | {"motion_amplitude": "tie"})
            clicked[assignment.id] = side
        session.commit()
    frame = load_vote_frame(session, study_id=study.id)
    assert len(frame) == 6 * len(KEYS)
    for vote_id, rows in frame.groupby("vote_id"):
        vote = session.get(Vote, int(vote_id))
        assignment = session.get(Assignment, vote.assignment_id)
        pair = session.get(Pair, vote.pair_id)
        side = clicked[assignment.id]
        clicked_clip = assignment.left_clip_id if side == "left" else assignment.right_clip_id
        expected = "model_a" if clicked_clip == pair.clip_a_id else "model_b"
        decided = rows[rows["criterion"] != "motion_amplitude"]
        assert (decided["side"] == side).all() and (decided["winner"] == expected).all()
        assert rows.loc[rows["criterion"] == "motion_amplitude", "winner"].item() == "tie"
        left_model = session.get(Clip, assignment.left_clip_id).model.name
        assert (rows["left_model"] == left_model).all()


def _set_levels(session, study, level_of):
    """Give every real clip a served level and PSNR: ``level_of(clip, i)`` -> (level, psnr)."""
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")
                            .order_by(Clip.id)).all()
    for i, clip in enumerate(clips):
        clip.origin = "generated"
        clip.lossy_level, clip.psnr_db = level_of(clip, i)
    session.commit()


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_compression_warns_when_one_model_is_always_at_10_and_the_other_at_30(session):
    """The audit's case, silent before: no clip at the study's mildest level was compared, only shares."""
    from app.services.results_data import compression_by_model

    study = voted_study(session, n_prompts=4, n_evaluators=2)
    a, b = study.models[0], study.models[1]
    _set_levels(session, study, lambda c, i: (10, 41.0) if c.model_id == a.id else (30, 36.0))
    out = compression_by_model(session, study_id=study.id)
    rows = {r["model"]: r for r in out["models"]}
    assert (rows[a.name]["median_level"], rows[b.name]["median_level"]) == (10.0, 30.0)
    cmp = out["comparisons"][0]
    assert (cmp["pairs"], cmp["a_harsher"], cmp["b_harsher"]) == (4, 0, 4)
    assert out["warning"].startswith(f"{b.name}'s clip was served at a harsher GIF lossy level than {a.name}'s in "
                                     "4 of 4 pairs")
    assert {(p["level_a"], p["level_b"]) for p in out["pairs"]} == {(10, 30)}

    # Clips stored without lossy compression count as level 0 against a rival's 5: still a lean.
    _set_levels(session, study, lambda c, i: (0, None) if c.model_id == a.id else (5, 44.0))
    out = compression_by_model(session, study_id=study.id)
    assert {r["model"]: r["without_lossy"] for r in out["models"]} == {a.name: 4, b.name: 0}
    assert out["warning"] and f"{b.name}'s clip was served at a harsher" in out["warning"]

    # One level per pair (what the worker does now) and PSNR within a dB: nothing to warn about.
    _set_levels(session, study, lambda c, i: (20, 38.0 + (i % 2) * 0.5))
    out = compression_by_model(session, study_id=study.id)
    assert out["warning"] is None and out["comparisons"][0]["a_harsher"] == out["comparisons"][0]["b_harsher"] == 0

    # The same level, but one model's content loses far more to it: warned on PSNR.
    _set_levels(session, study, lambda c, i: (20, 41.0) if c.model_id == a.id else (20, 36.5))
    out = compression_by_model(session, study_id=study.id)
    assert out["warning"].startswith(f"At the same lossy level, {b.name}'s clips kept 4.5 dB less PSNR")


def test_compression_reads_levels_recorded_before_the_column(session):
    """Clips generated before levels had a column: generation.gif_lossy_level, where null meant no lossy step."""
    from app.services.results_data import compression_by_model

    study = voted_study(session, n_prompts=4, n_evaluators=2)
    first = study.models[0].id
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")):
        clip.origin = "generated"
        clip.generation = {**(clip.generation or {}), "gif_lossy_level": None if clip.model_id == first else 10}
    session.commit()
    out = compression_by_model(session, study_id=study.id)
    assert [r["without_lossy"] for r in out["models"]] == [4, 0]
    assert out["warning"] is not None
