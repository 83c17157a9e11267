"""Generate one clip and measure what it cost: the part of the worker that knows about diffusers."""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from app.media.gif import inspect_gif
from worker.gif import encode_master, fit_level
from worker.pipelines import PipelineCache, free_device_memory, process_cache
from worker.presets import RunSpec

# One clip at a time on the device, per worker process. `blindpair worker --concurrency N` runs N clips in
# threads that share one loaded pipeline: each clip's denoising and decoding hold this lock, its GIF encoding
# (CPU, in C code that releases the GIL) does not, so one clip's encoding overlaps the next one's denoising.
# bench.gpu_generation measured why: on an H100 a 4-step Lightning clip takes 0.63 s of GPU and ~0.7-1.6 s to
# encode, so a lone clip at a time leaves the GPU idle half the time. Separate processes (prefork) would each
# hold a copy of the model and time-slice the GPU instead.
DEVICE_LOCK = threading.Lock()


class GpuOutOfMemory(RuntimeError):
    """CUDA ran out of memory; the message says what to change."""


@dataclass
class ClipResult:
    gif: bytes  # the clip file: a GIF master, or the MP4/WebM of a video study (whatever the field's historic name)
    width: int
    height: int
    frames: int
    fps: float
    wall_seconds: float
    denoise_seconds: float
    decode_seconds: float
    encode_seconds: float
    steps: int | None
    guidance_scale: float | None
    unet_evals: int
    peak_memory_bytes: int | None
    device: str
    dtype: str | None
    generation: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    """The versions that made a clip (a copy: each clip's record is its own)."""
    return dict(_library_versions())


@cache
def _library_versions() -> dict[str, str]:
    # Read once per process: importlib.metadata scans site-packages on every call (3-15 ms a clip on a tiny
    # CPU clip, bench.generation), and the modules already imported cannot change version under us anyway.
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "safetensors", "pillow", "celery"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        import torch

        if torch.version.cuda:
            out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()})"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def generate_clip(spec: RunSpec, *, prompt: str, seed: int, device: str = "cpu",
                  cache: PipelineCache | None = None) -> ClipResult:
    """Render ``prompt`` with ``spec`` and return the GIF and its measured cost."""
    if spec.preset.kind == "demo":
        return _generate_demo(spec, prompt=prompt, seed=seed)
    run = _generate_diffusers if spec.preset.kind == "diffusers" else _generate_animatediff
    try:
        return run(spec, prompt=prompt, seed=seed, device=device,
                   cache=cache if cache is not None else process_cache())
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc):
            free_device_memory(device)  # the half-built activations; the cached pipeline stays usable
            raise GpuOutOfMemory(
                f"GPU out of memory on {device} for {spec.frames} frames at {spec.width}x{spec.height} "
                f"({spec.dtype}): run fewer workers per GPU, use float16, or lower frames/size "
                f"({str(exc).splitlines()[0][:200]})"
            ) from exc
        raise


def reset_peak_memory(device: str) -> None:
    """Start this clip's peak-memory count from what is allocated now (the resident pipelines' weights)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_memory(device: str) -> int | None:
    """The most memory allocated since the last ``reset_peak_memory`` (None on the CPU: not measured)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    return None


def _encode(frames: list, *, fps: float) -> tuple[bytes, int, dict[str, Any]]:
    """The clip's uncompressed master, the mildest lossy level that fits it alone, and its timing record.

    The master is what the worker stores; the served copy is made from it at the pair's level
    (worker/pair_encoding.py). GIF delays are whole centiseconds: 8 fps asks for 125 ms and the file holds
    12 cs, so it plays at 8.33 fps; the clip records the rate the file plays (``inspect_gif``), and the rate
    asked for beside it.
    """
    master = encode_master(frames, fps=fps)
    level = fit_level(master)
    info = inspect_gif(master)
    timing = {"fps_requested": fps, "frame_delay_ms": info.durations_ms[0] if info.durations_ms else None,
              "fps_played": info.fps, "fit_level": level}
    return master, level, timing


@dataclass(frozen=True)
class ClipShape:
    width: int
    height: int
    frames: int
    fps: float


