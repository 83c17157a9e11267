"""The task body in-process: claim, generate, store, record, pair; and every way a clip can go wrong."""

from __future__ import annotations

import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from sqlalchemy import func, select

from app.media.storage import media_path, media_root
from app.models import Clip, Pair
from app.services import generation as svc
from tests.conftest import BACKENDS
from tests.worker.conftest import make_tiny_study
from worker import tasks
from worker.pipelines import TransientLoadError


def queue(session, study, **kw) -> list[int]:
    sent: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=sent.extend, **kw)
    return sent


def run(session, clip_id, **kw) -> str:
    # SQLite transactions here begin IMMEDIATE (app/db.py), so the test's session must not hold one open.
    session.commit()
    return tasks.run_clip(clip_id, **kw)


def gif_count() -> int:
    return len([p for p in media_root().iterdir() if p.suffix == ".gif"])


def test_a_clip_is_generated_recorded_and_paired(session, tiny_model_dir):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1)
    light_id, ad_id = queue(session, study)
    assert run(session, light_id) == "done"
    assert session.scalar(select(Pair.id).where(Pair.kind == "normal")) is None  # only one model done: no pair yet
    assert run(session, ad_id) == "done"
    session.expire_all()
    light, ad = session.get(Clip, light_id), session.get(Clip, ad_id)
    for clip in (light, ad):
        assert clip.status == "done" and clip.error is None and clip.attempts == 1
        im = Image.open(io.BytesIO(media_path(clip.storage_name).read_bytes()))
        assert (im.size, im.n_frames) == ((32, 32), 2)
        assert clip.wall_seconds > 0 and clip.denoise_seconds > 0 and clip.decode_seconds > 0
        assert clip.encode_seconds > 0 and clip.device.startswith("cpu") and clip.dtype == "float32"
        assert clip.generation["versions"]["diffusers"] and clip.claimed_by and clip.heartbeat_at is None
    assert (light.steps, light.guidance_scale, light.unet_evals) == (2, 1.0, 2)
    assert (ad.steps, ad.guidance_scale, ad.unet_evals) == (2, 7.5, 4)
    assert light.generation["scheduler_config"]["timestep_spacing"] == "trailing"
    assert ad.generation["scheduler_config"]["timestep_spacing"] == "linspace"
    pair = session.scalars(select(Pair).where(Pair.kind == "normal")).one()
    assert (pair.clip_a_id, pair.clip_b_id) == (light_id, ad_id)

    # Work already done is skipped: no second file, no second attempt.
    files = gif_count()
    assert run(session, light_id) == "done"
    session.expire_all()
    assert gif_count() == files and session.get(Clip, light_id).attempts == 1


def test_queueing_twice_creates_no_new_clip(session, tiny_model_dir):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=2)
    first = queue(session, study)
    assert len(first) == 4
    run(session, first[0])
    again = queue(session, study)
    assert sorted(again) == sorted(first[1:])  # still-queued clips are sent again; the done one is not
    assert session.query(Clip).filter(Clip.origin == "generated").count() == 4


def test_missing_weights_fail_the_clip_in_words_and_it_can_be_retried(session, tiny_model_dir, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLINDPAIR_MODEL_CACHE_DIR", str(tmp_path / "empty-cache"))
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1,
                            presets=("animatediff-lightning-4step", "tiny-animatediff"))
    light_id, _ = queue(session, study)
    assert run(session, light_id) == "failed"
    session.expire_all()
    clip = session.get(Clip, light_id)
    assert clip.status == "failed" and "hf download ByteDance/AnimateDiff-Lightning" in clip.error
    progress = svc.generation_progress(session, study_id=study.id)
    assert progress["failed_clips"][0]["clip_id"] == light_id and progress["totals"]["failed"] == 1

    sent: list[int] = []
    assert svc.retry_failed(session, study_id=study.id, send=sent.extend) == 1
    session.expire_all()
    assert sent == [light_id] and session.get(Clip, light_id).status == "queued"
    assert session.get(Clip, light_id).attempts == 0


def test_transient_errors_retry_then_give_up(session, tiny_model_dir, monkeypatch):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1)
    clip_id = queue(session, study)[0]

    def unreachable(*_a, **_kw):
        raise TransientLoadError("could not reach the Hugging Face hub")

    monkeypatch.setattr(tasks, "generate_clip", unreachable)
    with pytest.raises(tasks.RetryLater):
        run(session, clip_id, retries=0, max_retries=2)
    session.expire_all()
    clip = session.get(Clip, clip_id)
    assert clip.status == "queued" and "retry 1 of 2" in clip.error and clip.claimed_by is None
    assert run(session, clip_id, retries=2, max_retries=2) == "failed"
    session.expire_all()
    assert "gave up after 2 retries" in session.get(Clip, clip_id).error


