"""GPU generation: what scripts/gpu_check.py measures, plus UNet MFU and the speed-ups the field uses.

    python -m bench.gpu_generation                # CUDA, fp16, 16 frames at 512x512, random weights (< 8 min)
    python -m bench.gpu_generation --tiny         # CPU, tiny components: what the test suite runs

The headline numbers (seconds per clip, UNet and VAE time, peak memory, clips per hour, Lightning's speedup
against the ideal set by UNet evaluations) come from ``scripts/gpu_check.py`` (the worker's own
``generate_clip`` on SD 1.5-sized random-weight components), called here unchanged. This module adds:

- model FLOPs utilisation of the UNet: FLOPs of one UNet evaluation counted by
  ``torch.utils.flop_counter.FlopCounterMode`` x evaluations per clip / denoising seconds (which also hold the
  scheduler steps and, for CFG, the guidance arithmetic: a slight underestimate of MFU), against the GPU's
  dense fp16/bf16 tensor-core peak (table below, from NVIDIA's data sheets; ``--peak-tflops`` overrides);
- the speed-ups tried on the Lightning preset, each timed the same way (warm-up, then the median of
  ``--runs``): batching prompts (2 and 4 clips per call), channels-last memory format, each SDPA backend
  (flash, memory-efficient, cuDNN, math), ``torch.compile`` of the UNet (compile time reported apart), and
  VAE decode in chunks (16, 8, 4, 2 frames at a time: time and peak memory);
- GIF encoding on this machine's CPU, on real AnimateDiff frames (``--real-gifs``; random weights make noise,
  which says nothing about a real clip's encode time or size), against a Lightning clip's GPU time;
- worker processes per GPU: Lightning clips/hour through ``generate_clip`` with one process and with two,
  each encoding real frames, so one process's GIF encoding can overlap the other's denoising
  (``blindpair worker --concurrency 2``).
Stops starting new sections once ``--budget-s`` is spent, and says which were skipped. The report is saved
after every section, so a run cut short by its time limit still leaves what it measured.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import multiprocessing
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, run_cli
from bench.gif_encoding import SHARED_GIFS, real_clips

# Dense (no sparsity) fp16/bf16 tensor-core peaks with fp32 accumulation, TFLOP/s, from NVIDIA's data sheets.
PEAK_TFLOPS = (
    ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4),
    ("A100", 312.0), ("L40S", 362.05), ("L40", 181.05), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2),
    ("RTX 6000 Ada", 364.2), ("V100", 125.0), ("T4", 65.0),
)
# (processes, clips in flight per process): one clip at a time; the worker's thread pool; two processes.
LAYOUTS = ((1, 1), (1, 2), (1, 3), (2, 1))
SECTIONS = ("presets", "encode", "concurrency", "variants")
PROMPTS = ("a corgi running on a beach at sunset", "a lighthouse in a storm, waves crashing",
           "a busy night market in the rain, neon signs", "a hot air balloon over a misty valley at dawn")


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def unet_flops(pipe, *, frames: int, size: int, device: str) -> int:
    """FLOPs of one UNet evaluation for one video (batch 1, no CFG), counted by PyTorch's FLOP counter inside the
    pipeline's own UNet call, so the shapes are exactly those of a real clip."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counts: list[int] = []
    forward = pipe.unet.forward

    def counted(*args, **kwargs):
        counter = FlopCounterMode(display=False)
        with counter:
            out = forward(*args, **kwargs)
        counts.append(int(counter.get_total_flops()))
        return out

    pipe.unet.forward = counted  # an instance attribute: nn.Module.__call__ looks it up first
    try:
        with torch.inference_mode():
            pipe(prompt=PROMPTS[0], num_frames=frames, width=size, height=size, num_inference_steps=1,
                 guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(0), output_type="latent")
            _sync(device)
    finally:
        del pipe.unet.forward
    return counts[0]


