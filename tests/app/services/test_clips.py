"""import_gif_folder: all-or-nothing validation, format consistency report, sanitizing, idempotent re-import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.media.gif import decode_frames, inspect_gif
from app.media.storage import media_path, media_root
from app.models import Clip, Pair
from app.services.clips import ClipImportError, Signature, import_gif_folder, remove_media
from tests.factories import NO_CHECKS, gif_bytes, make_evaluator, make_study


def _write(folder, model, prompt_id, data, name=None):
    d = folder / model
    d.mkdir(parents=True, exist_ok=True)
    (d / (name or f"{prompt_id}.gif")).write_bytes(data)


def _fill(folder, study, **gif_kw):
    for m in study.models:
        for p in study.prompts:
            _write(folder, m.name, p.external_id, gif_bytes(**gif_kw))


def _counts(session):
    return (session.scalar(select(func.count()).select_from(Clip)),
            session.scalar(select(func.count()).select_from(Pair)),
            len([p for p in media_root().iterdir() if not p.name.startswith(".")]))


def test_import_creates_clips_and_pairs_and_strips_metadata(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=2, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study, frames=6, size=(40, 40), fps=10)
    tagged = gif_bytes(frames=6, size=(40, 40), fps=10)
    tagged = tagged[:-1] + b"\x21\xfe\x0dmodel: slow-2" + b"\x00\x3b"  # a comment naming the model
    _write(folder, "slow", "p000", tagged)

    result = import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()
    assert (result.created, result.replaced, result.unchanged, result.pairs_created) == (4, 0, 0, 2)
    assert result.per_model == {"fast": 2, "slow": 2}
    clips = session.scalars(select(Clip)).all()
    assert {(c.origin, c.status, c.frames, c.width, c.height, c.fps) for c in clips} == {
        ("imported", "done", 6, 40, 40, 10.0)}
    for clip in clips:
        data = media_path(clip.storage_name).read_bytes()
        assert b"slow" not in data and "p00" not in clip.storage_name
        assert inspect_gif(data).extensions == ("app:NETSCAPE2.0",)
        assert clip.size_bytes == len(data)


def test_reimport_is_idempotent_and_replace_needs_flag(session, tmp_path):
    study = make_study(session, models=("a", "b"), n_prompts=1, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study)
    import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()
    before = _counts(session)

    again = import_gif_folder(session, study_id=study.id, folder=folder)
    assert (again.created, again.unchanged, again.pairs_created) == (0, 2, 0)
    assert _counts(session) == before

    _write(folder, "b", "p000", gif_bytes(colour=(0, 200, 0)))
    with pytest.raises(ClipImportError, match="pass --replace"):
        import_gif_folder(session, study_id=study.id, folder=folder)
    session.rollback()
    assert _counts(session) == before

    old = session.scalars(select(Clip).join(Clip.model).where(Clip.model.has(name="b"))).one().storage_name
    res = import_gif_folder(session, study_id=study.id, folder=folder, replace=True)
    session.commit()
    remove_media(res.obsolete_files)
    assert (res.replaced, res.unchanged) == (1, 1)
    assert res.obsolete_files == [(old, "local")] and not media_path(old).exists()
    assert _counts(session)[:2] == before[:2]


def test_replace_refused_once_a_clip_has_votes(session, tmp_path):
    from datetime import UTC, datetime

    from app.models import Assignment, Vote

    study = make_study(session, models=("a", "b"), n_prompts=1, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study)
    import_gif_folder(session, study_id=study.id, folder=folder)
    pair = session.scalars(select(Pair)).one()
    ev = make_evaluator(session, study)
    asg = Assignment(evaluator_id=ev.id, pair_id=pair.id, position=1, left_clip_id=pair.clip_a_id,
                     right_clip_id=pair.clip_b_id, status="done")
    session.add(asg)
    session.flush()
    session.add(Vote(assignment_id=asg.id, study_id=study.id, evaluator_id=ev.id, pair_id=pair.id,
                     shown_at=datetime.now(UTC), time_spent_ms=5000))
    session.commit()
    _write(folder, "a", "p000", gif_bytes(colour=(0, 0, 250)))
    with pytest.raises(ClipImportError, match="already has votes"):
        import_gif_folder(session, study_id=study.id, folder=folder, replace=True)


def test_mismatched_frame_count_refuses_the_whole_batch_with_a_report(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=3, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study, frames=8)
    _write(folder, "slow", "p001", gif_bytes(frames=5))
    _write(folder, "slow", "p002", gif_bytes(frames=8, size=(48, 32)))
    before = _counts(session)
    with pytest.raises(ClipImportError) as exc:
        import_gif_folder(session, study_id=study.id, folder=folder)
    err = exc.value
    assert err.expected.frames == 8 and (err.expected.width, err.expected.height) == (32, 32)
    rows = {(m.model, m.file): m.differs for m in err.mismatches}
    assert rows == {("slow", "slow/p001.gif"): ["frames 5 vs 8"],
                    ("slow", "slow/p002.gif"): ["size 48x32 vs 32x32"]}
    assert "2 file(s) differ" in str(err)
    session.rollback()
    assert _counts(session) == before


def test_new_files_must_match_clips_already_stored(session, tmp_path):
    study = make_study(session, models=("a", "b"), n_prompts=2, qc=NO_CHECKS)
    first = tmp_path / "first"
    for m in study.models:
        _write(first, m.name, "p000", gif_bytes(fps=8))
    import_gif_folder(session, study_id=study.id, folder=first)
    second = tmp_path / "second"
    for m in study.models:
        _write(second, m.name, "p001", gif_bytes(fps=12.5))  # 80 ms frames
    with pytest.raises(ClipImportError) as exc:
        import_gif_folder(session, study_id=study.id, folder=second)
    assert "already in the study" in exc.value.errors[-1]
    assert {tuple(m.differs) for m in exc.value.mismatches} == {("fps 12.5 vs 8.33",)}


def test_every_bad_file_is_reported_and_nothing_changes(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=2, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study)
    _write(folder, "fast", "p000", b"GIF89a not really")  # undecodable
    _write(folder, "fast", "p001", gif_bytes(frames=1))  # still image
    _write(folder, "slow", "nope", gif_bytes())  # unknown prompt
    _write(folder, "slow", "p000", b"text", name="notes.txt")  # not a gif
    _write(folder, "Fast", "p000", gif_bytes())  # unknown model (case)
    (folder / "stray.gif").write_bytes(gif_bytes())
    with pytest.raises(ClipImportError) as exc:
        import_gif_folder(session, study_id=study.id, folder=folder)
    text = "\n".join(exc.value.errors)
    for expected in ("fast/p000.gif:", "fast/p001.gif: a still image", "slow/nope.gif: no prompt with id 'nope'",
                     "slow/notes.txt: not a clip (.gif, .mp4 or .webm)", "Fast/: no model of that name",
                     "did you mean 'fast'",
                     "stray.gif: clips go in one sub-folder per model"):
        assert expected in text, expected
    assert _counts(session) == (0, 0, 0)


def test_partial_import_waits_for_the_other_model(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=1, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _write(folder, "fast", "p000", gif_bytes())
    res = import_gif_folder(session, study_id=study.id, folder=folder)
    assert (res.created, res.pairs_created) == (1, 0)
    assert any("no folder for model(s) slow" in w for w in res.warnings)
    _write(folder, "slow", "p000", gif_bytes())
    res = import_gif_folder(session, study_id=study.id, folder=folder)
    assert (res.created, res.unchanged, res.pairs_created) == (1, 1, 1)


SHARED_GIFS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "animatediff_gifs"


def test_real_animatediff_gifs(session, tmp_path):
    """Real AnimateDiff output (v1.5 vs v1.5-v2 motion modules, same prompts) imports with frames untouched."""
    if not (SHARED_GIFS / "adiff_compare_mmv15_0.gif").exists():
        pytest.skip(f"real AnimateDiff GIFs not present at {SHARED_GIFS}")
    study = make_study(session, models=("mm-v15", "mm-v15-v2"), n_prompts=4, qc=NO_CHECKS)
    folder = tmp_path / "real"
    for i in range(4):
        _write(folder, "mm-v15", f"p{i:03d}", (SHARED_GIFS / f"adiff_compare_mmv15_{i}.gif").read_bytes())
        _write(folder, "mm-v15-v2", f"p{i:03d}", (SHARED_GIFS / f"adiff_compare_mmv15v2_{i}.gif").read_bytes())
    res = import_gif_folder(session, study_id=study.id, folder=folder)
    assert (res.created, res.pairs_created) == (8, 4)
    assert res.signature == Signature(16, 256, 256, 7.69)  # 130 ms frames as encoded upstream
    clip = session.scalars(select(Clip).order_by(Clip.id)).first()
    original = (SHARED_GIFS / "adiff_compare_mmv15_0.gif").read_bytes()
    stored = media_path(clip.storage_name).read_bytes()
    assert [f.tobytes() for f in decode_frames(stored)] == [f.tobytes() for f in decode_frames(original)]

    # A 48-frame clip of another model generation does not fit: the batch is refused with the reason.
    _write(folder, "mm-v15-v2", "p003", (SHARED_GIFS / "adiff_v1_toonyou_01.gif").read_bytes())
    with pytest.raises(ClipImportError) as exc:
        import_gif_folder(session, study_id=study.id, folder=folder, replace=True)
    assert [m.differs for m in exc.value.mismatches] == [["frames 48 vs 16", "fps 23.08 vs 7.69"]]


def test_import_makes_attention_checks_when_qc_is_on(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=3)
    folder = tmp_path / "gifs"
    _fill(folder, study, frames=6, size=(40, 40), fps=10)
    import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()
    kinds = session.scalars(select(Pair.kind)).all()
    assert kinds.count("normal") == 3
    assert kinds.count("check_same") >= 1 and kinds.count("check_degraded") >= 1
    copies = session.scalars(select(Clip).where(Clip.origin == "degraded")).all()
    assert copies and all(c.status == "done" and c.frames == 6 for c in copies)


def test_a_link_that_leaves_the_import_folder_is_refused(session, tmp_path):
    study = make_study(session, models=("fast", "slow"), n_prompts=1, qc=NO_CHECKS)
    folder = tmp_path / "gifs"
    _fill(folder, study)
    outside = tmp_path / "elsewhere.gif"
    outside.write_bytes(gif_bytes())
    target = folder / "slow" / "p000.gif"
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(ClipImportError) as info:
        import_gif_folder(session, study_id=study.id, folder=folder)
    assert any("slow/p000.gif: a link to a file outside" in e for e in info.value.errors)
    assert _counts(session)[0] == 0


def test_replacing_a_clip_remakes_its_attention_check_copies(session, tmp_path):
    # The copies were made from the old file: a "same clip twice" check would have shown the old clip against
    # the new one, and evaluators answering honestly ("left/right better") would have been flagged.
    study = make_study(session, models=("fast", "slow"), n_prompts=1)  # one prompt: every clip is a source
    folder = tmp_path / "gifs"
    _fill(folder, study, frames=6, size=(40, 40), fps=10)
    import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()
    assert session.scalars(select(Pair.kind).where(Pair.kind == "check_same")).all()
    _write(folder, "slow", "p000", gif_bytes(frames=6, size=(40, 40), fps=10, colour=(0, 200, 0)))
    res = import_gif_folder(session, study_id=study.id, folder=folder, replace=True)
    session.commit()
    remove_media(res.obsolete_files)
    same = session.scalars(select(Pair).where(Pair.kind == "check_same")).all()
    assert {p.clip_a.model.name for p in same} >= {"slow"}
    for pair in same:
        original, copy = (media_path(c.storage_name).read_bytes() for c in (pair.clip_a, pair.clip_b))
        assert [f.tobytes() for f in decode_frames(original)] == [f.tobytes() for f in decode_frames(copy)]
    for copy in session.scalars(select(Clip).where(Clip.origin == "degraded")):
        assert media_path(copy.storage_name).exists()