def test_gpu_out_of_memory_is_reported_as_such(session, tiny_model_dir, monkeypatch):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1)
    clip_id = queue(session, study)[0]

    def oom(*_a, **_kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("worker.generate._generate_animatediff", oom)
    assert run(session, clip_id) == "failed"
    session.expire_all()
    assert session.get(Clip, clip_id).error.startswith("GPU out of memory")


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_a_dead_workers_clip_is_taken_back_and_its_late_result_discarded(session, tiny_model_dir):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1)
    clip_id = queue(session, study)[0]
    assert svc.claim_clip(session, clip_id=clip_id, worker="a:1", lease_seconds=60).outcome == "claimed"
    assert svc.claim_clip(session, clip_id=clip_id, worker="b:2", lease_seconds=60).outcome == "busy"
    clip = session.get(Clip, clip_id)
    clip.heartbeat_at = clip.heartbeat_at - timedelta(seconds=120)
    session.commit()
    assert svc.recover_stale(session, lease_seconds=60, max_attempts=3) == [clip_id]
    session.commit()
    session.expire_all()
    assert session.get(Clip, clip_id).status == "queued"
    assert run(session, clip_id) == "done"
    # Worker a wakes up and tries to record its copy: refused, the clip stays as the live worker made it.
    session.expire_all()
    done = session.get(Clip, clip_id)
    late = SimpleNamespace(width=1, height=1, frames=1, fps=1.0, wall_seconds=9.0, denoise_seconds=9.0,
                           decode_seconds=0.0, encode_seconds=0.0, steps=1, guidance_scale=1.0, unet_evals=1,
                           peak_memory_bytes=None, device="cpu", dtype="float32", generation={})
    stored = SimpleNamespace(storage_name="late.gif", sha256="0" * 64, size_bytes=1, store="local")
    assert not svc.complete_clip(session, clip_id=clip_id, worker="a:1", result=late, stored=stored)
    session.commit()
    session.expire_all()
    done = session.get(Clip, clip_id)
    assert done.status == "done" and done.attempts == 2 and done.storage_name != "late.gif"


def test_a_clip_that_keeps_killing_workers_is_failed(session, tiny_model_dir):
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1)
    clip_id = queue(session, study)[0]
    svc.claim_clip(session, clip_id=clip_id, worker="a:1", lease_seconds=60)
    clip = session.get(Clip, clip_id)
    clip.attempts, clip.heartbeat_at = 3, clip.heartbeat_at - timedelta(seconds=120)
    session.commit()
    assert svc.recover_stale(session, lease_seconds=60, max_attempts=3) == []
    session.commit()
    session.expire_all()
    assert session.get(Clip, clip_id).status == "failed"
    assert "stopped responding 3 times" in session.get(Clip, clip_id).error


def test_demo_presets_render_on_the_cpu_without_weights(session):
    from tests.factories import NO_CHECKS, make_study

    study = make_study(session, models=("smooth", "jittery"), n_prompts=1, qc=NO_CHECKS)
    study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
    session.commit()
    ids = queue(session, study)
    assert [run(session, i) for i in ids] == ["done", "done"]
    session.expire_all()
    clips = [session.get(Clip, i) for i in ids]
    frames = [Image.open(io.BytesIO(media_path(c.storage_name).read_bytes())).n_frames for c in clips]
    assert frames == [4, 4] and clips[0].sha256 != clips[1].sha256  # make_study: 4 frames at 32x32
    assert clips[0].unet_evals == 0 and clips[0].steps is None and clips[0].generation["run"]["style"] == "smooth"
    assert session.scalar(select(func.count(Pair.id))) == 1


def test_clips_generated_for_an_open_study_get_attention_checks(session):
    from tests.factories import make_study

    study = make_study(session, models=("smooth", "jittery"), n_prompts=2)  # QC on by default
    study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
    session.commit()
    for clip_id in queue(session, study):
        assert run(session, clip_id) == "done"
    session.expire_all()
    kinds = session.scalars(select(Pair.kind)).all()
    assert kinds.count("normal") == 2
    assert "check_same" in kinds and "check_degraded" in kinds