class Bench:
    def __init__(self, args, gpu_check) -> None:
        import torch

        self.args = args
        self.device = "cpu" if args.tiny else args.device
        self.dtype_name = "float32" if args.tiny else args.dtype
        self.dtype = getattr(torch, self.dtype_name)
        self.frames = args.frames or (2 if args.tiny else 16)
        self.size = args.size or (32 if args.tiny else 512)
        self.started = args.started
        self._gpu_check = gpu_check
        self.skipped: list[str] = []
        self.on_variant = lambda rows: None  # run() saves the report after each variant

    @functools.cached_property
    def parts(self) -> tuple:
        """The components, built on first use: the worker-layout section builds its own in each process."""
        return self._gpu_check.build_components(tiny=self.args.tiny, device=self.device, dtype=self.dtype)

    def pipeline(self, key: str, preset: str, steps: int | None = None):
        from diffusers import AnimateDiffPipeline

        from worker.pipelines import build_scheduler
        from worker.presets import resolve_run

        unet, vae, text, tokenizer, scheduler, adapters = self.parts
        settings = {"frames": self.frames, "width": self.size, "height": self.size, "fps": 8, "dtype": self.dtype_name,
                    "negative_prompt": "bad quality", "base_model": "random-weights"}
        spec = resolve_run(model_name=key, preset=preset, overrides={"steps": steps, "off_card": True} if steps else {},
                           settings=settings)
        pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   motion_adapter=adapters[key], scheduler=scheduler).to(self.device)
        pipe.scheduler = build_scheduler(spec.preset, dict(scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        return pipe, spec

    def over_budget(self, name: str) -> bool:
        if time.perf_counter() - self.started > self.args.budget_s:
            self.skipped.append(name)
            return True
        return False

    def clip(self, pipe, spec, *, batch: int = 1, chunk: int = 16, sdpa=None) -> dict[str, float]:
        """One call: denoise ``batch`` prompts to latents, then decode; seconds per clip and peak memory."""
        import torch

        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        cfg = spec.guidance > 1
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        ctx = torch.nn.attention.sdpa_kernel([sdpa]) if sdpa is not None else nullcontext()
        with torch.inference_mode(), ctx:
            _sync(self.device)
            t0 = time.perf_counter()
            latents = pipe(prompt=prompts, negative_prompt=[spec.negative_prompt] * batch if cfg else None,
                           num_frames=spec.frames, width=spec.width, height=spec.height,
                           num_inference_steps=spec.steps, guidance_scale=spec.guidance,
                           generator=torch.Generator("cpu").manual_seed(0), output_type="latent").frames
            _sync(self.device)
            t1 = time.perf_counter()
            pipe.decode_latents(latents, decode_chunk_size=chunk)
            _sync(self.device)
            t2 = time.perf_counter()
        peak = torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else None
        return {"denoise": (t1 - t0) / batch, "decode": (t2 - t1) / batch, "total": (t2 - t0) / batch, "peak": peak}

    def timed(self, pipe, spec, **kw) -> dict[str, float]:
        self.clip(pipe, spec, **kw)  # warm-up: kernels, allocator, autotuning
        runs = [self.clip(pipe, spec, **kw) for _ in range(self.args.runs)]
        out = {k: statistics.median(r[k] for r in runs) for k in ("denoise", "decode", "total")}
        peaks = [r["peak"] for r in runs if r["peak"]]
        out["peak"] = max(peaks) if peaks else None
        return out


def variants(bench: Bench, key: str, preset: str) -> list[dict[str, Any]]:
    import torch
    from torch.nn.attention import SDPBackend

    pipe, spec = bench.pipeline(key, preset, steps=bench.args.steps or None)
    rows: list[dict[str, Any]] = []

    def add(name: str, note: str = "", **kw) -> None:
        if bench.over_budget(name):
            return
        try:
            rows.append({"variant": name, "note": note, **bench.timed(pipe, spec, **kw)})
        except Exception as exc:  # a backend this GPU/PyTorch lacks is a result, not a crash
            rows.append({"variant": name, "note": f"not available: {type(exc).__name__}: {str(exc)[:120]}"})
        bench.on_variant(rows)

    add("baseline (fp16, default SDPA, batch 1, VAE chunk 16)" if not bench.args.tiny else "baseline")
    for b in (2, 4):
        add(f"batch {b} prompts per call", note="seconds per clip = call / batch", batch=b)
    for chunk in (8, 4, 2):
        add(f"VAE decode in chunks of {chunk} frames", chunk=chunk)
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("memory-efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cuDNN", getattr(SDPBackend, "CUDNN_ATTENTION", None)), ("math", SDPBackend.MATH)):
        if backend is not None:
            add(f"SDPA backend: {name}", sdpa=backend)
    if not bench.over_budget("channels-last"):
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        add("channels-last UNet and VAE")
        pipe.unet.to(memory_format=torch.contiguous_format)
        pipe.vae.to(memory_format=torch.contiguous_format)
    if bench.args.compile and not bench.over_budget("torch.compile"):
        original = pipe.unet
        try:
            t0 = time.perf_counter()
            # The default mode: max-autotune benchmarks Triton configurations for every GEMM and convolution
            # shape of the UNet, which takes longer than a whole 15-minute GPU lease.
            pipe.unet = torch.compile(original, fullgraph=False)
            bench.clip(pipe, spec)  # compiles
            compile_s = time.perf_counter() - t0
            add("torch.compile(unet), default mode", note=f"compile + first clip {compile_s:.0f} s")
        except Exception as exc:
            rows.append({"variant": "torch.compile(unet)", "note": f"failed: {type(exc).__name__}: {str(exc)[:120]}"})
        finally:
            pipe.unet = original
    return rows


def real_frames(args, frames: int, size: int) -> list[tuple[str, list]]:
    return real_clips(frames, size, args.real_clips, Path(args.real_gifs)) if args.real_gifs else []


def encode_on_this_cpu(clips: list[tuple[str, list]], *, fps: float) -> list[dict[str, Any]]:
    """The worker's own encoder (``encode_clip_gif``: per-frame palettes, gifsicle lossy, metadata strip) on
    real frames: best of two runs per clip, so a one-off page fault or thread start does not count."""
    from worker.gif import encode_clip_gif

    rows = []
    for name, frames in clips:
        best, size, level = float("inf"), 0, None
        for _ in range(2):
            t0 = time.perf_counter()
            data, _info, level = encode_clip_gif(frames, fps=fps)
            best = min(best, time.perf_counter() - t0)
            size = len(data)
        rows.append({"clip": name, "seconds": best, "bytes": size, "lossy_level": level})
    return rows


def _generator_process(settings: dict[str, Any], barrier, results) -> None:
    """One worker process of the concurrency section (spawned): build the components, warm up, wait for the
    others, then generate ``clips`` Lightning clips through ``generate_clip``, each GIF made of real frames."""
    import torch

    import worker.generate as generate
    from worker.pipelines import PipelineCache
    from worker.presets import resolve_run

    if settings["tiny"]:
        torch.set_num_threads(1)
    gpu_check = load_gpu_check()
    device, dtype_name = settings["device"], settings["dtype"]
    unet, vae, text, tokenizer, scheduler, adapters = gpu_check.build_components(
        tiny=settings["tiny"], device=device, dtype=getattr(torch, dtype_name))
    spec = resolve_run(model_name="lightning", preset=settings["preset"], overrides=settings["overrides"],
                       settings=settings["run"])
    cache = PipelineCache(capacity=1)
    gpu_check.cache_pipeline(cache, spec, (unet, vae, text, tokenizer, scheduler, adapters["lightning"]),
                             device=device, dtype_name=dtype_name)
    real = itertools.cycle([frames for _, frames in settings["real"]]) if settings["real"] else None
    if real is not None:
        encode = generate.encode_clip_file
        generate.encode_clip_file = lambda _noise, spec: encode(next(real), spec)
    generate.generate_clip(spec, prompt="warm-up", seed=0, device=device, cache=cache)
    clips: list = []

    def loop(first: int) -> None:  # threads share the cache, as the worker's thread pool does
        for i in range(first, first + settings["clips"]):
            clips.append(generate.generate_clip(spec, prompt=PROMPTS[i % len(PROMPTS)], seed=i, device=device,
                                                cache=cache))

    threads = [threading.Thread(target=loop, args=(k * settings["clips"],)) for k in range(settings["threads"])]
    barrier.wait()
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({"start": t0, "end": time.monotonic(), "gpu": [c.denoise_seconds + c.decode_seconds for c in clips],
                 "encode": [c.encode_seconds for c in clips]})


def worker_concurrency(bench: Bench, preset: str, real: list[tuple[str, list]], processes: int,
                       threads: int) -> dict[str, Any]:
    """Lightning clips/hour with ``processes`` generator processes sharing the GPU, each running ``threads``
    clips at a time over one pipeline as ``blindpair worker --concurrency N`` does (CLOCK_MONOTONIC is one
    clock for all processes, so the wall time runs from the first start to the last end)."""
    ctx = multiprocessing.get_context("spawn")  # CUDA is initialised here: forked children could not use it
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    settings = {"device": bench.device, "dtype": bench.dtype_name, "tiny": bench.args.tiny, "preset": preset,
                "overrides": {"steps": bench.args.steps, "off_card": True} if bench.args.steps else {},
                "run": {"frames": bench.frames, "width": bench.size, "height": bench.size, "fps": 8,
                        "dtype": bench.dtype_name, "negative_prompt": "bad quality", "base_model": "random-weights"},
                "real": real[:2], "clips": bench.args.concurrency_clips, "threads": threads}
    procs = [ctx.Process(target=_generator_process, args=(settings, barrier, results)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=600)
        got = [results.get(timeout=600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    wall = max(r["end"] for r in got) - min(r["start"] for r in got)
    clips = sum(len(r["gpu"]) for r in got)
    return {"processes": processes, "threads": threads, "clips": clips, "wall_seconds": wall,
            "clips_per_hour": 3600 * clips / wall,
            "gpu_seconds_median": statistics.median(x for r in got for x in r["gpu"]),
            "encode_seconds_median": statistics.median(x for r in got for x in r["encode"])}


def headline(report: Report, bench: Bench, base: dict[str, Any]) -> None:
    """The presets table: scripts/gpu_check.py's numbers with the UNet's FLOPs and MFU beside them."""
    args = bench.args
    pipe, _spec = bench.pipeline("animatediff", "animatediff", steps=args.steps or None)
    flops = unet_flops(pipe, frames=bench.frames, size=bench.size, device=bench.device)
    del pipe
    peak = peak_tflops(base["device"], args.peak_tflops) if bench.dtype_name != "float32" else args.peak_tflops
    rows = []
    for row in base["presets"].values():
        achieved = flops * row["unet_evals"] / row["denoise_seconds"]
        mfu = achieved / (peak * 1e12) if peak else None
        rows.append([row["preset"], row["steps"], row["unet_evals"], row["seconds_per_clip"], row["denoise_seconds"],
                     row["decode_seconds"], row["encode_seconds"],
                     row["peak_memory_bytes"] / 2**30 if row["peak_memory_bytes"] else None, row["clips_per_hour"],
                     flops / 1e12, achieved / 1e12, f"{mfu:.1%}" if mfu is not None else "n/a (peak unknown)"])
    s = base["settings"]
    report.table(
        f"{base['device']}, {base['dtype']}, {s['frames']} frames at {s['width']}x{s['height']}, median of "
        f"{base['runs']} clip(s) after a warm-up (scripts/gpu_check.py through worker.generate.generate_clip; "
        f"GIF s is the encode of random-weight output, see the encode table for real frames)",
        ["preset", "steps", "UNet evals", "s/clip", "UNet (denoise) s", "VAE s", "GIF s", "peak GiB", "clips/h/GPU",
         "TFLOP per UNet eval", "achieved TFLOP/s", "UNet MFU"], rows)
    report.notes.append(
        f"Lightning vs AnimateDiff: {base['speedup']:.2f}x faster per clip; ideal by UNet evaluations "
        f"{base['speedup_ideal_unet_evals']:.1f}x ({base['presets']['animatediff']['unet_evals']} vs "
        f"{base['presets']['lightning']['unet_evals']}); the gap is the fixed cost (text encoder, VAE decode, GIF).")
    report.notes.append(f"MFU peak: {peak} TFLOP/s dense fp16/bf16 for {base['device']}" if peak else
                        "MFU: no peak known for this device/dtype (pass --peak-tflops).")
    report.data.update({"unet_flops_per_eval": flops, "peak_tflops": peak})


def encode_section(report: Report, bench: Bench, real: list[tuple[str, list]], base: dict[str, Any],
                   lightning: str) -> None:
    light = base["presets"]["lightning"]
    gpu_seconds = light["denoise_seconds"] + light["decode_seconds"]
    enc = encode_on_this_cpu(real, fps=8)
    report.data["encode_real"] = enc
    median = statistics.median(r["seconds"] for r in enc)
    worst = max(r["seconds"] for r in enc)
    report.table(
        f"GIF encoding on this machine's CPU ({len(enc)} real AnimateDiff clips, {bench.frames} frames at "
        f"{bench.size}x{bench.size}, worker.gif.encode_clip_gif, best of 2) against one {lightning} clip's "
        f"GPU time ({gpu_seconds:.3g} s: UNet + VAE)",
        ["clip", "encode s", "MB", "lossy level", "share of GPU time"],
        [[r["clip"], r["seconds"], r["bytes"] / 1e6, r["lossy_level"], f"{r['seconds'] / gpu_seconds:.0%}"]
         for r in enc])
    report.bar("GIF encoding under 10% of a Lightning clip's GPU time",
               worst < 0.1 * gpu_seconds, f"median {median:.3g} s, worst {worst:.3g} s = "
               f"{worst / gpu_seconds:.0%} of {gpu_seconds:.3g} s")


def run(args) -> Report:
    cmd = "python -m bench.gpu_generation" + (" --tiny" if args.tiny else "")
    report = Report("gpu_generation", "Generation on the GPU: full-size architectures, random weights", cmd,
                    params=dict(vars(args)))
    import torch

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU here: run with --tiny for the CPU self-test, or on a machine with a GPU.")
    if args.tiny:
        torch.set_num_threads(1)
        report.notes.append("Tiny CPU self-test: these numbers show that the script runs; they say nothing about "
                            "GPU performance.")

    def checkpoint(section: str) -> None:
        report.save(Path(args.results_dir))
        print(f"[{time.perf_counter() - args.started:6.0f} s] {section} done", flush=True)

    gpu_check = load_gpu_check()
    base = None
    if "presets" in args.sections:
        check_args = argparse.Namespace(tiny=args.tiny, device=args.device, dtype=args.dtype, frames=args.frames,
                                        size=args.size, steps=args.steps, runs=args.runs,
                                        lightning_steps=args.lightning_steps, json=None)
        base = gpu_check.run(check_args)
        report.data["gpu_check"] = base
        print(gpu_check.report(base), flush=True)

    bench = Bench(args, gpu_check)
    lightning = f"animatediff-lightning-{args.lightning_steps}step"
    if base is not None:
        headline(report, bench, base)
        checkpoint("headline presets and MFU")

    real = real_frames(args, bench.frames, bench.size)
    if "encode" in args.sections:
        if not real:
            report.notes.append(f"GIF encoding on real frames: skipped, no GIFs in {args.real_gifs or '(none given)'}.")
        elif base is None:
            report.notes.append("GIF encoding on real frames: skipped, it needs the presets section's Lightning time.")
        elif not bench.over_budget("GIF encoding on real frames"):
            encode_section(report, bench, real, base, lightning)
            checkpoint("GIF encoding on real frames")

    conc = []
    for processes, threads in LAYOUTS if "concurrency" in args.sections else ():
        layout = f"{processes} process(es) x {threads} clip(s) in flight"
        if bench.over_budget(layout):
            break
        conc.append(worker_concurrency(bench, lightning, real, processes, threads))
        report.data["concurrency"] = conc
        checkpoint(layout)
    if conc:
        report.table(
            f"Worker layouts on one GPU: {lightning} clips through generate_clip, GIFs encoded from "
            f"{'real frames' if real else 'the random-weight output'}, {args.concurrency_clips} clips per thread "
            f"after a warm-up. Threads share one pipeline and take turns on the GPU (worker.generate.DEVICE_LOCK): "
            f"`blindpair worker --concurrency N`; processes each hold a model and time-slice the GPU",
            ["processes", "clips in flight per process", "clips", "wall s", "clips/h/GPU",
             "median GPU s per clip (UNet + VAE)", "median encode s", "vs 1 x 1"],
            [[c["processes"], c["threads"], c["clips"], c["wall_seconds"], c["clips_per_hour"],
              c["gpu_seconds_median"], c["encode_seconds_median"],
              f"{c['clips_per_hour'] / conc[0]['clips_per_hour']:.2f}x"] for c in conc])

    def variant_done(rows: list[dict[str, Any]]) -> None:
        report.data["variants"] = rows
        checkpoint(f"variant {rows[-1]['variant']}: {rows[-1].get('total') or rows[-1]['note']}")

    bench.on_variant = variant_done
    var = variants(bench, "lightning", lightning) if "variants" in args.sections else []
    if var:
        baseline = var[0].get("total")
        report.table(
            f"Speed-ups tried on {lightning} (median of {args.runs} after a warm-up; seconds per clip)",
            ["variant", "s/clip", "UNet s", "VAE s", "peak GiB", "vs baseline", "note"],
            [[v["variant"], v.get("total"), v.get("denoise"), v.get("decode"),
              v["peak"] / 2**30 if v.get("peak") else None,
              f"{baseline / v['total']:.2f}x" if baseline and v.get("total") else "–", v.get("note", "")]
             for v in var])
    if bench.skipped:
        report.notes.append(f"Skipped after the {args.budget_s:.0f} s budget: {', '.join(bench.skipped)}.")
    if var:
        report.data["variants"] = var
    return report


def _sections(value: str) -> tuple[str, ...]:
    chosen = tuple(x.strip() for x in value.split(",") if x.strip())
    unknown = [x for x in chosen if x not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: choose from {','.join(SECTIONS)}")
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny components on the CPU (self-test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--frames", type=int, default=0)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="override both presets' steps (--tiny: 1)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--lightning-steps", type=int, default=4, choices=(1, 2, 4, 8))
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="try torch.compile of the UNet (minutes of compile time on a GPU)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the GPU's dense fp16/bf16 peak, if not in the table")
    p.add_argument("--budget-s", type=float, default=400,
                   help="no new section or variant starts after this many seconds from the start")
    p.add_argument("--real-gifs", default=str(SHARED_GIFS) if SHARED_GIFS.is_dir() else "",
                   help="a folder of real AnimateDiff GIFs to encode (default: ../shared/data/animatediff_gifs)")
    p.add_argument("--sections", type=_sections, default=SECTIONS,
                   help=f"comma-separated, from {','.join(SECTIONS)} (default: all)")
    p.add_argument("--real-clips", type=int, default=6, help="how many of those GIFs to encode")
    p.add_argument("--concurrency-clips", type=int, default=8,
                   help="Lightning clips per process in the worker-processes-per-GPU section")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


# What --tiny means here: the test suite's size, seconds long.
TINY = ["--tiny", "--runs", "1", "--steps", "1", "--no-compile", "--real-clips", "1", "--concurrency-clips", "2"]


def main(argv: list[str] | None = None) -> Report:
    started = time.perf_counter()

    def parse(rest: list[str]):
        args = parser().parse_args([*TINY, *rest])
        args.started = started
        return args

    def full_parser():
        p = parser()
        p.set_defaults(started=started)
        return p

    return run_cli("bench.gpu_generation", full_parser, run, argv, parse)

if __name__ == "__main__":
    main(sys.argv[1:])
