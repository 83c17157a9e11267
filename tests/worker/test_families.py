"""Today's video families end to end on the CPU: for each, a tiny random-weight pipeline built from configs, saved
with save_pretrained, loaded back through the same preset and loading code as real weights (separate transformer,
LoRAs fused at their scale), and run through the worker's generate path to a clip with its cost record."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from worker.generate import generate_clip
from worker.pipelines import PipelineCache, WeightsMissing, build_scheduler, load_pipeline
from worker.presets import get_preset, resolve_run
from worker.tiny import TINY_SETTINGS, build_tiny_family

# (tiny family folder, teacher preset, student preset, what the student adds)
PAIRS = [
    ("wan", "tiny-wan", "tiny-wan-lora-2step"),
    ("wan22", "tiny-wan22", "tiny-wan22-lightning"),
    ("ltx", "tiny-ltx", "tiny-ltx-distilled"),
    ("hunyuanvideo", "tiny-hunyuanvideo", "tiny-fasthunyuan"),
    ("cogvideox", "tiny-cogvideox", "tiny-cogvideox-lora"),
]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """One folder per family, built on first use (each build takes a second or two on one core)."""
    built: dict[str, object] = {}

    def get(family: str):
        if family not in built:
            built[family] = build_tiny_family(tmp_path_factory.mktemp(f"tiny-{family}"), family)
        return built[family]
    return get


def spec_for(preset: str, family: str, folder, **overrides):
    settings = {**TINY_SETTINGS[family], "base_model": str(folder), "dtype": "float32", "negative_prompt": "blurry"}
    return resolve_run(model_name="m", preset=preset, overrides=overrides, settings=settings)


def passes(spec) -> int:
    return 2 if spec.uses_cfg else 1


@pytest.mark.parametrize(("family", "teacher", "student"), PAIRS, ids=[p[0] for p in PAIRS])
def test_teacher_and_student_make_clips_with_comparable_costs(family_dirs, family, teacher, student):
    folder = family_dirs(family)
    cache = PipelineCache()
    for preset in (teacher, student):
        spec = spec_for(preset, family, folder)
        result = generate_clip(spec, prompt="a red fox running through snow", seed=3, cache=cache)
        im = Image.open(io.BytesIO(result.gif))
        want = TINY_SETTINGS[family]
        assert (im.size, im.n_frames) == ((want["width"], want["height"]), want["frames"])
        assert result.frames == want["frames"]
        # Transformer evaluations = steps x CFG passes, counted from the real forward calls (Wan runs the two CFG
        # halves as two calls, LTX-Video and CogVideoX as one batch of two: both count 2 per step).
        assert result.unet_evals == spec.steps * passes(spec), (preset, result.generation)
        assert result.generation["cfg_passes"] == passes(spec)
        assert result.generation["offload"] == "none" and result.generation["memory"]["fits"]
        assert result.denoise_seconds > 0 and result.decode_seconds > 0 and result.encode_seconds > 0
        assert result.generation["run"]["pipeline"] == get_preset(preset).pipeline
        assert len(result.generation["timesteps"]) == spec.steps
    assert cache.loads == 2  # teacher and student are different weights (or LoRAs): two pipelines


def test_hunyuanvideo_guidance_is_embedded_one_pass_per_step(family_dirs):
    folder = family_dirs("hunyuanvideo")
    spec = spec_for("tiny-hunyuanvideo", "hunyuanvideo", folder)
    assert spec.guidance == 6.0 and not spec.uses_cfg
    result = generate_clip(spec, prompt="a cat", seed=0, cache=PipelineCache())
    assert result.unet_evals == 2 and result.generation["transformer_forward_calls"] == 2


def test_wan22_runs_both_experts_with_their_own_guidance(family_dirs):
    folder = family_dirs("wan22")
    spec = spec_for("tiny-wan22", "wan22", folder)
    assert (spec.guidance, spec.guidance_2) == (4.0, 3.0)
    result = generate_clip(spec, prompt="waves at sunset", seed=0, cache=PipelineCache())
    # 2 steps at timesteps 999 and 750: the boundary (0.875) sends the first to the high-noise expert, the second
    # to the low-noise one; each runs its conditional and unconditional pass.
    assert result.generation["transformer_calls_by_component"] == {"transformer": 2, "transformer_2": 2}
    assert result.generation["run"]["guidance_2"] == 3.0
    # guidance_2 reaches the low-noise expert: another value, another clip from the same seed. diffusers still runs
    # its unconditional pass at 1.0 (guidance_scale turns CFG on for both experts), and the count says so.
    off = spec_for("tiny-wan22", "wan22", folder, guidance_2=1.0, off_card=True)
    other = generate_clip(off, prompt="waves at sunset", seed=0, cache=PipelineCache())
    assert other.gif != result.gif
    assert other.generation["transformer_calls_by_component"] == {"transformer": 2, "transformer_2": 2}


def _lora_delta(state: dict, prefix: str, scale: float) -> dict[str, torch.Tensor]:
    out = {}
    for key, a in state.items():
        if key.endswith(".lora_A.weight"):
            name = key[len(prefix) + 1:-len(".lora_A.weight")]
            out[name] = scale * (state[key.replace("lora_A", "lora_B")] @ a)
    return out


@pytest.mark.parametrize(("family", "teacher", "student", "lora_files"), [
    ("wan", "tiny-wan", "tiny-wan-lora-2step", {"transformer": "wan_lora.safetensors"}),
    ("wan22", "tiny-wan22", "tiny-wan22-lightning",
     {"transformer": "wan_lora.safetensors", "transformer_2": "wan_lora_2.safetensors"}),
    ("cogvideox", "tiny-cogvideox", "tiny-cogvideox-lora", {"transformer": "cogvideox_lora.safetensors"}),
])
def test_loras_are_fused_at_their_scale_into_their_transformer(family_dirs, family, teacher, student, lora_files):
    folder = family_dirs(family)
    base = load_pipeline(spec_for(teacher, family, folder), device="cpu").pipe
    fused = load_pipeline(spec_for(student, family, folder), device="cpu").pipe
    scales = {lo.target: lo.scale for lo in get_preset(student).loras}
    for target, file in lora_files.items():
        state = load_file(str(folder / "loras" / file))
        deltas = _lora_delta(state, "transformer", scales[target])
        assert deltas
        base_params = dict(getattr(base, target).named_parameters())
        fused_params = dict(getattr(fused, target).named_parameters())
        for name, delta in deltas.items():
            got = fused_params[f"{name}.weight"] - base_params[f"{name}.weight"]
            assert torch.allclose(got, delta, atol=1e-5), name
        # Unloaded after fusing: plain layers, no LoRA overhead in the student's timing.
        assert not any("lora" in n for n, _ in getattr(fused, target).named_modules())
        untouched = [n for n in fused_params if n.removesuffix(".weight") not in deltas][:5]
        assert all(torch.equal(fused_params[n], base_params[n]) for n in untouched)


def test_a_separate_transformer_replaces_the_one_in_the_weights(family_dirs):
    ltx = family_dirs("ltx")
    pipe = load_pipeline(spec_for("tiny-ltx-distilled", "ltx", ltx), device="cpu").pipe
    state = load_file(str(ltx / "ltx_student" / "transformer.safetensors"))
    params = dict(pipe.transformer.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in state.items() if k in params)
    hy = family_dirs("hunyuanvideo")
    teacher = load_pipeline(spec_for("tiny-hunyuanvideo", "hunyuanvideo", hy), device="cpu").pipe
    student = load_pipeline(spec_for("tiny-fasthunyuan", "hunyuanvideo", hy), device="cpu").pipe
    name, p = next(iter(student.transformer.named_parameters()))
    assert not torch.equal(p, dict(teacher.transformer.named_parameters())[name])
    assert student.scheduler.config.shift == 17.0 and teacher.scheduler.config.shift == 7.0


def test_the_ltx_student_runs_the_cards_timesteps(family_dirs):
    folder = family_dirs("ltx")
    result = generate_clip(spec_for("tiny-ltx-distilled", "ltx", folder), prompt="a chef", seed=0,
                           cache=PipelineCache())
    assert result.generation["timesteps"] == pytest.approx([1000.0, 909.0, 0.03], abs=1e-3)
    assert result.unet_evals == 3


def test_wan_students_scheduler_is_the_cards_euler_steps(family_dirs):
    """lightx2v's 4-step Wan students step with Euler over 1000/750/500/250 shifted by 5. DPM-Solver++ of order 1
    on flow sigmas is that Euler step; its timesteps must be the shifted ones."""
    folder = family_dirs("wan")
    entry = load_pipeline(spec_for("tiny-wan", "wan", folder), device="cpu")  # the weights' UniPC config
    for name in ("wan2.1-t2v-14b-lightx2v-4step", "wan2.2-t2v-a14b-lightning-4step"):
        scheduler = build_scheduler(get_preset(name), entry.base_scheduler_config)
        scheduler.set_timesteps(4)
        sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25])
        shifted = 5.0 * sigmas / (1 + 4.0 * sigmas)
        assert torch.allclose(scheduler.timesteps.float(), shifted * 1000, atol=1.0), scheduler.timesteps
        assert scheduler.config.solver_order == 1 and scheduler.config.algorithm_type == "dpmsolver++"


def test_mochi_makes_a_clip(family_dirs):
    folder = family_dirs("mochi")
    spec = spec_for("tiny-mochi", "mochi", folder)
    result = generate_clip(spec, prompt="a red fox", seed=0, cache=PipelineCache())
    assert result.frames == 7 and result.unet_evals == 2 * 2


def test_missing_lora_and_transformer_files_name_the_file_and_the_command(family_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extra = tmp_path / "mine.toml"
    folder = family_dirs("wan")
    extra.write_text(
        '[wan-missing-lora]\nkind = "diffusers"\nfamily = "wan"\npipeline = "WanPipeline"\n'
        f'weights = "{folder}/wan"\nsteps = 2\n'
        'loras = [{ repo = "lightx2v/Not-Here-Lora", file = "loras/x_rank64.safetensors" }]\n'
        'memory_gb = { transformer = 1 }\n'
        '[wan-missing-weights]\nkind = "diffusers"\nfamily = "wan"\npipeline = "WanPipeline"\n'
        'weights = "Wan-AI/Not-Here-Diffusers"\nsteps = 2\nmemory_gb = { transformer = 1 }\n')
    monkeypatch.setenv("BLINDPAIR_PRESETS_FILE", str(extra))
    with pytest.raises(WeightsMissing) as err:
        load_pipeline(spec_for("wan-missing-lora", "wan", folder), device="cpu")
    assert "hf download lightx2v/Not-Here-Lora loras/x_rank64.safetensors" in str(err.value)
    with pytest.raises(WeightsMissing) as err:
        load_pipeline(spec_for("wan-missing-weights", "wan", folder), device="cpu")
    assert "hf download Wan-AI/Not-Here-Diffusers" in str(err.value) and "offline" in str(err.value)
