"""Generated clips record what their file plays at, as imported ones do, and carry nothing but pixels and timing.

GIF delays are whole hundredths of a second: an 8 fps clip is written with 120 ms delays (8.33 fps). import-gifs
stores the rate measured from the file, so the worker must too, or a study mixing both holds two formats.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.media.demo_render import render_demo_gif
from app.media.gif import inspect_gif
from app.media.storage import media_path
from app.models import Clip, Pair
from app.services import generation as svc
from app.services.clips import import_gif_folder
from tests.factories import NO_CHECKS, make_study
from worker import gif as worker_gif
from worker import tasks

SETTINGS = {"seeds": [0], "frames": 4, "width": 32, "height": 32, "fps": 8, "base_model": "none", "dtype": "float32"}


def _demo_study(session):
    study = make_study(session, models=("smooth", "jittery"), n_prompts=2, qc=NO_CHECKS)
    for model, preset in zip(study.models, ("demo-smooth", "demo-jittery"), strict=True):
        model.preset = preset
    study.settings = dict(SETTINGS)
    session.commit()
    return study


def _generate_all(session, study) -> list[int]:
    sent: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=sent.extend)
    session.commit()  # SQLite transactions begin IMMEDIATE: the task's own session needs the lock
    assert [tasks.run_clip(clip_id) for clip_id in sent] == ["done"] * len(sent)
    session.expire_all()
    return sent


def test_generated_clips_store_the_fps_their_file_plays_at(session):
    study = _demo_study(session)
    for clip_id in _generate_all(session, study):
        clip = session.get(Clip, clip_id)
        info = inspect_gif(media_path(clip.storage_name).read_bytes())
        assert info.durations_ms == (120,) * 4  # what "8 fps" becomes in whole centiseconds
        assert (clip.fps, clip.frames, clip.width, clip.height) == (info.fps, info.frames, info.width, info.height)
        assert clip.fps == 8.33


def test_a_study_mixing_generated_and_imported_clips_has_one_format(session, tmp_path: Path):
    study = _demo_study(session)
    _generate_all(session, study)
    # A researcher re-renders one model's clips elsewhere with the same settings (8 fps) and imports them.
    jittery = study.models[1]
    folder = tmp_path / "gifs" / jittery.name
    folder.mkdir(parents=True)
    for prompt in study.prompts:
        (folder / f"{prompt.external_id}.gif").write_bytes(
            render_demo_gif(prompt.text, style="smooth", seed=1, frames=4, width=32, height=32, fps=8))
    result = import_gif_folder(session, study_id=study.id, folder=folder.parent, replace=True)
    session.commit()
    assert result.replaced == 2  # accepted: same frames, size and fps as the generated clips
    session.expire_all()
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id)).all()
    real = [c for c in clips if c.variant == ""]  # import also makes degraded attention-check copies
    assert sorted(c.origin for c in real) == ["generated", "generated", "imported", "imported"]
    # A replaced generated clip keeps no master: its group is never served again from the old one.
    assert all(c.master_name is None and c.lossy_level is None for c in real if c.origin == "imported")
    assert {(c.frames, c.width, c.height, c.fps) for c in clips} == {(4, 32, 32, 8.33)}
    assert len(session.scalars(select(Pair).where(Pair.kind == "normal")).all()) == 2


def test_generated_gifs_are_stripped_like_imported_ones(session, monkeypatch):
    # The served copy is made from the master at the pair's level (worker/pair_encoding.py): whatever that
    # lossy step writes, the canonical writer leaves nothing of it but pixels and timing.
    real_compress = worker_gif.compress
    tells: list[int] = []

    def compress_with_a_tell(master, level):
        tells.append(1)
        data = real_compress(master, level)
        tell = b"made by demo-smooth"
        comment = b"\x21\xfe" + bytes([len(tell)]) + tell + b"\x00"
        assert data.endswith(b";")
        return data[:-1] + comment + b";"

    monkeypatch.setattr(worker_gif, "compress", compress_with_a_tell)
    study = _demo_study(session)
    clip_ids = _generate_all(session, study)
    # Every clip went through it at least twice: its fit-level search and its served copy.
    assert len(tells) >= 2 * len(clip_ids) == 8
    for clip_id in clip_ids:
        data = media_path(session.get(Clip, clip_id).storage_name).read_bytes()
        assert b"demo-smooth" not in data and b"made by" not in data
        assert "comment" not in inspect_gif(data).extensions
