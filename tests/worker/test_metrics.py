"""CLIP text-video relevance through the worker's loader, on a tiny random CLIP built from a config (never a
download), and the worker's metrics after generation and from the study page's task."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from app.config import get_settings
from app.models import Clip, ClipMetric
from tests.factories import make_pairs, make_study
from worker import metrics as wm
from worker.pipelines import WeightsMissing


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random CLIP with tiny sizes, saved like a hub model, and an offline byte-level CLIP tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    from worker.tiny import write_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = CLIPConfig(
        text_config={"vocab_size": 514, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 512,
                     "eos_token_id": 513, "pad_token_id": 513},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    import torch

    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    write_tiny_tokenizer(folder)  # vocab.json (the 256 byte characters, with </w>, and the two specials), merges.txt
    return folder


@pytest.fixture(autouse=True)
def _fresh_clip_cache():
    wm._loaded.clear()
    wm._problems.clear()
    yield
    wm._loaded.clear()
    wm._problems.clear()


def test_the_tiny_clip_loads_through_the_workers_loader_and_scores_frames(tiny_clip_dir):
    loaded = wm.load_clip(str(tiny_clip_dir), device="cpu")
    assert loaded.version == wm.clip_version(str(tiny_clip_dir)) and loaded.version.startswith("clip/1:")
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    mean, per_frame = wm.clip_relevance(loaded, frames, "a red square moving right")
    assert len(per_frame) == 3 and all(-1.0 <= c <= 1.0 for c in per_frame)
    assert mean == pytest.approx(float(np.mean(per_frame)))
    # The same frames and text give the same score (no randomness at inference).
    assert wm.clip_relevance(loaded, frames, "a red square moving right")[1] == pytest.approx(per_frame)
    other = wm.clip_relevance(loaded, frames, "an entirely different prompt")[0]
    assert other != pytest.approx(mean)


def test_a_missing_clip_model_is_named_with_the_command_that_fetches_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as caught:
        wm.load_clip("openai/clip-vit-base-patch32", device="cpu")
    message = str(caught.value)
    assert "openai/clip-vit-base-patch32" in message and "hf download openai/clip-vit-base-patch32" in message
    assert "offline" in message


def test_clip_can_be_turned_off_and_a_missing_model_only_skips_clip(session, monkeypatch, tiny_clip_dir):
    study = make_study(session, n_prompts=1)
    make_pairs(session, study)
    session.commit()
    ids = list(session.scalars(select(Clip.id).where(Clip.study_id == study.id)))
    session.commit()
    monkeypatch.setenv(wm.CLIP_MODEL_ENV, "none")
    get_settings.cache_clear()
    off = wm.compute_for_clips(ids)
    assert off.measured == 2 and "turned off" in off.not_computed["clip_score"]
    monkeypatch.setenv(wm.CLIP_MODEL_ENV, str(tiny_clip_dir / "missing"))
    get_settings.cache_clear()
    missing = wm.compute_for_clips(ids)
    assert missing.measured == 0 and "CLIP relevance not computed" in missing.not_computed["clip_score"]
    monkeypatch.setenv(wm.CLIP_MODEL_ENV, str(tiny_clip_dir))
    get_settings.cache_clear()
    done = wm.compute_for_clips(ids)
    assert done.measured == 2 and "clip_score" not in done.not_computed
    rows = session.scalars(select(ClipMetric).where(ClipMetric.name == "clip_score")).all()
    assert len(rows) == 2 and all(r.version == wm.clip_version(str(tiny_clip_dir)) for r in rows)
    assert all(len(r.per_frame) == 4 for r in rows)  # the factory's clips have 4 frames


def test_the_study_page_task_computes_metrics_in_the_worker(session, monkeypatch, tiny_clip_dir):
    from worker import tasks

    monkeypatch.setenv(wm.CLIP_MODEL_ENV, str(tiny_clip_dir))

    get_settings.cache_clear()
    study = make_study(session, n_prompts=1)
    make_pairs(session, study)
    session.commit()
    ids = list(session.scalars(select(Clip.id).where(Clip.study_id == study.id)))
    session.commit()
    outcome = tasks.compute_metrics_task.run(ids)
    assert outcome.startswith("2 measured")
    names = set(session.scalars(select(ClipMetric.name).where(ClipMetric.clip_id.in_(ids))))
    assert {"motion_mean", "flicker", "warp_error", "sharpness", "clip_score"} <= names


@pytest.mark.slow
def test_a_generated_clip_is_measured_by_the_worker_that_made_it(session, tiny_model_dir, monkeypatch, tiny_clip_dir):
    from app.services import generation as gen
    from tests.worker.conftest import make_tiny_study
    from worker import tasks

    monkeypatch.setenv(wm.CLIP_MODEL_ENV, str(tiny_clip_dir))

    get_settings.cache_clear()
    study = make_tiny_study(session, tiny_model_dir, n_prompts=1, presets=("tiny-lightning-2step",))
    sent: list[int] = []
    gen.queue_batch(session, study_id=study.id, send=sent.extend)
    session.commit()
    assert tasks.run_clip(sent[0]) == "done"
    names = set(session.scalars(select(ClipMetric.name).where(ClipMetric.clip_id == sent[0])))
    assert {"motion_mean", "motion_p95", "warp_error", "flicker", "sharpness", "clip_score"} <= names
