"""CLI: ``blindpair worker`` (a Celery generation worker) and ``blindpair queue`` (queue a prompt batch)."""

from __future__ import annotations

import os
import signal
import threading
import time

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy import func, select

from app.cli.base import app
from app.cli.serve import require_migrated
from app.config import get_settings

console = Console()


def _fail(lines: list[str], code: int = 1) -> None:
    for line in lines:
        typer.secho(line, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def warn_missing_media_tools() -> int:
    """Say in the terminal, before anything starts, which tool that changes what raters see is missing and how
    to install it (worker.media_tools); returns how many are missing. Also written to the worker's log per clip."""
    from worker.media_tools import missing_media_tools

    missing = missing_media_tools()
    for tool in missing:
        for line in tool.lines():
            typer.secho(line, fg=typer.colors.YELLOW, err=True)
    return len(missing)


@app.command("worker")
def worker_command(
    device: str = typer.Option("auto", help="cuda, cuda:N or cpu (auto: cuda when available)."),
    concurrency: int = typer.Option(1, min=1, help="Clips in flight at once, in threads sharing one loaded model: "
                                                   "one clip's GIF encoding overlaps the next one's time on the "
                                                   "device. 2 suits a GPU (BENCHMARKS.md); run one worker per "
                                                   "GPU (CUDA_VISIBLE_DEVICES) to use several."),
    loglevel: str = typer.Option("info", help="debug, info, warning or error."),
    exit_when_idle: bool = typer.Option(False, "--exit-when-idle",
                                        help="Stop once no clip of any study is queued or running."),
    name: str = typer.Option("", help="Node name before @host (default blindpair-PID, unique on a machine); "
                                      "the compose healthcheck pings blindpair@HOSTNAME."),
    preload: bool = typer.Option(True, "--preload/--no-preload",
                                 help="Import diffusers before taking clips, so the first clip's recorded time is "
                                      "the clip's. --no-preload starts in a second, for demo presets only."),
    parent_pid: int = typer.Option(0, "--parent-pid", hidden=True,
                                   help="Stop once this process (the one that started the worker) has ended."),
) -> None:
    """Start a generation worker that takes clips from the queue until stopped (Ctrl+C finishes the clip)."""
    if parent_pid:
        watch_parent(parent_pid, grace=get_settings().shutdown_grace_seconds)
    else:  # the demo's own worker: the demo already said it in the terminal
        warn_missing_media_tools()
    require_migrated()
    if device != "auto":
        if device != "cpu" and not device.startswith("cuda"):
            _fail([f"--device must be cuda, cuda:N or cpu, not {device!r}."], code=2)
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                _fail(["--device cuda was asked for but this torch has no usable CUDA GPU "
                       f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch."], code=2)
        os.environ["BLINDPAIR_WORKER_DEVICE"] = device
    if exit_when_idle:
        os.environ["BLINDPAIR_WORKER_EXIT_WHEN_IDLE"] = "1"
    from worker.celery_app import PRELOAD_ENV, QUEUE, broker_problem
    from worker.celery_app import app as celery

    if not preload:
        os.environ[PRELOAD_ENV] = "0"

    problem = broker_problem()
    if problem:
        _fail([problem.replace("; nothing was queued.", ".")], code=2)
    # Threads, not forked processes, for N > 1: CUDA cannot be used in a forked child, and N processes would
    # hold N copies of the model and time-slice the GPU. worker.generate.DEVICE_LOCK gives the device to one
    # clip at a time; the others encode their GIFs meanwhile.
    pool = "solo" if concurrency == 1 else "threads"
    celery.worker_main([
        "worker", f"--concurrency={concurrency}", f"--pool={pool}", "-Q", QUEUE, f"--loglevel={loglevel.upper()}",
        f"--hostname={name or f'blindpair-{os.getpid()}'}@%h", "--without-gossip", "--without-mingle",
    ])


def watch_parent(parent_pid: int, *, grace: float, every: float = 1.0) -> threading.Thread:
    """Stop this worker once ``parent_pid`` is no longer its parent (it ended, however it ended).

    First a warm shutdown (SIGTERM: Celery finishes the clip in hand), then after ``grace`` seconds an exit
    regardless. ``blindpair demo`` starts its worker with this, so the worker never outlives the demo, on
    systems without Linux's PR_SET_PDEATHSIG too.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        typer.secho(f"The process that started this worker ({parent_pid}) has ended: stopping.", err=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="blindpair-parent-watch", daemon=True)
    thread.start()
    return thread


def _parse_seeds(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        _fail([f"--seeds must be whole numbers separated by commas, e.g. 0,1,2 (got {value!r})."], code=2)
    if not seeds or any(s < 0 for s in seeds):
        _fail([f"--seeds must list whole numbers >= 0, e.g. 0,1,2 (got {value!r})."], code=2)
    return seeds


def _find_study(session, ref: str):
    from app.models import Study

    study = session.get(Study, int(ref)) if ref.isdigit() else None
    study = study or session.scalar(select(Study).where(Study.slug == ref))
    if study is None:
        _fail([f"There is no study {ref!r} (give its id or slug; `blindpair study list` shows them)."], code=2)
    return study


@app.command("queue")
def queue_command(
    study: str = typer.Option(..., "--study", help="The study's id or slug."),
    theme: str = typer.Option(None, "--theme", help="Only the prompts of this theme (default: all)."),
    prompt: list[str] = typer.Option(None, "--prompt", help="A prompt id of the suite, e.g. urban-003; repeatable."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds as 0,1,2 (default: the study's seeds)."),
    wait: bool = typer.Option(False, "--wait", help="Show a progress bar until every clip is done or failed."),
    poll: float = typer.Option(2.0, help="Seconds between progress checks with --wait."),
) -> None:
    """Queue prompts x models x seeds for generation; queuing again never duplicates a clip."""
    require_migrated()
    from app.db import session_scope
    from app.services.generation import BrokerUnavailable, GenerationError, queue_batch

    try:
        with session_scope() as session:
            study_row = _find_study(session, study)
            result = queue_batch(session, study_id=study_row.id, theme=theme, prompt_ids=prompt or None,
                                 seeds=_parse_seeds(seeds))
            study_id = study_row.id
    except BrokerUnavailable as exc:
        _fail([f"Not queued: {exc}"], code=3)
    except GenerationError as exc:
        _fail(["Not queued, nothing was changed:", *exc.errors], code=2)
    console.print(f"Batch {result.batch_id}: {result.describe()}")
    if result.tasks_sent and not wait:
        console.print("Start a worker to generate them: [bold]blindpair worker[/bold]")
    if wait:
        raise typer.Exit(code=_wait(study_id, result.scope_clip_ids, poll))


def _counts(clip_ids: list[int]) -> dict[str, int]:
    from app.db import session_scope
    from app.models import Clip

    counts = dict.fromkeys(("queued", "running", "done", "failed"), 0)
    with session_scope() as session:
        for start in range(0, len(clip_ids), 500):
            chunk = clip_ids[start:start + 500]
            for status, n in session.execute(
                select(Clip.status, func.count()).where(Clip.id.in_(chunk)).group_by(Clip.status)
            ):
                counts[status] += n
    return counts


def _wait(study_id: int, clip_ids: list[int], poll: float) -> int:
    """Follow the batch's clips until none is queued or running; exit code 1 if some failed."""
    columns = (TextColumn("[bold]generating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("clips", total=len(clip_ids), note="")
        while True:
            c = _counts(clip_ids)
            progress.update(task, completed=c["done"] + c["failed"],
                            note=f"{c['running']} running, {c['queued']} queued, {c['failed']} failed")
            if not c["queued"] and not c["running"]:
                break
            time.sleep(poll)
    if c["failed"]:
        console.print(f"[red]{c['failed']} clip(s) failed[/red]; see why on the study page, fix, then retry them "
                      f"there or with the API (POST /api/v1/studies/{study_id}/generation/retry).")
        return 1
    console.print(f"All {c['done']} clip(s) done.")
    return 0