def encode_clip_file(frames: list, spec: RunSpec) -> tuple[bytes, ClipShape, dict[str, Any]]:
    """The clip in the study's format and its record: for GIF the uncompressed master as above (the served copy
    is made at the pair's level); for MP4/WebM the one file every model's clip gets, written by the one video
    encoder at the study's fixed quality from the pipeline's full-colour frames (app/media/video.py) and
    served as it is, with codec, encoder version, settings and bitrate recorded for the clips manifest."""
    if spec.clip_format == "gif":
        master, _level, timing = _encode(frames, fps=spec.fps)
        info = inspect_gif(master)
        return master, ClipShape(info.width, info.height, info.frames, info.fps), timing
    import numpy as np

    from app.media import video

    arrays = [np.asarray(f.convert("RGB")) for f in frames]
    data = video.encode(arrays, spec.fps, spec.clip_format)
    h, w = arrays[0].shape[:2]
    shape = ClipShape(w, h, len(arrays), round(spec.fps, 2))
    encoding = {**video.encoder_description(spec.clip_format),
                "bitrate_kbps": round(len(data) * 8 / (shape.frames / shape.fps) / 1000, 1)}
    return data, shape, {"fps_requested": spec.fps, "fps_played": shape.fps, "encoding": encoding}


def _generate_animatediff(spec: RunSpec, *, prompt: str, seed: int, device: str, cache: PipelineCache) -> ClipResult:
    with DEVICE_LOCK:
        # Timed from here: waiting for another clip's turn on the device is not this clip's cost.
        t_start = time.perf_counter()
        entry, loaded_now = cache.get(spec, device=device)
        pipe = entry.pipe
        # How many pipelines sit in memory beside this one: the peak below includes their weights, so peaks
        # compare like with like only between clips measured with the same number resident.
        resident = len(cache)
        t0 = time.perf_counter()
        reset_peak_memory(device)  # per clip: the peak is this clip's, not the process's
        frames, t_denoised, t_decoded, t_converted, unet_calls = _denoise_and_decode(
            pipe, spec, prompt=prompt, seed=seed, device=device)
        peak = peak_memory(device)
        cfg_multiplier = 2 if pipe.do_classifier_free_guidance else 1
        # Read under the lock: the next clip may set another preset's scheduler on this shared pipeline.
        scheduler = pipe.scheduler
        scheduler_record = {"scheduler_class": type(scheduler).__name__,
                            "scheduler_config": _json_safe(dict(scheduler.config)),
                            "timesteps": [int(t) for t in scheduler.timesteps.tolist()]}
    t_encode = time.perf_counter()
    master, info, timing = encode_clip_file(frames, spec)
    t_end = time.perf_counter()
    generation = {
        "run": spec.describe(),
        "seed": seed,
        "generator": "torch.Generator('cpu')",
        **scheduler_record,
        "unet_forward_calls": unet_calls,
        "versions": library_versions(),
        "pipeline_loaded_for_this_clip": loaded_now,
        "load_seconds": round(entry.load_seconds, 4) if loaded_now else 0.0,
        # The first clip after a load pays one-off costs (CUDA kernels chosen and compiled, caches filled): it is
        # reported, and left out of the per-model medians (app/services/generation.py cost_summary).
        "warmup": loaded_now,
        "pipelines_resident": resident,
        # The CPU side of decoding (tensor to PIL images), kept apart from decode_seconds (the VAE on the device).
        "postprocess_seconds": round(t_converted - t_decoded, 6),
        **_negative_prompt_record(spec),
        **timing,
    }
    return ClipResult(
        # Shape and rate as the file plays them (fps: whole-centisecond delays), as import-gifs records them.
        gif=master, width=info.width, height=info.height, frames=info.frames, fps=info.fps,
        # Wall time of the clip itself; a one-off pipeline load is kept apart in generation["load_seconds"].
        wall_seconds=t_end - t0 if loaded_now else t_end - t_start,
        denoise_seconds=t_denoised - t0, decode_seconds=t_decoded - t_denoised, encode_seconds=t_end - t_encode,
        steps=spec.steps, guidance_scale=spec.guidance, unet_evals=unet_calls * cfg_multiplier,
        peak_memory_bytes=peak, device=device_name(device), dtype=entry.dtype, generation=generation,
    )


