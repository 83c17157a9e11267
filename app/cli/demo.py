"""CLI: ``blindpair demo`` — a working study, an admin and the server in one command.

The demo goes the way real clips go: the study's two demo presets (procedural CPU renderers, no weights) are
queued as a batch on the embedded broker and made by a real ``blindpair worker`` process, so a first run also
shows the queue, the worker, the progress bar and the recorded costs.

Stopping: SIGTERM (``timeout``, a service manager) stops the demo as Ctrl+C does, at any step. The worker gets
SIGTERM and BLINDPAIR_SHUTDOWN_GRACE_SECONDS to finish its clip, then its whole process group is killed; and
it never outlives the demo, even one killed outright (Linux: PR_SET_PDEATHSIG; elsewhere the worker watches
its parent's pid).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    from app.services.users import create_user, get_user_by_email, set_password

    password = password or secrets.token_urlsafe(12)
    user = get_user_by_email(session, DEMO_ADMIN)
    if user is None:
        create_user(session, email=DEMO_ADMIN, password=password, role="admin")
        return password, "created"
    # The old password is only stored hashed, so a rerun sets a fresh one that can be printed; like every new
    # password it logs the account out everywhere (app/services/users.py).
    set_password(session, user_id=user.id, password=password)
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


class DemoStopped(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl+C: every ``finally`` runs and the worker is stopped."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Raise DemoStopped on SIGTERM while inside (Python's default for SIGTERM ends the process at once,
    skipping the cleanup that stops the worker). Uvicorn swaps in its own handler while serving and raises the
    signal again once it has shut down, so a SIGTERM then reaches this handler too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _stop(signum: int, _frame: object) -> None:
        raise DemoStopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (delivered afterwards) so a second Ctrl+C cannot interrupt stopping the worker."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child SIGTERM when this process dies, however it dies.

    libc's prctl is looked up here, before the fork: the child only calls it (no loading, no locks). If this
    process died between the fork and the prctl, the child's parent is already another one: it stops at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class DemoWorker:
    """A real ``blindpair worker`` process on the CPU, taking the demo's clips from the embedded queue."""

    def __init__(self, log_path: Path, *, exit_when_idle: bool) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # --no-preload: the demo presets never touch diffusers, whose import is most of a worker's start-up.
        # --parent-pid: the worker's own watchdog stops it if the demo goes away (where prctl is not available).
        args = ["worker", "--device", "cpu", "--no-preload", "--loglevel", "info", "--parent-pid", str(os.getpid())]
        if exit_when_idle:
            args.append("--exit-when-idle")
        self._log = log_path.open("ab")
        # Own process group: Ctrl+C in the terminal reaches the server, and the demo then stops the worker itself
        # (and can kill the whole group, whatever the worker started).
        self.proc = subprocess.Popen([*_blindpair_command(), *args], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent())  # only prctl, see _die_with_parent

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def stop(self, grace: float) -> None:
        """Warm shutdown (SIGTERM: Celery finishes the clip in hand) for up to ``grace`` seconds, then SIGKILL to
        the worker's whole process group."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # anything the worker left in its group
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


@dataclass
class DemoSetup:
    """What the first step made or found: the study, its clips still to make, the admin's login."""

    study_id: int
    n_prompts: int
    created: bool
    shape: str
    pending: int
    admin_password: str
    admin_state: str


class DemoRun:
    """The demo's worker process, whichever step started it; ``stop`` is safe to call at any point."""

    def __init__(self, log_path: Path, grace: float) -> None:
        self.log_path, self.grace = log_path, grace
        self.worker: DemoWorker | None = None

    def start_worker(self, *, exit_when_idle: bool) -> DemoWorker:
        if self.worker is None or not self.worker.alive():
            self.worker = DemoWorker(self.log_path, exit_when_idle=exit_when_idle)
        return self.worker

    def stop(self) -> None:
        if self.worker is None:
            return
        with signals_held():
            stopping = self.worker.alive()
            self.worker.stop(self.grace)
        if stopping:
            console.print("Demo worker stopped.")


