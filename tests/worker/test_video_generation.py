"""The worker writes the study's format: MP4 or WebM from the pipeline's frames, with one encoder setting for
every model; the clip records codec, bitrate and encoder version; GIF stays as it was."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.media import video
from app.media.storage import media_path
from app.models import Clip, Pair
from app.services import generation as svc
from app.services.exports import clips_manifest_frame
from tests.factories import NO_CHECKS, make_study
from tests.worker.conftest import make_tiny_study
from worker import tasks


def _run_all(session, study) -> list[Clip]:
    sent: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=sent.extend)
    session.commit()
    assert [tasks.run_clip(i) for i in sent] == ["done"] * len(sent)
    session.expire_all()
    return [session.get(Clip, i) for i in sent]


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_demo_models_render_the_study_format(session, fmt):
    study = make_study(session, models=("smooth", "jittery"), n_prompts=1, qc=NO_CHECKS)
    study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
    study.settings = {**study.settings, "clip_format": fmt, "width": 64, "height": 48, "frames": 6, "fps": 12}
    session.commit()
    clips = _run_all(session, study)
    for clip in clips:
        data = media_path(clip.storage_name).read_bytes()
        assert clip.storage_name.endswith("." + fmt) and video.sniff(data) == fmt
        header = video.read_video_header(data)
        assert (header.width, header.height, header.frames) == (64, 48, 6)
        assert (clip.width, clip.height, clip.frames, clip.fps) == (64, 48, 6, 12)
        enc = clip.generation["encoding"]
        assert enc["codec"] == ("h264" if fmt == "mp4" else "vp9") and enc["libavcodec"] and enc["bitrate_kbps"] > 0
        assert "fit_level" not in clip.generation  # no GIF compression step for a video
    # One encoder setting for every model of the study.
    assert len({c.generation["encoding"]["settings"] for c in clips}) == 1
    assert session.scalar(select(Pair.id).where(Pair.kind == "normal")) is not None
    rows = {r["clip_id"]: r for r in clips_manifest_frame(session, study=study).to_dict("records")}
    for clip in clips:
        row = rows[clip.id]
        assert row["format"] == fmt and row["codec"] in ("h264", "vp9") and row["bitrate_kbps"] > 0
        assert row["encoder"].startswith("libx264" if fmt == "mp4" else "libvpx-vp9")


def test_the_real_pipeline_code_writes_mp4(session, tiny_model_dir):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1, clip_format="mp4")
    for clip in _run_all(session, study):
        decoded = video.decode(media_path(clip.storage_name).read_bytes())
        assert decoded.size == (clip.width, clip.height) and len(decoded.frames) == clip.frames
        assert clip.generation["encoding"]["encoder"] == "libx264"


def test_gif_studies_still_get_gifs(session):
    study = make_study(session, models=("smooth", "jittery"), n_prompts=1, qc=NO_CHECKS)
    study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
    session.commit()
    for clip in _run_all(session, study):
        assert clip.storage_name.endswith(".gif") and "encoding" not in clip.generation
        assert "fit_level" in clip.generation  # main's per-pair GIF compression path, unchanged