def _negative_prompt_record(spec: RunSpec) -> dict[str, Any]:
    """The negative prompt and whether the model used it: diffusers feeds it only to classifier-free guidance,
    which runs only at guidance above 1, so Lightning (guidance 1.0) ignores it."""
    return {"negative_prompt": spec.negative_prompt,
            "negative_prompt_used": bool(spec.negative_prompt) and spec.uses_cfg}


def _denoise_and_decode(pipe, spec: RunSpec, *, prompt: str, seed: int, device: str):
    """The device part of a clip: PIL frames, the times denoising, VAE decoding and the conversion to PIL images
    ended, and the UNet calls."""
    import torch

    # Count real UNet forward passes; with CFG each pass carries the conditional and unconditional halves.
    calls = {"n": 0}
    hook = pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        # A CPU generator gives the same initial noise for a seed on any device (diffusers' randn_tensor).
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            latents = pipe(
                prompt=prompt,
                negative_prompt=spec.negative_prompt if spec.uses_cfg else None,
                num_frames=spec.frames,
                width=spec.width,
                height=spec.height,
                num_inference_steps=spec.steps,
                guidance_scale=spec.guidance,
                generator=generator,
                output_type="latent",
            ).frames
            _sync(device)
            t_denoised = time.perf_counter()
            video = pipe.decode_latents(latents)
            _sync(device)
            t_decoded = time.perf_counter()  # the VAE on the device, without the conversion to images
            frames = pipe.video_processor.postprocess_video(video=video, output_type="pil")[0]
        t_converted = time.perf_counter()
    finally:
        hook.remove()
    return frames, t_denoised, t_decoded, t_converted, calls["n"]


def _generate_diffusers(spec: RunSpec, *, prompt: str, seed: int, device: str, cache: PipelineCache) -> ClipResult:
    """A clip of any diffusers video family, with the same cost record as AnimateDiff's: device seconds (denoising
    and decoding apart), transformer evaluations (forward passes x samples per pass: CFG doubles them whether the
    pipeline batches the two halves, as LTX-Video does, or runs them apart, as Wan does), peak memory and the
    offload mode that produced it (offloading changes the speed comparison)."""

    with DEVICE_LOCK:
        t_start = time.perf_counter()
        entry, loaded_now = cache.get(spec, device=device)
        pipe = entry.pipe
        resident = len(cache)  # the peak below includes the weights of every resident pipeline
        t0 = time.perf_counter()
        reset_peak_memory(device)  # per clip: the peak is this clip's, not the process's
        frames, t_denoised, t_decoded, counts = _run_diffusers(pipe, spec, prompt=prompt, seed=seed, device=device)
        peak = peak_memory(device)
        scheduler = pipe.scheduler
        scheduler_record = {"scheduler_class": type(scheduler).__name__,
                            "scheduler_config": _json_safe(dict(scheduler.config)),
                            "timesteps": [float(t) for t in scheduler.timesteps.tolist()]}
    t_encode = time.perf_counter()
    master, info, timing = encode_clip_file(frames, spec)  # the study's format, at the family's native fps
    t_end = time.perf_counter()
    plan = entry.memory_plan
    generation = {
        "run": spec.describe(),
        "seed": seed,
        "generator": "torch.Generator('cpu')",
        **scheduler_record,
        "transformer_forward_calls": counts["calls"],
        "transformer_evaluations": counts["evals"],
        "transformer_calls_by_component": counts["by_component"],
        "cfg_passes": 2 if spec.uses_cfg else 1,
        "memory": plan.describe() if plan is not None else {},
        "offload": plan.offload if plan is not None else "none",
        "versions": library_versions(),
        "pipeline_loaded_for_this_clip": loaded_now,
        "load_seconds": round(entry.load_seconds, 4) if loaded_now else 0.0,
        "warmup": loaded_now,  # left out of the per-model medians, as for AnimateDiff
        "pipelines_resident": resident,
        # These pipelines convert to PIL images inside their call: decode_seconds includes that CPU step here.
        "decode_includes_postprocess": True,
        **_negative_prompt_record(spec),
        **timing,
    }
    return ClipResult(
        gif=master, width=info.width, height=info.height, frames=info.frames, fps=info.fps,
        wall_seconds=t_end - t0 if loaded_now else t_end - t_start,
        denoise_seconds=t_denoised - t0, decode_seconds=t_decoded - t_denoised, encode_seconds=t_end - t_encode,
        steps=spec.steps, guidance_scale=spec.guidance, unet_evals=counts["evals"],
        peak_memory_bytes=peak, device=device_name(device), dtype=entry.dtype, generation=generation,
    )


