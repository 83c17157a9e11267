"""Teacher against student for each video family, at the card's size, on random weights.

    python -m bench.gpu_families                       # CUDA, bfloat16, every pair at its family's native size
    python -m bench.gpu_families --pairs wan2.1 ltx    # some pairs
    python -m bench.gpu_families --tiny                # CPU, tiny components: what the test suite runs

Per pair, for the teacher and the student preset: seconds per denoising step (the median of ``--timed-steps``
steps after a warm-up step), seconds per clip (step time x the card's steps, plus the VAE decode of the clip),
peak GPU memory, and the student's speed-up against the teacher beside what the cards promise (the ratio of
transformer evaluations, steps x CFG passes: what a step-distilled student claims to save).

Random weights: the architecture (``FULL_CONFIGS``: diffusers' classes at the published configs of each repo's
transformer/config.json) decides the time, not the values. The text encoders are left out (the same prompt
embeddings go to both models, random, at each family's sequence length and width): they cost the same for teacher
and student and would need another 5-8 B parameters of GPU memory. Step times are constant within a flow-matching
run, so a 50-step teacher is timed on ``--timed-steps`` steps and scaled; the report says so. LoRA students are
timed as their teacher's architecture: the worker fuses LoRAs before the first clip (worker/pipelines.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Report

# (key, teacher preset, student preset, tiny family folder)
PAIRS = (
    ("wan2.1", "wan2.1-t2v-14b", "wan2.1-t2v-14b-lightx2v-4step", "wan"),
    ("wan2.2", "wan2.2-t2v-a14b", "wan2.2-t2v-a14b-lightning-4step", "wan22"),
    ("ltx", "ltx-video-0.9.7-dev", "ltx-video-0.9.7-distilled", "ltx"),
    ("hunyuanvideo", "hunyuanvideo", "fasthunyuan-6step", "hunyuanvideo"),
    ("cogvideox", "cogvideox-5b", "cogvideox-2b", "cogvideox"),
)
# The published transformer configs (each repo's transformer/config.json), as diffusers keyword arguments; where
# the class defaults are the published model only the class is named.
FULL_CONFIGS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "wan2.1-t2v-14b": {"transformer": ("WanTransformer3DModel", {})},  # defaults: the 14B (40 x 5120)
    "wan2.2-t2v-a14b": {"transformer": ("WanTransformer3DModel", {}), "transformer_2": ("WanTransformer3DModel", {})},
    "ltx-video-0.9.7-dev": {"transformer": ("LTXVideoTransformer3DModel", {
        "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096, "num_layers": 48,
        "caption_channels": 4096})},  # the 13B
    "hunyuanvideo": {"transformer": ("HunyuanVideoTransformer3DModel", {})},  # defaults: the 13B
    "cogvideox-5b": {"transformer": ("CogVideoXTransformer3DModel", {
        "num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42, "use_rotary_positional_embeddings":
        True, "time_embed_dim": 512, "text_embed_dim": 4096, "in_channels": 16, "out_channels": 16})},
    "cogvideox-2b": {"transformer": ("CogVideoXTransformer3DModel", {})},  # defaults: the 2B
}
FULL_VAES = {"wan": "AutoencoderKLWan", "ltx": "AutoencoderKLLTXVideo", "hunyuanvideo": "AutoencoderKLHunyuanVideo",
             "cogvideox": "AutoencoderKLCogVideoX"}
# Prompt sequence lengths each pipeline uses by default (max_sequence_length).
TEXT_LENGTH = {"wan": 512, "ltx": 128, "hunyuanvideo": 256, "cogvideox": 226}


def full_pipeline(preset, device: str, dtype):
    """The preset's pipeline class on random full-size transformers (and VAE), without text encoders."""
    import diffusers
    import torch

    name = preset.name if preset.name in FULL_CONFIGS else preset.teacher
    family = preset.family
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialised on the GPU: seconds, not minutes, for 14B parameters
            parts = {k: getattr(diffusers, cls)(**cfg) for k, (cls, cfg) in FULL_CONFIGS[name].items()}
            parts["vae"] = getattr(diffusers, FULL_VAES[family])()
    finally:
        torch.set_default_dtype(previous)
    scheduler = _base_scheduler(family)
    extra = {"boundary_ratio": 0.875} if "transformer_2" in parts else {}
    if family == "hunyuanvideo":
        extra.update(text_encoder_2=None, tokenizer_2=None)
    pipe = getattr(diffusers, preset.pipeline)(scheduler=scheduler, text_encoder=None, tokenizer=None, **parts,
                                               **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _base_scheduler(family: str):
    """The scheduler each family's repos ship (scheduler/scheduler_config.json), before a preset edits it."""
    import diffusers

    if family == "wan":
        return diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=3.0)
    if family == "cogvideox":
        return diffusers.CogVideoXDDIMScheduler(timestep_spacing="trailing", prediction_type="v_prediction",
                                                beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
                                                clip_sample=False, set_alpha_to_one=True)
    if family == "hunyuanvideo":
        return diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
    return diffusers.FlowMatchEulerDiscreteScheduler()


