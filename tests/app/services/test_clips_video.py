"""Importing MP4 and WebM clips: checked like GIFs (all or nothing, a table of what differs) and stored in the
study's format by the one video encoder."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.media import video
from app.media.storage import media_path
from app.models import Clip, Pair
from app.services.clips import ClipImportError, import_gif_folder
from tests.factories import NO_CHECKS, gif_bytes, make_study, video_bytes


def _study(session, fmt):
    study = make_study(session, models=("fast", "slow"), n_prompts=2, qc=NO_CHECKS)
    study.settings = {**study.settings, "clip_format": fmt}
    session.flush()
    return study


def _write(folder, model, name, data):
    (folder / model).mkdir(parents=True, exist_ok=True)
    (folder / model / name).write_bytes(data)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_video_import_stores_the_study_format_reencoded(session, tmp_path, fmt):
    study = _study(session, fmt)
    folder = tmp_path / "clips"
    other = "webm" if fmt == "mp4" else "mp4"
    # 10 fps: a GIF's delays are whole centiseconds, so a GIF cannot play at exactly 8 fps (it is 8.33)
    _write(folder, "fast", f"p000.{fmt}", video_bytes(fmt, frames=10, fps=10))
    _write(folder, "slow", f"p000.{other}", video_bytes(other, frames=10, fps=10, colour=(0, 200, 0)))
    _write(folder, "fast", "p001.gif", gif_bytes(frames=10, size=(64, 64), fps=10))
    _write(folder, "slow", f"p001.{fmt}", video_bytes(fmt, frames=10, fps=10))
    result = import_gif_folder(session, study_id=study.id, folder=folder)
    assert result.created == 4
    clips = session.scalars(select(Clip).where(Clip.origin == "imported")).all()
    for clip in clips:
        assert clip.storage_name.endswith("." + fmt)
        data = media_path(clip.storage_name).read_bytes()
        assert video.sniff(data) == fmt
        header = video.read_video_header(data)
        assert (header.width, header.height, header.frames) == (64, 64, 10)
        assert (clip.frames, clip.fps) == (10, 10)
    assert session.scalar(select(func.count()).select_from(Pair)) == 2
    # Re-importing the same files changes nothing (the encoder is deterministic).
    again = import_gif_folder(session, study_id=study.id, folder=folder)
    assert again.unchanged == 4 and again.created == again.replaced == 0


def test_mismatched_videos_refuse_the_whole_batch_with_a_table(session, tmp_path):
    study = _study(session, "mp4")
    folder = tmp_path / "clips"
    _write(folder, "fast", "p000.mp4", video_bytes("mp4", frames=10, fps=8))
    _write(folder, "slow", "p000.mp4", video_bytes("mp4", frames=10, fps=8))
    _write(folder, "fast", "p001.mp4", video_bytes("mp4", frames=10, fps=12))
    _write(folder, "slow", "p001.webm", video_bytes("webm", frames=6, size=(48, 48), fps=8))
    with pytest.raises(ClipImportError) as exc:
        import_gif_folder(session, study_id=study.id, folder=folder)
    rows = {m.file: m.differs for m in exc.value.mismatches}
    assert rows == {"fast/p001.mp4": ["fps 12 vs 8"], "slow/p001.webm": ["frames 6 vs 10", "size 48x48 vs 64x64"]}
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Clip)) == 0


def test_bad_video_files_are_each_named_and_nothing_is_stored(session, tmp_path):
    study = _study(session, "webm")
    folder = tmp_path / "clips"
    good = video_bytes("webm", frames=10)
    _write(folder, "fast", "p000.webm", good)
    _write(folder, "slow", "p000.webm", good[: len(good) // 3])  # truncated
    _write(folder, "fast", "p001.mp4", good)  # a WebM named .mp4
    _write(folder, "slow", "p001.webm", b"not a video at all")
    with pytest.raises(ClipImportError) as exc:
        import_gif_folder(session, study_id=study.id, folder=folder)
    text = "\n".join(exc.value.errors)
    assert "slow/p000.webm" in text
    assert "fast/p001.mp4: named .mp4 but it is a WEBM file" in text
    assert "slow/p001.webm: not a GIF, MP4 or WebM file" in text
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Clip)) == 0


def test_a_video_over_the_budget_is_refused_before_decoding(session, tmp_path, monkeypatch):
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "video_max_seconds", 0.5)
    study = _study(session, "mp4")
    folder = tmp_path / "clips"
    _write(folder, "fast", "p000.mp4", video_bytes("mp4", frames=10))
    monkeypatch.setattr(video, "decode", lambda *a, **k: pytest.fail("decoded a clip over the budget"))
    with pytest.raises(ClipImportError, match="BLINDPAIR_VIDEO_MAX_SECONDS"):
        import_gif_folder(session, study_id=study.id, folder=folder)


def test_a_gif_study_refuses_videos_with_the_way_out(session, tmp_path):
    study = _study(session, "gif")
    folder = tmp_path / "clips"
    _write(folder, "fast", "p000.mp4", video_bytes("mp4"))
    with pytest.raises(ClipImportError, match="clip_format mp4 or webm"):
        import_gif_folder(session, study_id=study.id, folder=folder)


def test_video_attention_checks_are_encoded_like_the_clips(session, tmp_path):
    from app.services.attention import make_attention_checks

    study = make_study(session, models=("fast", "slow"), n_prompts=4)
    study.settings = {**study.settings, "clip_format": "mp4"}
    session.flush()
    folder = tmp_path / "clips"
    for m, colour in zip(study.models, ((200, 40, 40), (40, 40, 200)), strict=True):
        for p in study.prompts:
            _write(folder, m.name, f"{p.external_id}.mp4", video_bytes("mp4", frames=12, colour=colour))
    import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()
    make_attention_checks(study_id=study.id)  # also run on commit by the import; a second run adds none
    session.expire_all()
    copies = session.scalars(select(Clip).where(Clip.origin == "degraded")).all()
    assert copies and {c.variant for c in copies} >= {"duplicate"}
    for c in copies:
        data = media_path(c.storage_name).read_bytes()
        assert c.storage_name.endswith(".mp4") and video.sniff(data) == "mp4"
        header = video.read_video_header(data)
        assert (header.width, header.height, header.frames) == (64, 64, 12)