def diffusers_call_args(spec: RunSpec, *, prompt: str, generator) -> dict[str, Any]:
    """The pipeline call for ``spec``: the study's settings, the preset's sampling and the card's own arguments."""
    args: dict[str, Any] = {
        "prompt": prompt,
        "num_frames": spec.frames,
        "width": spec.width,
        "height": spec.height,
        "num_inference_steps": spec.steps,
        "guidance_scale": spec.guidance,
        "generator": generator,
        "output_type": "pil",
        **spec.preset.call_args,
    }
    if spec.uses_cfg and spec.negative_prompt:
        args["negative_prompt"] = spec.negative_prompt
    if spec.guidance_2 is not None:
        args["guidance_scale_2"] = spec.guidance_2
    return args


def _run_diffusers(pipe, spec: RunSpec, *, prompt: str, seed: int, device: str):
    """PIL frames, when denoising ended (the first VAE decode call) and decoding ended, and the transformer counts."""
    import torch

    counts: dict[str, Any] = {"calls": 0, "evals": 0, "by_component": {}}

    def counter(name: str):
        def count(_module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            counts["calls"] += 1
            counts["evals"] += int(hidden.shape[0]) if hasattr(hidden, "shape") else 1
            counts["by_component"][name] = counts["by_component"].get(name, 0) + 1
        return count

    # Wan 2.2 runs two experts (transformer for high noise, transformer_2 for low): both are counted.
    hooks = [module.register_forward_pre_hook(counter(name), with_kwargs=True)
             for name in ("transformer", "transformer_2")
             if (module := getattr(pipe, name, None)) is not None]
    marks: dict[str, float] = {}
    vae = pipe.vae
    original_decode = vae.decode

    def timed_decode(*args, **kwargs):
        # Denoising ends where the pipeline first decodes: every family's pipeline decodes through vae.decode.
        if "denoised" not in marks:
            _sync(device)
            marks["denoised"] = time.perf_counter()
        return original_decode(*args, **kwargs)

    vae.decode = timed_decode
    try:
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            frames = pipe(**diffusers_call_args(spec, prompt=prompt, generator=generator)).frames[0]
            _sync(device)
        t_decoded = time.perf_counter()
    finally:
        del vae.decode  # the instance attribute goes; the class's method is back
        for hook in hooks:
            hook.remove()
    return list(frames), marks.get("denoised", t_decoded), t_decoded, counts


def _generate_demo(spec: RunSpec, *, prompt: str, seed: int) -> ClipResult:
    from app.media.demo_render import render_clip

    t0 = time.perf_counter()
    frames = render_clip(prompt, style=spec.preset.style, seed=seed, frames=spec.frames, width=spec.width,
                         height=spec.height)
    t1 = time.perf_counter()
    master, info, timing = encode_clip_file(frames, spec)
    t2 = time.perf_counter()
    return ClipResult(
        gif=master, width=info.width, height=info.height, frames=info.frames, fps=info.fps, wall_seconds=t2 - t0,
        denoise_seconds=t1 - t0, decode_seconds=0.0, encode_seconds=t2 - t1, steps=None, guidance_scale=None,
        unet_evals=0, peak_memory_bytes=None, device=device_name("cpu"), dtype=None,
        generation={"run": spec.describe(), "seed": seed, "versions": library_versions(), **timing,
                    "negative_prompt": spec.negative_prompt, "negative_prompt_used": False,
                    "note": "procedural demo renderer: no model, render time is recorded as denoise time"},
    )
