"""CLI: ``blindpair demo`` — a working study with synthetic clips, an admin, and the server, in one command."""

from __future__ import annotations

import secrets
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from sqlalchemy import func, select

from app.cli.base import app
from app.config import get_settings
from app.media.demo_render import DEMO_MODELS, render_demo_gif

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
    from app.security import hash_password
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


def _missing_clips(session, study_id: int) -> int:
    from app.models import Clip, Prompt, StudyModel

    n_models = session.scalar(select(func.count()).select_from(StudyModel).where(StudyModel.study_id == study_id))
    n_prompts = session.scalar(select(func.count()).select_from(Prompt).where(Prompt.study_id == study_id))
    done = session.scalar(select(func.count()).select_from(Clip).where(
        Clip.study_id == study_id, Clip.status == "done", Clip.variant == "", Clip.seed == 0))
    return n_models * n_prompts - done


def render_demo_folder(folder: Path, prompts: list[tuple[str, str]], *, frames: int, size: int, fps: int) -> int:
    """Write ``folder/<model>/<prompt id>.gif`` for both demo renderers; returns the number of files."""
    from rich.progress import Progress

    total = len(prompts) * len(DEMO_MODELS)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("rendering demo clips", total=total)
        for name, style, _desc in DEMO_MODELS:
            (folder / name).mkdir(parents=True, exist_ok=True)
            for external_id, text in prompts:
                data = render_demo_gif(text, style=style, seed=0, frames=frames, width=size, height=size, fps=fps)
                (folder / name / f"{external_id}.gif").write_bytes(data)
                bar.advance(task)
    return total


@app.command()
def demo(
    password: str = typer.Option(None, "--password", help="Admin password (default: a random one, printed)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the web server when the demo is ready."),
    frames: int = typer.Option(16, "--frames", help="Frames per demo clip."),
    size: int = typer.Option(256, "--size", help="Width and height of the demo clips (a multiple of 8)."),
    fps: int = typer.Option(8, "--fps", help="Frames per second of the demo clips."),
) -> None:
    """Migrate the database, create an admin and a demo study with synthetic clips of two demo renderers, then serve."""
    from app.cli.media import run_import
    from app.db import session_scope
    from app.migrate import upgrade
    from app.models import Prompt
    from app.services.studies import StudyError, invite_url, set_status
    from app.services.users import UserError

    settings = get_settings()
    url = upgrade()
    console.print(f"Database ready: {url}")
    try:
        with session_scope() as session:
            admin_password, admin_state = _ensure_admin(session, password)
            study, created = _ensure_study(session, frames=frames, size=size, fps=fps, admin_email=DEMO_ADMIN)
            study_id = study.id
            st = study.settings
            frames, size, fps = st.get("frames", frames), st.get("width", size), st.get("fps", fps)
            prompts = [(p.external_id, p.text) for p in session.scalars(
                select(Prompt).where(Prompt.study_id == study_id).order_by(Prompt.id))]
            missing = _missing_clips(session, study_id)
    except (UserError, StudyError) as exc:
        console.print(f"[red]Demo setup failed: {exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Demo study {'created' if created else 'found'} (id {study_id}, {len(prompts)} prompts).")

    if missing:
        folder = settings.data_dir / "demo-gifs"
        n = render_demo_folder(folder, prompts, frames=frames, size=size, fps=fps)
        console.print(f"Rendered {n} demo GIFs into {folder} ({frames} frames, {size}x{size}, {fps} fps).")
        # The same import path as `blindpair import-gifs`: validation, metadata stripping, opaque names, pairs.
        result = run_import(study_id, folder, replace=True)
        console.print(f"Imported: {result.created} new, {result.replaced} replaced, {result.unchanged} unchanged; "
                      f"{result.pairs_created} pair(s) made.")
    else:
        console.print("Demo clips already imported.")

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

        serve_cmd(host=None, port=None, reload=False)
