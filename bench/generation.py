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
WARMUP = 2 * len(PRESETS)  # clips the real worker's steady state leaves out (see worker_process)


def _settings(args, tiny_dir: Path) -> dict[str, Any]:
    return {"seeds": [0], "frames": args.frames, "width": args.size, "height": args.size, "fps": 8,
            "dtype": "float32", "negative_prompt": "blurry", "base_model": str(tiny_dir)}


def load_direct(tiny_dir: Path) -> dict[str, tuple[Any, float]]:
    """The floor's pipelines: diffusers by hand, same components and scheduler settings as the presets."""
    import torch
    from diffusers import AnimateDiffPipeline, DDIMScheduler, EulerDiscreteScheduler, MotionAdapter
    from safetensors.torch import load_file

    from worker.presets import get_preset
    from worker.tiny import LIGHTNING_FILE

    pipes = {}
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
        pipes[name] = (pipe, time.perf_counter() - t0)
    return pipes


def direct_clip(args, pipe, name: str, i: int, out_dir: Path) -> dict[str, float]:
    """One floor clip: the pipeline, then ``export_to_gif`` (the textbook floor); then, untimed by that floor,
    the worker's own GIF encoder on the same frames, so that the comparison can be made on the same work."""
    import torch
    from diffusers.utils import export_to_gif

    from worker.gif import encode_clip_gif
    from worker.presets import get_preset

    preset = get_preset(name)
    t0 = time.perf_counter()
    frames = pipe(PROMPT, negative_prompt="blurry" if preset.guidance > 1 else None, num_frames=args.frames,
                  width=args.size, height=args.size, num_inference_steps=preset.steps,
                  guidance_scale=preset.guidance, generator=torch.Generator("cpu").manual_seed(i)).frames[0]
    t1 = time.perf_counter()
    export_to_gif(frames, str(out_dir / f"direct-{name}-{i}.gif"), fps=8)
    t2 = time.perf_counter()
    encode_clip_gif(frames, fps=8)
    t3 = time.perf_counter()
    return {"pipeline": t1 - t0, "export_to_gif": t2 - t1, "worker_encoder": t3 - t2}


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


def interleaved(args, tiny_dir: Path, out_dir: Path) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, Any]]:
    """The floor and ``run_clip`` clip by clip, alternating which goes first, so that the load of this shared
    machine, which drifts by tens of percent within a minute, weighs on both paths alike.

    ``run_clip`` is exactly what the Celery task runs: claim the clip in the database, resolve the preset, reuse
    the cached pipeline, generate, encode, store the GIF atomically, record the cost, make pairs; its clips are
    queued with ``app.services.generation.queue_batch``.
    """
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Clip
    from app.services.generation import queue_batch
    from worker.tasks import run_clip

    pipes = load_direct(tiny_dir)
    study_id = _make_study(tiny_dir, args, n_prompts=args.clips, slug="bench-gen-inprocess")
    sent: list[int] = []
    with session_scope() as s:
        queue_batch(s, study_id=study_id, send=sent.extend)
        preset_of = {c.id: c.model.preset for c in s.scalars(select(Clip).where(Clip.id.in_(sent)))}
    todo = {p: [c for c in sent if preset_of[c] == p] for p in PRESETS}

    floor: dict[str, list[float]] = {p: [] for p in PRESETS}
    parts: dict[str, list[dict[str, float]]] = {p: [] for p in PRESETS}
    walls: dict[str, list[float]] = {p: [] for p in PRESETS}
    recorded: dict[str, list[dict[str, float]]] = {p: [] for p in PRESETS}
    outcomes = []

    def floor_clip(preset: str, i: int) -> None:
        part = direct_clip(args, pipes[preset][0], preset, i, out_dir)
        parts[preset].append(part)
        floor[preset].append(part["pipeline"] + part["export_to_gif"])

    def worker_clip(preset: str, i: int) -> None:
        clip_id = todo[preset][i]
        t0 = time.perf_counter()
        outcomes.append(run_clip(clip_id))
        walls[preset].append(time.perf_counter() - t0)
        with session_scope() as s:
            clip = s.get(Clip, clip_id)
            recorded[preset].append({"wall": clip.wall_seconds, "denoise": clip.denoise_seconds,
                                     "decode": clip.decode_seconds, "encode": clip.encode_seconds,
                                     "load": (clip.generation or {}).get("load_seconds", 0.0)})

    for i in range(args.clips):
        for k, preset in enumerate(PRESETS):
            pair = (floor_clip, worker_clip) if (i + k) % 2 == 0 else (worker_clip, floor_clip)
            for step in pair:
                step(preset, i)
    for preset in PRESETS:
        floor[f"{preset}:load"] = [pipes[preset][1]]
    return floor, parts, {"walls": walls, "recorded": recorded, "outcomes": outcomes}


