"""Generation on the CPU: our overhead around the diffusers pipeline (queueing, loading, saving, bookkeeping).

    python -m bench.generation               # tiny presets, 16 frames, 6 clips per model per path (~2 min)
    python -m bench.generation --tiny        # 2 clips of 4 frames, seconds

Tiny random-weight components (``worker.tiny.build_tiny_model_dir``) are loaded three ways:

- floor: the diffusers pipeline called directly (``AnimateDiffPipeline.from_pretrained`` + the preset's scheduler,
  ``output_type="pil"``, then ``diffusers.utils.export_to_gif``), loaded once, clips back to back;
- in-process worker: ``worker.tasks.run_clip`` (exactly what the Celery task runs: claim the clip in the
  database, resolve the preset, reuse the cached pipeline, generate, encode, store the GIF atomically, record
  the cost, make pairs) for clips queued with ``app.services.generation.queue_batch``;
- a real worker process (``blindpair worker --device cpu``, embedded SQLite broker) for a queued batch,
  steady state measured between the first and the last finished clip.

Torch runs on one thread in every path: on this 2-core machine shared with other processes, OpenMP's
spinning threads made a 16-frame tiny clip 10x slower and its timing meaningless.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, percentile, run_cli
from tests.support.servers import stop_process

PRESETS = ("tiny-lightning-2step", "tiny-animatediff")
PROMPT = "a red fox running through fresh snow at dawn, cinematic"


def _settings(args, tiny_dir: Path) -> dict[str, Any]:
    return {"seeds": [0], "frames": args.frames, "width": args.size, "height": args.size, "fps": 8,
            "dtype": "float32", "negative_prompt": "blurry", "base_model": str(tiny_dir)}


def direct(args, tiny_dir: Path, out_dir: Path) -> dict[str, list[float]]:
    """The floor: diffusers called by hand with the same components and scheduler settings as the presets."""
    import torch
    from diffusers import AnimateDiffPipeline, DDIMScheduler, EulerDiscreteScheduler, MotionAdapter
    from diffusers.utils import export_to_gif
    from safetensors.torch import load_file

    from worker.presets import get_preset
    from worker.tiny import LIGHTNING_FILE

    times: dict[str, list[float]] = {}
    for name in PRESETS:
        preset = get_preset(name)
        t0 = time.perf_counter()
        if preset.adapter_file:
            adapter = MotionAdapter(**preset.adapter_config)
            adapter.load_state_dict(load_file(str(tiny_dir / LIGHTNING_FILE)))
        else:
            adapter = MotionAdapter.from_pretrained(str(tiny_dir / "motion_adapter"))
        pipe = AnimateDiffPipeline.from_pretrained(str(tiny_dir), motion_adapter=adapter, torch_dtype=torch.float32)
        cls = EulerDiscreteScheduler if preset.scheduler == "EulerDiscreteScheduler" else DDIMScheduler
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **preset.scheduler_config)
        pipe.set_progress_bar_config(disable=True)
        load = time.perf_counter() - t0
        clip_times = []
        for i in range(args.clips):
            t0 = time.perf_counter()
            frames = pipe(PROMPT, negative_prompt="blurry" if preset.guidance > 1 else None, num_frames=args.frames,
                          width=args.size, height=args.size, num_inference_steps=preset.steps,
                          guidance_scale=preset.guidance, generator=torch.Generator("cpu").manual_seed(i)).frames[0]
            export_to_gif(frames, str(out_dir / f"direct-{name}-{i}.gif"), fps=8)
            clip_times.append(time.perf_counter() - t0)
        times[name] = clip_times
        times[f"{name}:load"] = [load]
    return times


def _make_study(tiny_dir: Path, args, *, n_prompts: int, slug: str) -> int:
    from app.criteria import DEFAULT_CRITERIA
    from app.db import session_scope
    from app.models import Criterion, Prompt, Study, StudyModel

    with session_scope() as s:
        study = Study(slug=slug, name=slug, status="open", settings=_settings(args, tiny_dir))
        s.add(study)
        s.flush()
        for i, preset in enumerate(PRESETS):
            s.add(StudyModel(study_id=study.id, name=f"model-{i}", preset=preset, position=i))
        for i, c in enumerate(DEFAULT_CRITERIA):
            s.add(Criterion(study_id=study.id, key=c.key, label=c.label, position=i))
        for i in range(n_prompts):
            s.add(Prompt(study_id=study.id, external_id=f"p{i}", text=f"{PROMPT}, take {i}", theme="nature"))
        s.flush()
        return study.id


def in_process(args, tiny_dir: Path) -> dict[str, Any]:
    """``run_clip`` for every queued clip, one after another in this process (the worker's own code path)."""
    from app.db import session_scope
    from app.models import Clip
    from app.services.generation import queue_batch
    from worker.tasks import run_clip

    study_id = _make_study(tiny_dir, args, n_prompts=args.clips, slug="bench-gen-inprocess")
    sent: list[int] = []
    with session_scope() as s:
        queue_batch(s, study_id=study_id, send=sent.extend)
    walls: dict[str, list[float]] = {p: [] for p in PRESETS}
    recorded: dict[str, list[dict[str, float]]] = {p: [] for p in PRESETS}
    outcomes = []
    for clip_id in sent:
        t0 = time.perf_counter()
        outcomes.append(run_clip(clip_id))
        wall = time.perf_counter() - t0
        with session_scope() as s:
            clip = s.get(Clip, clip_id)
            preset = clip.model.preset
            walls[preset].append(wall)
            recorded[preset].append({"wall": clip.wall_seconds, "denoise": clip.denoise_seconds,
                                     "decode": clip.decode_seconds, "encode": clip.encode_seconds,
                                     "load": (clip.generation or {}).get("load_seconds", 0.0)})
    return {"walls": walls, "recorded": recorded, "outcomes": outcomes}


def worker_process(args, tiny_dir: Path, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """A real ``blindpair worker`` on the embedded broker; steady state = first to last finished clip."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Clip
    from app.services.generation import queue_batch

    study_id = _make_study(tiny_dir, args, n_prompts=args.clips, slug="bench-gen-worker")
    blindpair = str(Path(sys.executable).with_name("blindpair"))
    log = tmp / "worker.log"
    t_start = time.perf_counter()
    proc = subprocess.Popen([blindpair, "worker", "--device", "cpu", "--loglevel", "warning"],
                            env={**os.environ, **env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with session_scope() as s:
            queue_batch(s, study_id=study_id)
        t_queued = time.perf_counter()
        deadline = time.monotonic() + args.worker_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            with session_scope() as s:
                states = list(s.scalars(select(Clip.status).where(Clip.study_id == study_id)))
            if states and all(st in ("done", "failed") for st in states):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the worker did not finish {len(states)} clips in {args.worker_timeout}s: {states}")
        t_done = time.perf_counter()
    finally:
        stop_process(proc, timeout=20)
    with session_scope() as s:
        clips = list(s.scalars(select(Clip).where(Clip.study_id == study_id).order_by(Clip.finished_at)))
        finished = [c.finished_at for c in clips if c.finished_at is not None]
        walls = [c.wall_seconds for c in clips if c.wall_seconds is not None]
        failed = [c.error for c in clips if c.status == "failed"]
    steady = ((finished[-1] - finished[0]).total_seconds() / (len(finished) - 1)) if len(finished) > 1 else None
    return {"clips": len(clips), "failed": failed, "start_to_done_s": t_done - t_start,
            "queued_to_done_s": t_done - t_queued, "steady_s_per_clip": steady, "recorded_walls": walls}


def run(args) -> Report:
    import torch

    torch.set_num_threads(1)
    cmd = "python -m bench.generation" + (" --tiny" if args.tiny else "")
    report = Report("generation", "Generation on the CPU: worker overhead around the diffusers pipeline", cmd,
                    params=dict(vars(args)))
    tmp = Path(tempfile.mkdtemp(prefix="bp-bench-gen-"))
    try:
        from bench.vote_path import configure
        from worker.tiny import build_tiny_model_dir

        tiny_dir = build_tiny_model_dir(tmp / "tiny")
        env = configure(f"sqlite:///{tmp / 'gen.sqlite'}", tmp / "data")
        from app.migrate import upgrade

        upgrade()
        print("generation: direct pipeline", flush=True)
        floor = direct(args, tiny_dir, tmp)
        print("generation: run_clip in process", flush=True)
        inproc = in_process(args, tiny_dir)
        worker = None
        if args.worker:
            print("generation: real worker process", flush=True)
            try:
                worker = worker_process(args, tiny_dir, tmp, env)
            except RuntimeError as exc:
                report.notes.append(f"Real worker process run failed: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    overheads = []
    for preset in PRESETS:
        # Steady state: the first clip of each path loads or warms up, so it is left out.
        f = floor[preset][1:] or floor[preset]
        w = inproc["walls"][preset][1:] or inproc["walls"][preset]
        rec = inproc["recorded"][preset][1:] or inproc["recorded"][preset]
        f_med, w_med = percentile(f, 50), percentile(w, 50)
        pipe_med = percentile([r["denoise"] + r["decode"] for r in rec], 50)
        enc_med = percentile([r["encode"] for r in rec], 50)
        overhead = (w_med - f_med) / f_med
        overheads.append(overhead)
        # Measured inside the same runs, so immune to drift between the two paths: what run_clip spends outside
        # the pipeline call and the GIF encoder (database claim and completion, file write, pairing).
        books = percentile([wall - r["denoise"] - r["decode"] - r["encode"] for wall, r in
                            zip(w, rec, strict=True)], 50)
        rows.append([preset, f_med, w_med, pipe_med, enc_med, books, f"{books / w_med:.1%}", w_med - f_med,
                     f"{overhead:+.1%}", floor[f"{preset}:load"][0], inproc["recorded"][preset][0]["load"]])
    report.table(
        f"Per clip at steady state (median of clips 2..{args.clips}; {args.frames} frames at {args.size}x{args.size}, "
        "float32, 1 torch thread)",
        ["preset", "floor: direct pipeline + export_to_gif s", "worker run_clip s", "of which pipeline",
         "of which GIF encode", "bookkeeping s (rest of run_clip)", "bookkeeping %", "run_clip − floor s",
         "vs floor %", "floor load s (once)", "worker load s (once)"], rows)
    worst = max(overheads)
    report.bar("in-process worker overhead < 5% of clip time at steady state", worst < 0.05,
               f"worst preset {worst:+.1%}")
    if worker:
        f_all = percentile([t for p in PRESETS for t in (floor[p][1:] or floor[p])], 50)
        steady = worker["steady_s_per_clip"]
        report.table(
            f"Real worker process (blindpair worker, embedded SQLite broker), {worker['clips']} clips of both presets",
            ["start→all done s", "queued→all done s", "steady s/clip (first→last finish)",
             "floor median s/clip (both presets)", "overhead %", "failed"],
            [[worker["start_to_done_s"], worker["queued_to_done_s"], steady, f_all,
              f"{(steady - f_all) / f_all:+.1%}" if steady else "–", len(worker["failed"])]])
        if steady:
            report.bar("real worker process: overhead < 5% of clip time at steady state",
                       (steady - f_all) / f_all < 0.05, f"{(steady - f_all) / f_all:+.1%}")
        if worker["failed"]:
            report.notes.append(f"failed clips in the worker run: {worker['failed'][:3]}")
        report.data["worker_process"] = worker
    report.data.update({"floor": floor, "in_process": inproc})
    report.notes.append("The worker's bookkeeping per clip: claim (lease) and complete (cost, pairs) transactions, "
                        "an atomic file write, the heartbeat thread; the pipeline stays loaded across clips "
                        "(worker.pipelines.PipelineCache).")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--clips", type=int, default=6, help="clips per preset per path")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--worker", action=argparse.BooleanOptionalAction, default=True,
                   help="also run a real `blindpair worker` process")
    p.add_argument("--worker-timeout", type=float, default=300)
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


# What --tiny means here: the test suite's size, seconds long.
TINY = ["--tiny", "--clips", "2", "--frames", "4", "--size", "32", "--no-worker"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.generation", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))

if __name__ == "__main__":
    main(sys.argv[1:])
