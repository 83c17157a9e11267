"""Batches: what gets queued, what is refused (and then nothing changes), progress, and the cost table."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select, text

from app import config
from app.models import Batch, Clip
from app.services import generation as svc
from tests.conftest import BACKENDS
from tests.factories import NO_CHECKS, make_study
from tests.support.servers import free_port


def demo_study(session, *, n_prompts=4, **settings):
    study = make_study(session, models=("smooth", "jittery"), n_prompts=n_prompts, qc=NO_CHECKS)
    study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
    study.settings = {**study.settings, **settings}
    session.commit()
    return study


def nothing_written(session) -> bool:
    session.rollback()
    return session.scalar(select(func.count(Clip.id))) == 0 and session.scalar(select(func.count(Batch.id))) == 0


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_a_batch_is_prompts_by_models_by_seeds(session):
    study = demo_study(session, n_prompts=4, seeds=[0, 1])
    sent: list[int] = []
    result = svc.queue_batch(session, study_id=study.id, theme="nature", send=sent.extend)
    nature = [p for p in study.prompts if p.theme == "nature"]
    assert result.created == len(nature) * 2 * 2 == len(sent) == len(result.scope_clip_ids)
    clips = session.scalars(select(Clip)).all()
    assert {c.prompt_id for c in clips} == {p.id for p in nature}
    assert all(c.status == "queued" and c.origin == "generated" and c.batch_id == result.batch_id for c in clips)

    again = svc.queue_batch(session, study_id=study.id, send=[].extend, prompt_ids=["p000", nature[0].id],
                            seeds=[1, 2])
    assert (again.created, again.resent) == (2, 2)  # seed 2 is new; seed 1 exists and is still queued
    assert session.scalar(select(func.count(Clip.id))) == len(sent) + 2


@pytest.mark.parametrize(("change", "needle"), [
    (lambda s: setattr(s.models[0], "preset", "no-such-preset"), "unknown preset 'no-such-preset'"),
    (lambda s: setattr(s.models[1], "overrides", {"steps": -4}), "steps must be a whole number from 1 to 1000"),
    (lambda s: setattr(s, "settings", {**s.settings, "width": 100}), "width must be a multiple of 8"),
    (lambda s: setattr(s.models[0], "preset", ""), "has no preset"),
])
def test_bad_configuration_is_refused_and_changes_nothing(session, change, needle):
    study = demo_study(session)
    change(study)
    session.commit()
    with pytest.raises(svc.GenerationError) as err:
        svc.queue_batch(session, study_id=study.id, send=[].extend)
    assert needle in str(err.value)
    assert nothing_written(session)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"theme": "space"}, "no prompts with theme 'space'; its themes: nature, sports"),
    ({"prompt_ids": ["p999"]}, "unknown prompt id(s) for this study: p999"),
    ({"seeds": [-1]}, "seeds must be whole numbers >= 0"),
])
def test_bad_batch_requests_are_refused_and_change_nothing(session, kwargs, needle):
    study = demo_study(session)
    with pytest.raises(svc.GenerationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        svc.queue_batch(session, study_id=study.id, send=[].extend, **kwargs)
    assert nothing_written(session)


def test_an_unreachable_broker_is_a_sentence_and_changes_nothing(session, monkeypatch):
    study = demo_study(session)
    monkeypatch.setenv("BLINDPAIR_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    config.get_settings.cache_clear()
    with pytest.raises(svc.BrokerUnavailable) as err:
        svc.queue_batch(session, study_id=study.id)
    assert "cannot be reached" in str(err.value) and "nothing was queued" in str(err.value)
    assert nothing_written(session)


def test_the_embedded_broker_holds_one_message_per_clip(session):
    study = demo_study(session, n_prompts=2)
    result = svc.queue_batch(session, study_id=study.id)
    broker = create_engine(config.get_settings().resolved_broker_url.removeprefix("sqla+"))
    with broker.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM kombu_message")).scalar() == result.tasks_sent == 4
    broker.dispose()


def _done(clip: Clip, wall: float, evals: int, peak: int | None, encode: float | None = None) -> None:
    clip.status, clip.wall_seconds, clip.unet_evals, clip.peak_memory_bytes = "done", wall, evals, peak
    clip.denoise_seconds, clip.decode_seconds, clip.encode_seconds = wall * 0.8, wall * 0.15, wall * 0.05
    if encode is not None:  # a fixed encode time, the rest split 80:20 between denoising and decoding
        clip.denoise_seconds, clip.decode_seconds, clip.encode_seconds = (wall - encode) * 0.8, (
            wall - encode) * 0.2, encode
    clip.steps, clip.device, clip.dtype = 4, "NVIDIA H100 80GB HBM3", "float16"
    clip.generation = {"scheduler_class": "EulerDiscreteScheduler", "scheduler_config": {"timestep_spacing": "x"}}


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_progress_and_costs_come_from_the_recorded_clips(session):
    study = demo_study(session, n_prompts=6)
    svc.queue_batch(session, study_id=study.id, send=[].extend)
    fast_model, slow_model = study.models
    fast = session.scalars(select(Clip).where(Clip.model_id == fast_model.id).order_by(Clip.id)).all()
    slow = session.scalars(select(Clip).where(Clip.model_id == slow_model.id).order_by(Clip.id)).all()
    fast_walls, slow_walls = [2.0, 3.0, 2.5, 10.0], [20.0, 24.0]
    for clip, wall in zip(fast, fast_walls, strict=False):
        _done(clip, wall, 4, 6_000_000_000)
    for clip, wall in zip(slow, slow_walls, strict=False):
        _done(clip, wall, 50, 7_000_000_000)
    fast[4].status, fast[4].error = "failed", "GPU out of memory on cuda"
    slow[2].status = "running"
    session.commit()

    progress = svc.generation_progress(session, study_id=study.id)
    f, s = progress["models"]
    assert (f["queued"], f["running"], f["done"], f["failed"]) == (1, 0, 4, 1)
    assert (s["queued"], s["running"], s["done"], s["failed"]) == (3, 1, 2, 0)
    assert f["median_seconds"] == 2.75 and s["median_seconds"] == 22.0
    # Nobody holds a live lease in this test, so the estimate is for one worker: sum of remaining x median.
    assert progress["eta_seconds"] == pytest.approx(1 * 2.75 + 4 * 22.0)
    assert progress["failed_clips"][0]["error"] == "GPU out of memory on cuda"
    assert f["run"]["style"] == "smooth"

    costs = {row["name"]: row for row in svc.cost_summary(session, study_id=study.id)}
    assert costs["smooth"]["median_seconds"] == pytest.approx(np.median(fast_walls))
    assert costs["smooth"]["p90_seconds"] == pytest.approx(np.percentile(fast_walls, 90))
    assert costs["jittery"]["p90_seconds"] == pytest.approx(np.percentile(slow_walls, 90))
    # Model seconds (denoise + decode: 95% of the wall in _done) for the GPU-seconds and the speedup.
    assert costs["smooth"]["median_model_seconds"] == pytest.approx(0.95 * np.median(fast_walls))
    assert costs["smooth"]["device_seconds"] == pytest.approx(0.95 * sum(fast_walls))
    assert (costs["smooth"]["unet_evals"], costs["jittery"]["unet_evals"]) == (4, 50)
    assert costs["smooth"]["speedup_vs_slowest"] == pytest.approx(22.0 / 2.75)
    assert costs["jittery"]["speedup_vs_slowest"] == pytest.approx(1.0)
    assert costs["jittery"]["peak_memory_bytes"] == 7_000_000_000
    assert costs["smooth"]["scheduler"] == "EulerDiscreteScheduler" and costs["smooth"]["clips"] == 4
    batch_id = fast[0].batch_id
    assert [r["clips"] for r in svc.cost_summary(session, study_id=study.id, batch_id=batch_id)] == [4, 2]
    assert [r["clips"] for r in svc.cost_summary(session, study_id=study.id, batch_id=batch_id + 1)] == [0, 0]


def test_costs_ignore_imported_clips(session):
    study = demo_study(session, n_prompts=1)
    svc.queue_batch(session, study_id=study.id, send=[].extend)
    clip = session.scalars(select(Clip)).first()
    _done(clip, 5.0, 4, None)
    clip.origin = "imported"
    session.commit()
    assert all(row["clips"] == 0 and row["median_seconds"] is None
               for row in svc.cost_summary(session, study_id=study.id))


def test_costs_of_clips_recorded_without_every_timing_part(session, client):
    """A clip recorded by another tool (or an older worker) with its wall time but no decode/encode split.

    statistics.median over the recorded figures met None there and the costs page and API answered 500."""
    from tests.app.web.test_results import PASSWORD
    from tests.factories import make_user
    from tests.support.web import login

    study = demo_study(session, n_prompts=2)
    svc.queue_batch(session, study_id=study.id, send=[].extend)
    first, second = session.scalars(select(Clip).where(Clip.model_id == study.models[0].id).order_by(Clip.id))
    _done(first, 4.0, 4, None)
    _done(second, 6.0, 4, None)
    second.decode_seconds = second.encode_seconds = None
    user = make_user(session, email="costs@example.org", password=PASSWORD)
    study.created_by_id = user.id  # studies belong to their owner: only they (and admins) see its costs
    session.commit()

    costs = {row["name"]: row for row in svc.cost_summary(session, study_id=study.id)}["smooth"]
    assert costs["median_seconds"] == 5.0
    assert costs["median_decode_seconds"] == pytest.approx(0.6)  # the one clip that recorded it
    assert costs["median_denoise_seconds"] == pytest.approx((3.2 + 4.8) / 2)
    session.commit()
    login(client, user.email, PASSWORD)
    r = client.get(f"/api/v1/studies/{study.id}/generation/costs")
    assert r.status_code == 200, r.text
    assert {row["name"]: row for row in r.json()}["smooth"]["median_decode_seconds"] == pytest.approx(0.6)


def test_validate_models_for_study_creation():
    svc.validate_models(settings=None, models=[("a", "animatediff", {"steps": 30, "off_card": True}), ("b", "", {})])
    with pytest.raises(svc.GenerationError, match="leaves the card"):
        svc.validate_models(settings=None, models=[("a", "animatediff", {"steps": 30}), ("b", "", {})])
    with pytest.raises(svc.GenerationError) as err:
        svc.validate_models(settings={"height": 7}, models=[("a", "nope", {}), ("b", "animatediff", {"x": 1})])
    assert len(err.value.errors) == 3


def test_a_concurrent_queue_that_wins_the_race_leaves_this_one_changing_nothing(session, monkeypatch):
    study = demo_study(session, n_prompts=1)
    real = svc._create_clips

    def racing(session_, study_, batch, prompts, seeds, specs, existing):
        # Another request inserts the same clip after our read of the existing clips: ours must fail cleanly.
        other = svc.utcnow()
        session_.add(Clip(study_id=study_.id, model_id=study_.models[0].id, prompt_id=prompts[0].id, seed=0,
                          variant="", origin="generated", status="queued", created_at=other))
        session_.flush()
        return real(session_, study_, batch, prompts, seeds, specs, existing)

    monkeypatch.setattr(svc, "_create_clips", racing)
    with pytest.raises(svc.GenerationError, match="queued at the same moment"):
        svc.queue_batch(session, study_id=study.id, send=[].extend)
    assert nothing_written(session)


def test_the_speedup_is_the_models_and_leaves_the_gif_encoding_out(session):
    # As measured on an H100: Lightning 0.63 s and AnimateDiff 4.49 s on the device, each plus ~1.85 s of GIF
    # encoding. By wall time Lightning would be 2.5x faster; the models differ by 7.1x.
    study = demo_study(session, n_prompts=2)
    svc.queue_batch(session, study_id=study.id, send=[].extend)
    fast_model, slow_model = study.models
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id)):
        fast = clip.model_id == fast_model.id
        _done(clip, (0.63 if fast else 4.49) + 1.85, 4 if fast else 50, None, encode=1.85)
    session.commit()
    costs = {row["name"]: row for row in svc.cost_summary(session, study_id=study.id)}
    assert costs["smooth"]["median_seconds"] == pytest.approx(2.48)  # the wall time is still shown
    assert costs["smooth"]["median_model_seconds"] == pytest.approx(0.63)
    assert costs["smooth"]["speedup_vs_slowest"] == pytest.approx(4.49 / 0.63)
    assert costs["smooth"]["device_seconds"] == pytest.approx(2 * 0.63)


def test_the_eta_counts_the_clips_each_worker_has_in_flight(session):
    # One worker with two clips in flight (--concurrency 2): it finishes a clip per wall / 2, but never faster
    # than the device part (model seconds). Lightning as measured: 0.84 s on the device, 1.7 s of wall.
    study = demo_study(session, n_prompts=6)
    svc.queue_batch(session, study_id=study.id, send=[].extend)
    fast_model, slow_model = study.models
    clips = session.scalars(select(Clip).where(Clip.study_id == study.id).order_by(Clip.id)).all()
    fast = [c for c in clips if c.model_id == fast_model.id]
    slow = [c for c in clips if c.model_id == slow_model.id]
    for clip in fast[:2]:
        _done(clip, 1.7, 4, None, encode=0.86)  # model seconds 0.84
    for clip in slow[:2]:
        _done(clip, 6.3, 50, None, encode=1.8)  # model seconds 4.5: the device part dominates
    now = svc.utcnow()
    for clip in (fast[2], slow[2]):
        clip.status, clip.claimed_by, clip.heartbeat_at = "running", "gpu-host:1", now
    session.commit()

    progress = svc.generation_progress(session, study_id=study.id)
    assert (progress["live_workers"], progress["clips_in_flight"]) == (1, 2)
    # 4 Lightning clips left at max(0.84, 1.7 / 2) = 0.85 s; 4 AnimateDiff at max(4.5, 6.3 / 2) = 4.5 s.
    assert progress["eta_seconds"] == pytest.approx(4 * 0.85 + 4 * 4.5)

    for clip in (fast[2], slow[2]):  # two workers, one clip each: each clip's wall time, shared by two
        clip.claimed_by = f"gpu-host:{clip.id}"
    session.commit()
    progress = svc.generation_progress(session, study_id=study.id)
    assert (progress["live_workers"], progress["clips_in_flight"]) == (2, 2)
    assert progress["eta_seconds"] == pytest.approx((4 * 1.7 + 4 * 6.3) / 2)