def worker_process(args, tiny_dir: Path, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """A real ``blindpair worker`` on the embedded broker; steady state = from the end of the warm-up to the
    last finished clip, set against the clips' own recorded time (pipeline + GIF encoder) in the same run."""
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
        clips = list(s.scalars(select(Clip).where(Clip.study_id == study_id, Clip.origin == "generated")
                               .order_by(Clip.finished_at)))
        finished = [c.finished_at for c in clips if c.finished_at is not None]
        walls = [c.wall_seconds for c in clips if c.wall_seconds is not None]
        failed = [c.error for c in clips if c.status == "failed"]
    # Steady state starts after the warm-up: each preset's first clip loads its pipeline and its second still
    # runs slower, and the first completions of a study make its attention-check copies (one-off work). The
    # floor leaves out its first clip per preset likewise. From the WARMUP-th finish to the last: n - WARMUP clips.
    steady = window_walls = None
    if len(finished) == len(walls) > WARMUP:
        steady = (finished[-1] - finished[WARMUP - 1]).total_seconds() / (len(finished) - WARMUP)
        window_walls = sum(walls[WARMUP:]) / (len(walls) - WARMUP)
    return {"clips": len(clips), "failed": failed, "start_to_done_s": t_done - t_start,
            "queued_to_done_s": t_done - t_queued, "steady_s_per_clip": steady,
            "steady_recorded_wall_s_per_clip": window_walls, "recorded_walls": walls}


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
        print("generation: direct pipeline and run_clip, clip by clip", flush=True)
        floor, parts, inproc = interleaved(args, tiny_dir, tmp)
        worker = None
        if args.worker:
            print("generation: real worker process", flush=True)
            try:
                worker = worker_process(args, tiny_dir, tmp, env)
            except RuntimeError as exc:
                report.notes.append(f"Real worker process run failed: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def steady(values: list) -> list:
        return values[1:] or values  # the first clip of each path loads or warms up: left out

    rows = []
    overheads = []
    same_work_all: list[float] = []
    for preset in PRESETS:
        f, w = steady(floor[preset]), steady(inproc["walls"][preset])
        fp, rec = steady(parts[preset]), steady(inproc["recorded"][preset])
        same = [p["pipeline"] + p["worker_encoder"] for p in fp]
        same_work_all += same
        f_med, w_med, same_med = percentile(f, 50), percentile(w, 50), percentile(same, 50)
        pipe_med = percentile([r["denoise"] + r["decode"] for r in rec], 50)
        enc_med = percentile([r["encode"] for r in rec], 50)
        # Clip by clip, run_clip against the floor clip run beside it doing the same work (pipeline + the
        # worker's GIF encoder): the median of these paired differences is the worker's overhead.
        paired = percentile([wi - si for wi, si in zip(w, same, strict=True)], 50)
        overhead = paired / same_med
        overheads.append(overhead)
        # Measured inside the same runs, so immune to drift between the two paths: what run_clip spends outside
        # the pipeline call and the GIF encoder (database claim and completion, file write, pairing).
        books = percentile([wall - r["denoise"] - r["decode"] - r["encode"] for wall, r in
                            zip(w, rec, strict=True)], 50)
        rows.append([preset, f_med, percentile([p["export_to_gif"] for p in fp], 50), same_med,
                     percentile([p["worker_encoder"] for p in fp], 50), w_med, pipe_med, enc_med, books,
                     f"{books / w_med:.1%}", paired, f"{overhead:+.1%}", f"{(w_med - f_med) / f_med:+.1%}",
                     floor[f"{preset}:load"][0], inproc["recorded"][preset][0]["load"]])
    report.table(
        f"Per clip at steady state (median of clips 2..{args.clips}, floor and worker clips alternating; "
        f"{args.frames} frames at {args.size}x{args.size}, float32, 1 torch thread)",
        ["preset", "floor: pipeline + export_to_gif s", "of which export_to_gif", "same-work floor: pipeline + "
         "worker GIF encoder s", "of which worker GIF encoder", "worker run_clip s", "of which pipeline",
         "of which GIF encode", "bookkeeping s (rest of run_clip)", "bookkeeping %",
         "run_clip − same-work floor s (paired median)", "vs same-work floor %", "vs export_to_gif floor %",
         "floor load s (once)", "worker load s (once)"], rows)
    worst = max(overheads)
    report.bar("in-process worker overhead < 5% of clip time at steady state (against the same-work floor)",
               worst < 0.05, f"worst preset {worst:+.1%}")
    if worker:
        steady_s, clip_s = worker["steady_s_per_clip"], worker["steady_recorded_wall_s_per_clip"]
        floor_mean = sum(same_work_all) / len(same_work_all)
        row = [worker["start_to_done_s"], worker["queued_to_done_s"], steady_s, clip_s, "–", "–", floor_mean, "–",
               len(worker["failed"])]
        if steady_s:
            outside = steady_s - clip_s
            row[4:6] = [outside, f"{outside / steady_s:.1%}"]
            row[7] = f"{(steady_s - floor_mean) / floor_mean:+.1%}"
            report.bar("real worker process: time outside the clip < 5% of time per clip at steady state",
                       outside / steady_s < 0.05, f"{outside / steady_s:.1%}")
        report.table(
            f"Real worker process (blindpair worker, embedded SQLite broker), {worker['clips']} clips of both "
            f"presets; steady state = clips {WARMUP + 1}..{worker['clips']}",
            ["start→all done s", "queued→all done s", "steady s/clip (finish to finish)",
             "of which the clip (recorded pipeline + GIF encode)", "outside the clip s/clip", "outside %",
             "same-work floor mean s/clip (earlier, both presets)", "vs that floor %", "failed"], [row])
        if worker["failed"]:
            report.notes.append(f"failed clips in the worker run: {worker['failed'][:3]}")
        report.data["worker_process"] = worker
    report.data.update({"floor": floor, "floor_parts": parts, "in_process": inproc})
    report.notes += [
        "The worker's bookkeeping per clip: claim (lease) and complete (cost, pairs) transactions, an atomic "
        "durable file write (file and folder fsync), the heartbeat thread; the pipeline stays loaded across clips "
        "(worker.pipelines.PipelineCache).",
        "Same work on both sides: the worker encodes with worker.gif.encode_clip_gif (Pillow, then the metadata "
        "strip and the read-back of the real fps), not diffusers' export_to_gif, so the floor times both encoders "
        "on its frames and the overhead bar compares like with like; 'vs export_to_gif floor' includes the "
        "difference between the two encoders.",
        "The real worker's 'outside the clip' is measured inside its own run (finish-to-finish time minus each "
        "clip's recorded time), so it does not drift with the machine's load; its comparison with the floor does, "
        "because the floor ran earlier.",
    ]
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