def set_up_demo(password: str | None, *, frames: int, size: int, fps: int) -> DemoSetup:
    """Step 1: migrate the database, make (or reset) the admin, find or create the demo study."""
    from app.db import session_scope
    from app.migrate import upgrade
    from app.services.studies import StudyError
    from app.services.users import UserError

    console.print(f"Database ready: {upgrade()}")
    try:
        with session_scope() as session:
            admin_password, admin_state = _ensure_admin(session, password)
            study, created = _ensure_study(session, frames=frames, size=size, fps=fps, admin_email=DEMO_ADMIN)
            st = study.settings
            setup = DemoSetup(
                study_id=study.id, n_prompts=len(study.prompts), created=created,
                shape=f"{st.get('frames')} frames, {st.get('width')}x{st.get('height')}, {st.get('fps')} fps",
                pending=_pending_clips(session, study.id), admin_password=admin_password, admin_state=admin_state)
    except (UserError, StudyError) as exc:
        console.print(f"[red]Demo setup failed: {exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Demo study {'created' if setup.created else 'found'} (id {setup.study_id}, "
                  f"{setup.n_prompts} prompts).")
    return setup


def make_demo_clips(setup: DemoSetup, run: DemoRun, *, keep_worker: bool) -> None:
    """Step 2: queue the missing clips and follow a CPU worker making them; exits 1-3 with the reason."""
    from app.db import session_scope
    from app.services.generation import BrokerUnavailable, GenerationError, queue_batch

    if not setup.pending:
        console.print("Demo clips already made.")
        return
    try:
        with session_scope() as session:
            batch = queue_batch(session, study_id=setup.study_id)
    except BrokerUnavailable as exc:
        console.print(f"[red]Demo not ready: {exc}[/red]")
        raise typer.Exit(3) from exc
    except GenerationError as exc:
        console.print(f"[red]Demo not ready, the batch was refused: {exc}[/red]")
        raise typer.Exit(2) from exc
    # Started after queueing, so that --exit-when-idle cannot see an empty queue and stop at once.
    worker = run.start_worker(exit_when_idle=not keep_worker)
    console.print(f"Batch {batch.batch_id}: {batch.describe()} ({setup.shape}); a CPU worker is making them "
                  f"(log: {run.log_path}).")
    try:
        totals = follow_generation(setup.study_id, worker)
    except WorkerDied as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if totals["failed"]:
        console.print(f"[red]{totals['failed']} demo clip(s) failed[/red]; the reasons are on the study page "
                      f"and in {run.log_path}. Run `blindpair demo` again after fixing the cause.")
        raise typer.Exit(1)
    console.print(f"All {totals['done']} demo clips done; pairs are ready to rate.")


def open_demo_study(setup: DemoSetup) -> None:
    """Step 3: open the study and print the evaluator link and the admin login."""
    from app.db import session_scope
    from app.services.studies import invite_url, set_status

    with session_scope() as session:
        study = set_status(session, study_id=setup.study_id, status="open")
        link = invite_url(study)
    base = get_settings().base_url.rstrip("/")
    console.print(Panel.fit(
        f"[bold]Evaluator link[/bold]  {link}\n"
        f"[bold]Admin login[/bold]     {base}/login\n"
        f"  email     {DEMO_ADMIN}\n"
        f"  password  {setup.admin_password}   ({setup.admin_state})\n"
        f"[bold]Study page[/bold]      {base}/studies/{setup.study_id}\n"
        "The clips are synthetic demo data from BlindPair's CPU renderer, not from AI models.",
        title="BlindPair demo ready",
    ))


def serve_with_worker(run: DemoRun) -> None:
    """Step 4: serve until stopped, with a CPU worker alongside for batches queued from the study page."""
    from app.cli.serve import serve as serve_cmd

    run.start_worker(exit_when_idle=False)
    console.print(f"A CPU worker runs alongside the server for batches queued from the study page "
                  f"(log: {run.log_path}); Ctrl+C stops both.")
    serve_cmd(host=None, port=None, reload=False)


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
    from app.cli.worker import warn_missing_media_tools

    if warn_missing_media_tools():
        typer.secho("The demo goes on without it; its clips show what raters would see with this machine.",
                    fg=typer.colors.YELLOW, err=True)
    settings = get_settings()
    run = DemoRun(settings.data_dir / "demo-worker.log", grace=settings.shutdown_grace_seconds)
    with stop_on_sigterm():
        try:
            setup = set_up_demo(password, frames=frames, size=size, fps=fps)
            make_demo_clips(setup, run, keep_worker=serve)
            open_demo_study(setup)
            if serve:
                serve_with_worker(run)
        except DemoStopped:
            console.print("Stopping the demo (SIGTERM).")
        finally:
            run.stop()