def prompt_inputs(pipe, family: str, *, cfg: bool, dtype, device: str, tiny: bool) -> dict[str, Any]:
    """Random prompt embeddings at the family's sequence length and the transformer's text width."""
    import torch

    cfg_t = pipe.transformer.config
    gen = torch.Generator("cpu").manual_seed(1)

    def emb(length: int, width: int):
        return torch.randn(1, length, width, generator=gen).to(device, dtype)

    if family == "wan":
        length = 16 if tiny else TEXT_LENGTH["wan"]
        out = {"prompt_embeds": emb(length, cfg_t.text_dim)}
        if cfg:
            out["negative_prompt_embeds"] = emb(length, cfg_t.text_dim)
        return out
    if family == "ltx":
        length = 16 if tiny else TEXT_LENGTH["ltx"]
        mask = torch.ones(1, length, device=device, dtype=torch.long)
        out = {"prompt_embeds": emb(length, cfg_t.caption_channels), "prompt_attention_mask": mask}
        if cfg:
            out.update(negative_prompt_embeds=emb(length, cfg_t.caption_channels), negative_prompt_attention_mask=mask)
        return out
    if family == "hunyuanvideo":
        length = 16 if tiny else TEXT_LENGTH["hunyuanvideo"]
        return {"prompt_embeds": emb(length, cfg_t.text_embed_dim),
                "pooled_prompt_embeds": torch.randn(1, cfg_t.pooled_projection_dim, generator=gen).to(device, dtype),
                "prompt_attention_mask": torch.ones(1, length, device=device, dtype=torch.long)}
    length = cfg_t.max_text_seq_length  # CogVideoX's positional embedding is built for this text length
    out = {"prompt_embeds": emb(length, cfg_t.text_embed_dim)}
    if cfg:
        out["negative_prompt_embeds"] = emb(length, cfg_t.text_embed_dim)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_preset(pipe, spec, *, device: str, dtype, timed_steps: int, tiny: bool) -> dict[str, Any]:
    """Seconds per step (median over a run of ``timed_steps`` after a one-step warm-up), the VAE decode of one
    clip, peak memory, and transformer evaluations per step."""
    import torch

    from worker.generate import diffusers_call_args
    from worker.pipelines import build_scheduler

    family = spec.preset.family
    base = dict(pipe.scheduler.config)
    if spec.preset.scheduler:
        pipe.scheduler = build_scheduler(spec.preset, base)
    inputs = prompt_inputs(pipe, family, cfg=spec.uses_cfg, dtype=dtype, device=device, tiny=tiny)
    evals = {"n": 0}
    hooks = [m.register_forward_pre_hook(
        lambda _m, a, k: evals.__setitem__("n", evals["n"] + int(k.get("hidden_states", a[0] if a else None).shape[0])),
        with_kwargs=True) for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
    step_marks: list[float] = []

    def on_step(_pipe, _i, _t, kwargs):
        _sync(device)
        step_marks.append(time.perf_counter())
        return kwargs

    def run(steps: int):
        args = diffusers_call_args(spec, prompt="", generator=torch.Generator("cpu").manual_seed(0))
        args.pop("prompt")
        args.pop("negative_prompt", None)
        args.update(inputs, num_inference_steps=steps, output_type="latent", callback_on_step_end=on_step)
        if "timesteps" in args:  # a distilled schedule: its first steps, as many as timed
            args["timesteps"] = list(args["timesteps"])[:steps]
        with torch.inference_mode():
            return pipe(**args).frames

    try:
        run(1)  # warm-up: kernels chosen, memory pools grown
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        evals["n"] = 0
        step_marks.clear()
        _sync(device)
        t0 = time.perf_counter()
        latents = run(timed_steps)
        steps_done = len(step_marks)
        per_step = [b - a for a, b in zip([t0, *step_marks[:-1]], step_marks, strict=True)]
        evals_per_step = evals["n"] / max(steps_done, 1)
        t1 = time.perf_counter()
        video = _decode(pipe, family, latents)
        _sync(device)
        decode_s = time.perf_counter() - t1
        del video
    finally:
        for h in hooks:
            h.remove()
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    step_s = statistics.median(per_step[1:] if len(per_step) > 1 else per_step)
    return {"preset": spec.preset.name, "card_steps": spec.steps, "timed_steps": steps_done,
            "step_seconds": step_s, "decode_seconds": decode_s, "evals_per_step": evals_per_step,
            "clip_seconds": step_s * spec.steps + decode_s, "evals_per_clip": evals_per_step * spec.steps,
            "peak_memory_bytes": peak, "frames": spec.frames, "size": f"{spec.width}x{spec.height}"}


def _decode(pipe, family: str, latents):
    """The VAE decode each pipeline runs after denoising (the same cost for teacher and student)."""
    import torch

    vae = pipe.vae
    with torch.inference_mode():
        if family == "ltx":
            latents = pipe._unpack_latents(latents, *_ltx_latent_shape(pipe, latents))
            return vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        if family == "cogvideox":
            return pipe.decode_latents(latents)
        return vae.decode(latents.to(vae.dtype), return_dict=False)[0]


def _ltx_latent_shape(pipe, latents) -> tuple[int, int, int, int, int]:
    spec = _current["spec"]
    frames = (spec.frames - 1) // pipe.vae_temporal_compression_ratio + 1
    return (frames, spec.height // pipe.vae_spatial_compression_ratio, spec.width // pipe.vae_spatial_compression_ratio,
            pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)


_current: dict[str, Any] = {}


def run_pair(key: str, *, device: str, tiny: bool, timed_steps: int, workdir: Path) -> dict[str, Any]:
    import torch

    from worker.presets import get_preset, resolve_run
    from worker.tiny import TINY_SETTINGS, _tiny_pipeline

    _, teacher_name, student_name, tiny_family = next(p for p in PAIRS if p[0] == key)
    dtype = torch.float32 if tiny else torch.bfloat16
    rows = []
    for name in (teacher_name, student_name):
        preset = get_preset(name)
        settings = {**(TINY_SETTINGS[tiny_family] if tiny else preset.family_info.native()), "dtype": "bfloat16"}
        spec = resolve_run(model_name=name, preset=name, overrides={}, settings=settings)
        _current["spec"] = spec
        if tiny:
            pipe = _tiny_pipeline(tiny_family, workdir / tiny_family, 0).to(device)
            pipe.set_progress_bar_config(disable=True)
        else:
            pipe = full_pipeline(preset, device, dtype)
        rows.append(time_preset(pipe, spec, device=device, dtype=dtype, timed_steps=timed_steps, tiny=tiny))
        del pipe
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    teacher, student = rows
    return {"pair": key, "teacher": teacher, "student": student,
            "speedup": teacher["clip_seconds"] / student["clip_seconds"],
            "speedup_denoising": (teacher["step_seconds"] * teacher["card_steps"])
            / (student["step_seconds"] * student["card_steps"]),
            "claimed": teacher["evals_per_clip"] / student["evals_per_clip"]}


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny random components (what the tests run)")
    parser.add_argument("--pairs", nargs="*", default=[p[0] for p in PAIRS], choices=[p[0] for p in PAIRS])
    parser.add_argument("--timed-steps", type=int, default=3, help="denoising steps timed per model (after one "
                        "warm-up step); the clip's time scales the median step to the card's steps")
    parser.add_argument("--device", default="")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/ (tests)")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and not device.startswith("cuda"):
        sys.exit("the full-size run needs a CUDA GPU (about 60 GB for Wan 2.2's two experts); use --tiny on a CPU")
    report = Report(name="gpu_families" + ("_tiny" if args.tiny else ""),
                    title="Video families: teacher vs student" + (" (tiny, CPU)" if args.tiny else ""),
                    command="python -m bench.gpu_families" + (" --tiny" if args.tiny else ""),
                    params={"pairs": args.pairs, "timed_steps": args.timed_steps, "device": device})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.pairs:
            results.append(run_pair(key, device=device, tiny=args.tiny, timed_steps=args.timed_steps,
                                    workdir=Path(tmp)))
    rows = []
    for r in results:
        for role in ("teacher", "student"):
            m = r[role]
            peak = "n/a" if m["peak_memory_bytes"] is None else f"{m['peak_memory_bytes'] / 2**30:.1f}"
            rows.append([r["pair"], role, m["preset"], f"{m['frames']}x{m['size']}", m["card_steps"],
                         f"{m['evals_per_clip']:.0f}", f"{m['step_seconds']:.3f}", f"{m['decode_seconds']:.2f}",
                         f"{m['clip_seconds']:.1f}", peak])
    report.table("Per model (random weights; text encoders left out; clip = step time x card steps + VAE decode)",
                 ["pair", "role", "preset", "clip", "steps", "transformer evals", "s/step", "VAE decode s",
                  "s/clip", "peak GiB"], rows)
    report.table("Speed-up of the student", ["pair", "measured (clip)", "measured (denoising only)",
                                             "card's claim (evaluations)"],
                 [[r["pair"], f"{r['speedup']:.1f}x", f"{r['speedup_denoising']:.1f}x", f"{r['claimed']:.1f}x"]
                  for r in results])
    report.notes.append("The card's claim is the ratio of transformer evaluations its settings imply (steps x CFG "
                        "passes); the measured clip speed-up is lower by the VAE decode both models share.")
    report.data = {"results": results}
    if args.json:
        import json

        args.json.write_text(json.dumps(report.data, indent=1, default=str))
    if not args.no_save:
        report.save()
    print(report.markdown())
    return report


if __name__ == "__main__":
    main()
