"""Attention checks: copies made ahead of time, served without repeats, graded by what is obviously true."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from app.media.degrade import decode_gif
from app.media.storage import media_path
from app.models import Clip, Pair
from app.services.attention import (
    CHECK_DEGRADED,
    CHECK_SAME,
    CheckPair,
    QCSettings,
    QCSettingsError,
    check_votes,
    ensure_attention_pairs,
    grade_check,
    pick_check_pair,
    qc_settings,
    validate_qc,
)
from tests.app.services.qc_votes import assign, vote
from tests.factories import make_evaluator, make_pairs, make_study

KEYS = ["text_relevance", "appearance_distortion", "appearance_aesthetics", "motion_naturalness",
        "motion_amplitude", "overall_quality"]


@pytest.fixture
def study(session):
    s = make_study(session, n_prompts=4)
    make_pairs(session, s)
    return s


def _checks(session, study_id, kind=None):
    q = select(Pair).where(Pair.study_id == study_id, Pair.kind.in_([kind] if kind else [CHECK_SAME, CHECK_DEGRADED]))
    return session.scalars(q).all()


def test_creates_copies_and_pairs(session, study):
    created = ensure_attention_pairs(session, study_id=study.id, rng=random.Random(0), n_sources=3)
    assert created == 6
    same, degraded = _checks(session, study.id, CHECK_SAME), _checks(session, study.id, CHECK_DEGRADED)
    assert len(same) == len(degraded) == 3
    for pair in same + degraded:
        original, copy = pair.clip_a, pair.clip_b
        assert original.origin != "degraded" and original.variant == ""
        assert copy.origin == "degraded" and copy.source_clip_id == original.id and copy.status == "done"
        assert (copy.model_id, copy.prompt_id, copy.seed) == (original.model_id, original.prompt_id, original.seed)
        assert copy.prompt_id == pair.prompt_id
        # its own opaque handle and file: the two sides of a check look like any pair's two sides
        assert copy.media_token != original.media_token and copy.storage_name != original.storage_name
        assert (copy.width, copy.height, copy.frames, copy.fps) == (original.width, original.height,
                                                                    original.frames, original.fps)
        src, out = media_path(original.storage_name).read_bytes(), media_path(copy.storage_name).read_bytes()
        if pair.kind == CHECK_SAME:
            # same pixels and timing, different bytes (no size or ETag tell)
            assert copy.variant == "duplicate" and out != src and copy.sha256 != original.sha256
            src_frames, out_frames = decode_gif(src), decode_gif(out)
            assert out_frames.durations_ms == src_frames.durations_ms
            assert all(np.array_equal(a, b) for a, b in zip(src_frames.frames, out_frames.frames, strict=True))
        else:
            assert copy.variant in ("frozen", "noise", "scrambled") and out != src
            assert Image.open(io.BytesIO(out)).n_frames == Image.open(io.BytesIO(src)).n_frames
    # check sources come in both kinds, and the three sources get three different variants
    assert {p.clip_a_id for p in same} == {p.clip_a_id for p in degraded}
    assert len({p.clip_b.variant for p in degraded}) == 3


def test_is_idempotent_and_tops_up(session, study):
    assert ensure_attention_pairs(session, study_id=study.id, rng=random.Random(1), n_sources=2) == 4
    n_clips = session.scalar(select(func.count(Clip.id)))
    assert ensure_attention_pairs(session, study_id=study.id, rng=random.Random(2), n_sources=2) == 0
    assert session.scalar(select(func.count(Clip.id))) == n_clips
    assert ensure_attention_pairs(session, study_id=study.id, rng=random.Random(3), n_sources=3) == 2
    # a lost pair is repaired from the existing copies, without a new file
    session.delete(_checks(session, study.id, CHECK_SAME)[0])
    session.flush()
    n_clips = session.scalar(select(func.count(Clip.id)))
    assert ensure_attention_pairs(session, study_id=study.id, rng=random.Random(4), n_sources=3) == 1
    assert session.scalar(select(func.count(Clip.id))) == n_clips


def test_copies_are_never_sources(session, study):
    ensure_attention_pairs(session, study_id=study.id, n_sources=100)
    real = session.scalar(select(func.count(Clip.id)).where(Clip.origin != "degraded"))
    assert len(_checks(session, study.id)) == 2 * real  # every real clip once, never a copy of a copy


def test_default_pool_covers_a_session(session, study):
    ensure_attention_pairs(session, study_id=study.id)
    # pairs_per_session=3, rate 0.1 -> at least 3 sources, 6 check pairs
    assert len(_checks(session, study.id)) == 6


def test_pick_never_repeats_a_pair_or_a_source(session, study):
    ensure_attention_pairs(session, study_id=study.id, rng=random.Random(0), n_sources=3)
    ev = make_evaluator(session, study)
    rng = random.Random(5)
    sources = []
    for _ in range(3):
        pair = session.get(Pair, pick_check_pair(session, evaluator_id=ev.id, study_id=study.id, rng=rng))
        assert pair is not None and pair.kind in (CHECK_SAME, CHECK_DEGRADED)
        assign(session, pair=pair, evaluator=ev)
        sources.append(pair.clip_a_id)
    assert len(set(sources)) == 3
    assert pick_check_pair(session, evaluator_id=ev.id, study_id=study.id, rng=rng) is None
    # another evaluator still has the whole pool
    other = make_evaluator(session, study)
    assert pick_check_pair(session, evaluator_id=other.id, study_id=study.id, rng=rng) is not None


def test_pick_prefers_least_shown_and_ignores_normal_pairs(session, study):
    ensure_attention_pairs(session, study_id=study.id, rng=random.Random(0), n_sources=1)
    same, degraded = _checks(session, study.id, CHECK_SAME)[0], _checks(session, study.id, CHECK_DEGRADED)[0]
    same.assigned_count = 5
    session.flush()
    ev = make_evaluator(session, study)
    # the evaluator has seen the source clip in a normal pair: that does not rule it out
    normal = session.scalars(select(Pair).where(Pair.kind == "normal", Pair.clip_a_id == same.clip_a_id)).first()
    if normal is not None:
        assign(session, pair=normal, evaluator=ev)
    assert pick_check_pair(session, evaluator_id=ev.id, study_id=study.id, rng=random.Random(1)) == degraded.id
    assert pick_check_pair(session, evaluator_id=make_evaluator(session, study).id, study_id=study.id + 999,
                           rng=random.Random(1)) is None


def _pair(kind, variant=""):
    return CheckPair(id=1, kind=kind, clip_a_id=1, variant=variant)


def test_grade_same_clip():
    pair = _pair(CHECK_SAME, "duplicate")
    assert grade_check(pair, dict.fromkeys(KEYS, "tie"), left_clip_id=1) == []
    reasons = grade_check(pair, {**dict.fromkeys(KEYS, "tie"), "overall_quality": "left"}, left_clip_id=2)
    assert len(reasons) == 1 and "same clip twice" in reasons[0] and "1 of 6" in reasons[0]
    assert "overall quality" in reasons[0]


@pytest.mark.parametrize(("variant", "must_win"), [
    ("noise", {"appearance_distortion", "overall_quality"}),
    ("frozen", {"motion_amplitude", "overall_quality"}),
    ("scrambled", {"motion_naturalness", "overall_quality"}),
])
def test_grade_degraded_maps_sides_to_the_original(variant, must_win):
    pair = _pair(CHECK_DEGRADED, variant)
    for left_clip_id, original_side, copy_side in ((1, "left", "right"), (2, "right", "left")):
        good = {k: (original_side if k in must_win else "tie") for k in KEYS}
        assert grade_check(pair, good, left_clip_id=left_clip_id) == []
        for key in must_win:
            for wrong in ("tie", copy_side):
                reasons = grade_check(pair, {**good, key: wrong}, left_clip_id=left_clip_id)
                assert len(reasons) == 1 and key.replace("_", " ") in reasons[0], (variant, key, wrong)
        # everything on the original's side passes; everything on the copy's side fails
        assert grade_check(pair, dict.fromkeys(KEYS, original_side), left_clip_id=left_clip_id) == []
        assert grade_check(pair, dict.fromkeys(KEYS, copy_side), left_clip_id=left_clip_id)


def test_grade_with_custom_criteria_and_normal_pairs():
    pair = _pair(CHECK_DEGRADED, "noise")
    assert grade_check(pair, {"sharpness": "left", "fun": "tie"}, left_clip_id=1) == []
    assert grade_check(pair, {"sharpness": "right", "fun": "left"}, left_clip_id=1)
    assert grade_check(_pair("normal"), dict.fromkeys(KEYS, "left"), left_clip_id=1) == []


def test_check_votes_reads_what_was_clicked(session, study):
    ensure_attention_pairs(session, study_id=study.id, rng=random.Random(0), n_sources=1)
    ev = make_evaluator(session, study)
    normal = session.scalars(select(Pair).where(Pair.kind == "normal")).first()
    vote(session, pair=normal, evaluator=ev, sides="left")
    degraded = _checks(session, study.id, CHECK_DEGRADED)[0]
    vote(session, pair=degraded, evaluator=ev, sides="left", a_left=False)  # the copy was left: all wrong
    [(pair, choices, left)] = check_votes(session, evaluator_id=ev.id)
    assert pair.id == degraded.id and left == degraded.clip_b_id and choices == dict.fromkeys(KEYS, "left")
    assert grade_check(pair, choices, left)


def test_qc_settings_defaults_and_overrides(session):
    study = make_study(session, pairs_per_session=12, sessions_per_invite=40)
    s = qc_settings(study)
    assert s.enabled and s.attention_rate == 0.1 and s.min_seconds_per_vote == 3.0 and s.max_failed_checks == 1
    assert (s.max_pairs_per_session, s.sessions_per_invite, s.join_rate_limit_per_minute) == (12, 40, 30)
    study.qc = {"attention_rate": 0.2, "min_vote_seconds": 2, "enabled": False, "bogus": 1,
                "straightline_share": "nonsense"}
    s = qc_settings(study)
    assert (s.attention_rate, s.min_seconds_per_vote, s.enabled) == (0.2, 2.0, False)
    assert s.straightline_share == QCSettings().straightline_share  # a bad stored value falls back


def test_validate_qc_reports_every_problem():
    assert validate_qc({"attention_rate": "0.25", "max_failed_checks": 2}) == {"attention_rate": 0.25,
                                                                              "max_failed_checks": 2}
    with pytest.raises(QCSettingsError) as err:
        validate_qc({"attention_rate": 0.9, "max_failed_checks": 1.5, "enabled": "yes", "colour": "red"})
    assert len(err.value.errors) == 4
    assert any("attention_rate must be between 0 and 0.5" in e for e in err.value.errors)
    assert any("unknown QC setting 'colour'" in e for e in err.value.errors)


def test_a_check_never_repeats_a_prompt_the_evaluator_has_seen_while_others_remain(session, study):
    # Blinding (issue 5): a check shares its prompt and its original's clip URL with a normal pair; served
    # after (or before) that pair, the repeat would mark it as a check.
    from app.services.assignments import _pick_pair_id

    ensure_attention_pairs(session, study_id=study.id, rng=random.Random(0), n_sources=2)
    check_prompts = {p.prompt_id for p in _checks(session, study.id)}
    assert len(check_prompts) == 2
    normals = session.scalars(select(Pair).where(Pair.study_id == study.id, Pair.kind == "normal")).all()
    for seed in range(20):
        ev = make_evaluator(session, study)
        seen = next(p for p in normals if p.prompt_id in check_prompts)
        assign(session, pair=seen, evaluator=ev)
        check = session.get(Pair, pick_check_pair(session, evaluator_id=ev.id, study_id=study.id,
                                                  rng=random.Random(seed)))
        assert check.prompt_id != seen.prompt_id
        assign(session, pair=check, evaluator=ev)
        for _ in range(len(normals) - 2):  # every normal pair but the one on the check's prompt
            pair_id = _pick_pair_id(session, study_id=study.id, evaluator_id=ev.id)
            assert session.get(Pair, pair_id).prompt_id != check.prompt_id
            assign(session, pair=session.get(Pair, pair_id), evaluator=ev)
        # only that one is left: it is still served rather than ending the session early
        last = session.get(Pair, _pick_pair_id(session, study_id=study.id, evaluator_id=ev.id))
        assert last.prompt_id == check.prompt_id
