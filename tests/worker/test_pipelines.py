"""The real pipeline code, end to end on the CPU, from tiny random weights saved to disk and loaded back."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from worker.generate import generate_clip
from worker.gif import LOSSY_LEVELS
from worker.pipelines import (
    PipelineCache,
    TransientLoadError,
    WeightsMissing,
    build_scheduler,
    load_adapter,
    resolve_file,
)
from worker.presets import get_preset, resolve_run
from worker.tiny import LIGHTNING_FILE

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json: what real base models ship.
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
TINY = {"frames": 2, "width": 32, "height": 32, "fps": 8, "dtype": "float32", "negative_prompt": "blurry"}


def spec_for(preset, tiny_dir, **settings):
    return resolve_run(model_name="m", preset=preset, overrides={}, settings={**TINY, "base_model": str(tiny_dir),
                                                                             **settings})


def assert_animatediff_scheduler(config):
    assert config["_class_name"] == "DDIMScheduler"
    assert (config["beta_schedule"], config["clip_sample"], config["timestep_spacing"], config["steps_offset"]) == (
        "linear", False, "linspace", 1)


def assert_lightning_scheduler(config):
    assert config["_class_name"] == "EulerDiscreteScheduler"
    assert (config["timestep_spacing"], config["beta_schedule"]) == ("trailing", "linear")


def test_real_presets_build_the_published_schedulers():
    scheduler = build_scheduler(get_preset("animatediff"), SD15_SCHEDULER)
    assert type(scheduler).__name__ == "DDIMScheduler"
    assert_animatediff_scheduler({**scheduler.config, "_class_name": type(scheduler).__name__})
    for n in (1, 2, 4, 8):
        scheduler = build_scheduler(get_preset(f"animatediff-lightning-{n}step"), SD15_SCHEDULER)
        assert_lightning_scheduler({**scheduler.config, "_class_name": type(scheduler).__name__})
        scheduler.set_timesteps(n)
        # Trailing spacing starts at the last training step, which is what the distilled adapters expect.
        assert int(scheduler.timesteps[0]) == 999 and len(scheduler.timesteps) == n


def _gif(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "GIF"
    return im


def test_animatediff_path_generates_a_gif_end_to_end(tiny_model_dir):
    cache = PipelineCache()
    result = generate_clip(spec_for("tiny-animatediff", tiny_model_dir), prompt="a red fox running", seed=3,
                           cache=cache)
    im = _gif(result.gif)
    assert (im.size, im.n_frames, result.frames) == ((32, 32), 2, 2)
    entry, loaded = cache.get(spec_for("tiny-animatediff", tiny_model_dir), device="cpu")
    assert not loaded and cache.loads == 1
    assert_animatediff_scheduler(dict(entry.pipe.scheduler.config))
    assert_animatediff_scheduler(result.generation["scheduler_config"])
    # 2 steps with CFG: each step is one batched forward carrying the unconditional and conditional halves.
    assert result.generation["unet_forward_calls"] == 2 and result.unet_evals == 4
    assert (result.steps, result.guidance_scale, result.dtype) == (2, 7.5, "float32")
    assert result.denoise_seconds > 0 and result.decode_seconds > 0 and result.encode_seconds > 0
    assert result.wall_seconds >= result.denoise_seconds + result.decode_seconds + result.encode_seconds
    assert result.peak_memory_bytes is None and result.device.startswith("cpu")
    assert {"torch", "diffusers", "transformers", "python"} <= set(result.generation["versions"])
    # The mildest lossy level that fits this clip alone: its pair's level is the harsher of the two fits.
    assert result.generation["fit_level"] in (0, *LOSSY_LEVELS)
    assert result.generation["seed"] == 3 and result.generation["run"]["preset"] == "tiny-animatediff"


def test_costs_compare_like_with_like_peak_reset_per_clip_warmup_marked(tiny_model_dir, monkeypatch):
    """The recorded figures' logic on the CPU: the peak-memory count is reset before every clip and read after
    it, the first clip after a load is marked warm-up, the pipelines resident are counted, the VAE decode is
    timed without the conversion to images, and the recorded fps is the one the GIF plays."""
    import worker.generate as gen

    events: list[str] = []
    monkeypatch.setattr(gen, "reset_peak_memory", lambda device: events.append("reset"))
    peaks = iter([111, 222, 333])
    monkeypatch.setattr(gen, "peak_memory", lambda device: events.append("peak") or next(peaks))
    cache = PipelineCache(capacity=2)
    ad, light = spec_for("tiny-animatediff", tiny_model_dir), spec_for("tiny-lightning-2step", tiny_model_dir)
    first = generate_clip(ad, prompt="a red fox running", seed=1, cache=cache)
    second = generate_clip(ad, prompt="a red fox running", seed=2, cache=cache)
    other = generate_clip(light, prompt="a red fox running", seed=1, cache=cache)
    assert events == ["reset", "peak"] * 3  # one reset per clip, before its own peak is read
    assert [r.peak_memory_bytes for r in (first, second, other)] == [111, 222, 333]
    assert [r.generation["warmup"] for r in (first, second, other)] == [True, False, True]
    assert [r.generation["pipelines_resident"] for r in (first, second, other)] == [1, 1, 2]
    # The negative prompt is recorded with whether the model used it: only CFG (guidance > 1) reads it.
    assert first.generation["negative_prompt"] == other.generation["negative_prompt"] == "blurry"
    assert first.generation["negative_prompt_used"] and not other.generation["negative_prompt_used"]
    for r in (first, second, other):
        assert r.generation["postprocess_seconds"] > 0 and r.decode_seconds > 0
        # 8 fps asks for 125 ms; GIF delays are whole centiseconds, so the file holds 120 ms and plays 8.33 fps.
        assert (r.generation["fps_requested"], r.generation["frame_delay_ms"], r.fps) == (8.0, 120, 8.33)


def test_lightning_path_loads_the_adapter_file_and_skips_cfg(tiny_model_dir):
    cache = PipelineCache()
    spec = spec_for("tiny-lightning-2step", tiny_model_dir)
    result = generate_clip(spec, prompt="a red fox running", seed=3, cache=cache)
    assert _gif(result.gif).n_frames == 2
    assert result.unet_evals == 2 and result.generation["timesteps"] == [999, 499]
    assert_lightning_scheduler(result.generation["scheduler_config"])
    # The adapter in the pipeline carries exactly the weights of the safetensors file.
    saved = load_file(str(tiny_model_dir / LIGHTNING_FILE))
    adapter = load_adapter(spec.preset, dtype=torch.float32)
    state = adapter.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[k], state[k]) for k in saved)


def test_same_seed_same_clip_and_the_cache_reuses_pipelines(tiny_model_dir):
    cache = PipelineCache(capacity=1)
    light = spec_for("tiny-lightning-2step", tiny_model_dir)
    a = generate_clip(light, prompt="waves", seed=7, cache=cache)
    b = generate_clip(light, prompt="waves", seed=7, cache=cache)
    assert a.gif == b.gif and cache.loads == 1
    assert b.generation["load_seconds"] == 0.0 and a.generation["pipeline_loaded_for_this_clip"]
    generate_clip(spec_for("tiny-animatediff", tiny_model_dir), prompt="waves", seed=7, cache=cache)
    assert cache.loads == 2 and len(cache) == 1  # switching models dropped the other pipeline


def test_missing_adapter_file_names_the_file(tiny_model_dir, tmp_path):
    with pytest.raises(WeightsMissing, match="'nothing.safetensors' is not in the folder"):
        resolve_file(str(tiny_model_dir), "nothing.safetensors")


def test_missing_hub_weights_say_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLINDPAIR_MODEL_CACHE_DIR", str(tmp_path / "hf"))
    from app import config

    config.get_settings.cache_clear()
    spec = resolve_run(model_name="m", preset="animatediff-lightning-4step", overrides={}, settings=None)
    with pytest.raises(WeightsMissing) as err:
        generate_clip(spec, prompt="x", seed=0, cache=PipelineCache())
    message = str(err.value)
    assert "animatediff_lightning_4step_diffusers.safetensors" in message
    assert "ByteDance/AnimateDiff-Lightning" in message
    assert "hf download ByteDance/AnimateDiff-Lightning animatediff_lightning_4step_diffusers.safetensors" in message
    assert "offline" in message
    spec = resolve_run(model_name="m", preset="animatediff", overrides={}, settings=None)
    with pytest.raises(WeightsMissing, match="hf download guoyww/animatediff-motion-adapter-v1-5-2"):
        generate_clip(spec, prompt="x", seed=0, cache=PipelineCache())


def test_a_hub_outage_deep_in_the_cause_chain_is_transient_and_a_missing_file_is_not(monkeypatch, tmp_path):
    # The hub client wraps the network error it got; the worker walks __cause__/__context__ to find it.
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("BLINDPAIR_HF_OFFLINE", "false")
    monkeypatch.setenv("BLINDPAIR_MODEL_CACHE_DIR", str(tmp_path / "hf"))
    from app import config

    config.get_settings.cache_clear()

    def unreachable(*args, **kwargs):
        try:
            try:
                raise ConnectionError("connection refused")
            except ConnectionError as exc:
                raise OSError("request failed") from exc
        except OSError:
            raise RuntimeError("download failed")  # noqa: B904 -- the network error stays in __context__

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(TransientLoadError, match="could not reach the Hugging Face hub for 'org/model'"):
        resolve_file("org/model", "weights.safetensors")

    def not_there(*args, **kwargs):
        raise FileNotFoundError("no such file on the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_there)
    with pytest.raises(WeightsMissing, match="hf download org/model weights.safetensors"):
        resolve_file("org/model", "weights.safetensors")


def test_clips_in_threads_share_the_pipeline_and_never_share_the_device(tiny_model_dir, monkeypatch):
    # `blindpair worker --concurrency N` runs clips in threads over one cached pipeline: the device part of one
    # clip must never interleave with another's (the scheduler and the UNet-call hook are the pipeline's
    # state), and each clip must come out as it would alone.
    import threading

    import worker.generate as generate
    from tests.support.threads import run_in_threads

    cache = PipelineCache(capacity=1)
    light = spec_for("tiny-lightning-2step", tiny_model_dir)
    alone = {seed: generate_clip(light, prompt="waves", seed=seed, cache=cache) for seed in (1, 2, 3, 4)}

    inside, most, guard = [0], [0], threading.Lock()
    device_part = generate._denoise_and_decode

    def counted(*args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            return device_part(*args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(generate, "_denoise_and_decode", counted)
    seeds, results = iter((1, 2, 3, 4)), {}

    def one_clip() -> None:
        seed = next(seeds)
        results[seed] = generate_clip(light, prompt="waves", seed=seed, cache=cache)

    assert run_in_threads(one_clip, 4) == []
    assert most[0] == 1  # one clip on the device at a time
    assert {s: r.gif for s, r in results.items()} == {s: r.gif for s, r in alone.items()}
    assert {s: r.unet_evals for s, r in results.items()} == {s: r.unet_evals for s, r in alone.items()}
    assert cache.loads == 1
