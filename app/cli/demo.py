"""CLI: ``blindpair demo`` — a working study, an admin and the server in one command.

The demo goes the way real clips go: the study's two demo presets (procedural CPU renderers, no weights) are
queued as a batch on the embedded broker and made by a real ``blindpair worker`` process, so a first run also
shows the queue, the worker, the progress bar and the recorded costs.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from sqlalchemy import func, select

from app.cli.base import app
from app.config import get_settings
from app.media.demo_render import DEMO_MODELS

console = Console()

DEMO_SLUG = "demo"
DEMO_ADMIN = "admin@demo.local"
DEMO_DESCRIPTION = (
    "DEMO DATA. The two 'models' are synthetic procedural renderers built into BlindPair (app/media/demo_render.py), "
    "not AI models: demo-smooth draws smooth, coherent motion; demo-jittery draws the same scenes with stuttering "
    "motion, posterised colours and noise. Use this study to try the evaluator's path and the results pages."
)


def demo_prompts(per_theme: int = 1, limit: int = 12):
    """One prompt per theme of the built-in suite (cycling short/medium/long), at most ``limit``."""
    from app.services.prompts import load_builtin_suite

    details = ("short", "medium", "long")
    by_theme: dict[str, list] = {}
    for spec in load_builtin_suite():
        by_theme.setdefault(spec.theme, []).append(spec)
    chosen = []
    for i, specs in enumerate(by_theme.values()):
        want = details[i % 3]
        ordered = [s for s in specs if s.detail == want] + [s for s in specs if s.detail != want]
        chosen.extend(ordered[:per_theme])
    return chosen[:limit]


def _ensure_admin(session, password: str | None) -> tuple[str, str]:
    from app.passwords import hash_password
    from app.services.users import create_user, get_user_by_email

    password = password or secrets.token_urlsafe(12)
    user = get_user_by_email(session, DEMO_ADMIN)
    if user is None:
        create_user(session, email=DEMO_ADMIN, password=password, role="admin")
        return password, "created"
    # The old password is only stored hashed, so a rerun sets a fresh one that can be printed.
    user.password_hash = hash_password(password)
    user.role = "admin"
    return password, "password reset"


def _ensure_study(session, *, frames: int, size: int, fps: int, admin_email: str):
    from app.models import Study
    from app.services.studies import ModelSpec, create_study
    from app.services.users import get_user_by_email

    study = session.scalars(select(Study).where(Study.slug == DEMO_SLUG)).first()
    if study is not None:
        return study, False
    admin = get_user_by_email(session, admin_email)
    study = create_study(
        session,
        name="BlindPair demo (synthetic clips)",
        description=DEMO_DESCRIPTION,
        models=[ModelSpec(name=name, description=desc, preset=name) for name, _style, desc in DEMO_MODELS],
        prompts=demo_prompts(),
        votes_per_pair=3,
        pairs_per_session=6,
        settings={"seeds": [0], "frames": frames, "width": size, "height": size, "fps": fps,
                  "base_model": "none (demo renderer)", "dtype": "float32"},
        created_by_id=admin.id if admin else None,
        slug=DEMO_SLUG,
    )
    return study, True


def _pending_clips(session, study_id: int) -> int:
    """Clips the demo still needs: model x prompt combinations (seed 0) without a done clip."""
    from app.models import Clip, Prompt, StudyModel

    n_models = session.scalar(select(func.count()).select_from(StudyModel).where(StudyModel.study_id == study_id))
    n_prompts = session.scalar(select(func.count()).select_from(Prompt).where(Prompt.study_id == study_id))
    done = session.scalar(select(func.count()).select_from(Clip).where(
        Clip.study_id == study_id, Clip.status == "done", Clip.variant == "", Clip.seed == 0))
    return n_models * n_prompts - done


def _blindpair_command() -> list[str]:
    """How to start this same BlindPair (the console script next to this Python, else the module)."""
    script = Path(sys.executable).with_name("blindpair")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


class DemoWorker:
    """A real ``blindpair worker`` process on the CPU, taking the demo's clips from the embedded queue."""

    def __init__(self, log_path: Path, *, exit_when_idle: bool) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # --no-preload: the demo presets never touch diffusers, whose import is most of a worker's start-up.
        args = ["worker", "--device", "cpu", "--no-preload", "--loglevel", "info"]
        if exit_when_idle:
            args.append("--exit-when-idle")
        self._log = log_path.open("ab")
        # Own process group: Ctrl+C in the terminal reaches the server, and the demo then stops the worker itself.
        self.proc = subprocess.Popen([*_blindpair_command(), *args], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM: Celery finishes the clip in hand), then SIGKILL if it does not stop."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def follow_generation(study_id: int, worker: DemoWorker, *, poll: float = 0.5) -> dict[str, int]:
    """Show a progress bar (counts and ETA) until none of the study's clips is queued or running."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from app.db import session_scope
    from app.services.generation import generation_progress

    columns = (TextColumn("[bold]making demo clips"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = None
        while True:
            with session_scope() as session:
                totals = generation_progress(session, study_id=study_id)["totals"]
            finished = totals["done"] + totals["failed"]
            note = f"{totals['running']} running, {totals['queued']} queued, {totals['failed']} failed"
            if task is None:
                task = bar.add_task("clips", total=sum(totals.values()), completed=finished, note=note)
            bar.update(task, completed=finished, note=note)
            if not totals["queued"] and not totals["running"]:
                return totals
            if not worker.alive():
                raise WorkerDied(worker)
            time.sleep(poll)


class WorkerDied(RuntimeError):
    def __init__(self, worker: DemoWorker) -> None:
        super().__init__(f"the demo worker stopped (exit code {worker.proc.returncode}) with clips still to make; "
                         f"its log is {worker.log_path}:\n{worker.tail()}")


@app.command()
def demo(
    password: str = typer.Option(None, "--password", help="Admin password (default: a random one, printed)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the web server when the demo is ready, with "
                                                                 "a CPU worker alongside it for more batches."),
    frames: int = typer.Option(16, "--frames", help="Frames per demo clip."),
    size: int = typer.Option(256, "--size", help="Width and height of the demo clips (a multiple of 8)."),
    fps: int = typer.Option(8, "--fps", help="Frames per second of the demo clips."),
) -> None:
    """Migrate the database, create an admin and a demo study, make its clips through the queue and a CPU worker
    (two procedural demo presets, no weights), then serve."""
    from app.db import session_scope
    from app.migrate import upgrade
    from app.services.generation import BrokerUnavailable, GenerationError, queue_batch
    from app.services.studies import StudyError, invite_url, set_status
    from app.services.users import UserError

    settings = get_settings()
    url = upgrade()
    console.print(f"Database ready: {url}")
    try:
        with session_scope() as session:
            admin_password, admin_state = _ensure_admin(session, password)
            study, created = _ensure_study(session, frames=frames, size=size, fps=fps, admin_email=DEMO_ADMIN)
            study_id, n_prompts = study.id, len(study.prompts)
            st = study.settings
            shape = f"{st.get('frames')} frames, {st.get('width')}x{st.get('height')}, {st.get('fps')} fps"
            pending = _pending_clips(session, study_id)
    except (UserError, StudyError) as exc:
        console.print(f"[red]Demo setup failed: {exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Demo study {'created' if created else 'found'} (id {study_id}, {n_prompts} prompts).")

    worker: DemoWorker | None = None
    log_path = settings.data_dir / "demo-worker.log"
    try:
        if pending:
            try:
                with session_scope() as session:
                    batch = queue_batch(session, study_id=study_id)
            except BrokerUnavailable as exc:
                console.print(f"[red]Demo not ready: {exc}[/red]")
                raise typer.Exit(3) from exc
            except GenerationError as exc:
                console.print(f"[red]Demo not ready, the batch was refused: {exc}[/red]")
                raise typer.Exit(2) from exc
            # Started after queueing, so that --exit-when-idle cannot see an empty queue and stop at once.
            worker = DemoWorker(log_path, exit_when_idle=not serve)
            console.print(f"Batch {batch.batch_id}: {batch.describe()} ({shape}); a CPU worker is making them "
                          f"(log: {log_path}).")
            try:
                totals = follow_generation(study_id, worker)
            except WorkerDied as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from exc
            if totals["failed"]:
                console.print(f"[red]{totals['failed']} demo clip(s) failed[/red]; the reasons are on the study page "
                              f"and in {log_path}. Run `blindpair demo` again after fixing the cause.")
                raise typer.Exit(1)
            console.print(f"All {totals['done']} demo clips done; pairs are ready to rate.")
        else:
            console.print("Demo clips already made.")

        with session_scope() as session:
            study = set_status(session, study_id=study_id, status="open")
            link = invite_url(study)
        base = settings.base_url.rstrip("/")
        console.print(Panel.fit(
            f"[bold]Evaluator link[/bold]  {link}\n"
            f"[bold]Admin login[/bold]     {base}/login\n"
            f"  email     {DEMO_ADMIN}\n"
            f"  password  {admin_password}   ({admin_state})\n"
            f"[bold]Study page[/bold]      {base}/studies/{study_id}\n"
            "The clips are synthetic demo data from BlindPair's CPU renderer, not from AI models.",
            title="BlindPair demo ready",
        ))
        if serve:
            from app.cli.serve import serve as serve_cmd

            if worker is None or not worker.alive():
                worker = DemoWorker(log_path, exit_when_idle=False)
            console.print(f"A CPU worker runs alongside the server for batches queued from the study page "
                          f"(log: {log_path}); Ctrl+C stops both.")
            serve_cmd(host=None, port=None, reload=False)
    finally:
        if worker is not None:
            stopping = worker.alive()
            worker.stop()
            if stopping:
                console.print("Demo worker stopped.")
