"""CLI: ``blindpair import-gifs`` (a folder per model of ``<prompt id>.gif`` files)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from app.cli.base import app, counted_progress
from app.cli.prompts import find_study
from app.media.storage import StorageError
from app.services.clips import ClipImportError, ImportResult, remove_media, run_gif_import

console = Console()
err_console = Console(stderr=True)


def print_refusal(exc: ClipImportError) -> None:
    err_console.print(f"[red]Import refused: {len(exc.errors)} problem(s). No clip was added or changed.[/red]")
    for error in exc.errors:
        err_console.print(f"  {error}", markup=False, highlight=False)
    if exc.mismatches:
        reference = exc.expected.describe() if exc.expected is not None else "the other files"
        table = Table(title=f"Files that differ from {reference}")
        for col in ("model", "file", "frames", "size", "fps", "what differs"):
            table.add_column(col)
        for m in sorted(exc.mismatches, key=lambda m: (m.model, m.file)):
            table.add_row(m.model, m.file, str(m.found.frames), f"{m.found.width}x{m.found.height}",
                          f"{m.found.fps:g}", "; ".join(m.differs))
        err_console.print(table)


def run_import(study_id: int, folder: Path, *, seed: int = 0, replace: bool = False,
               show_progress: bool = True) -> ImportResult:
    """Import with a progress bar, all or nothing; exits 1 with the full report when refused."""
    with counted_progress(console, show=show_progress) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{phase} GIFs", total=total)
            bar.update(tasks[phase], completed=done)

        try:
            # Files are checked in a snapshot transaction, stored in a short write one (run_gif_import).
            result = run_gif_import(study_id=study_id, folder=folder, seed=seed, replace=replace, progress=progress)
        except ClipImportError as exc:
            bar.stop()
            print_refusal(exc)
            raise typer.Exit(1) from exc
        except StorageError as exc:
            bar.stop()
            err_console.print(f"[red]Import stopped, no clip was added or changed: {exc}[/red]", highlight=False)
            raise typer.Exit(1) from exc
    remove_media(result.obsolete_files)  # only now that the new rows are committed
    return result


@app.command("import-clips")
@app.command("import-gifs")
def import_gifs(
    folder: str = typer.Argument(..., help="Folder with one sub-folder per model holding <prompt id>.gif, .mp4 or "
                                           ".webm files, or a bucket prefix s3://<bucket>/<prefix> laid out the "
                                           "same way."),
    study: str = typer.Option(..., "--study", help="Study id or slug."),
    seed: int = typer.Option(0, "--seed", help="Seed the clips were rendered with (pairs match clips by seed)."),
    replace: bool = typer.Option(False, "--replace", help="Replace clips whose file changed (never once voted on)."),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="Compute the clips' automatic metrics after "
                                                                      "the import (weight-free; `blindpair metrics`)."),
) -> None:
    """Check every clip (decodable, animated, same frames/size/fps for all models), then store them all or none.

    Clips are stored in the study's format (setting clip_format: gif, mp4 or webm), re-encoded by one encoder."""
    from app.db import session_scope

    with session_scope() as session:
        target = find_study(session, study)
        study_id, name = target.id, target.name
    if folder.startswith("s3://"):
        result = _import_from_bucket(study_id, folder, seed=seed, replace=replace)
    else:
        result = run_import(study_id, Path(folder), seed=seed, replace=replace)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    table = Table(title=f"Imported into {name!r}" + (f" ({result.signature.describe()})" if result.signature else ""))
    for col in ("model", "files"):
        table.add_column(col)
    for model, n in result.per_model.items():
        table.add_row(model, str(n))
    console.print(table)
    console.print(f"[green]{result.created} new, {result.replaced} replaced, {result.unchanged} unchanged; "
                  f"{result.pairs_created} new pair(s) ready to rate.[/green]")
    if metrics:
        from app.cli.metrics import compute_with_progress, report

        report(compute_with_progress(study_id))


def _import_from_bucket(study_id: int, url: str, *, seed: int, replace: bool) -> ImportResult:
    """The objects under the prefix are copied into a temporary folder and imported from there, so a bucket
    gets exactly the folder import's checks (sizes, pixel budget, formats, all or nothing)."""
    from app.config import get_settings
    from app.services.storage import download_prefix

    with tempfile.TemporaryDirectory(prefix="blindpair-import-") as tmp:
        try:
            n = download_prefix(url, Path(tmp), max_bytes=get_settings().max_upload_bytes)
        except (StorageError, ValueError) as exc:
            err_console.print(f"[red]Import refused, nothing was changed: {exc}[/red]", highlight=False)
            raise typer.Exit(1) from exc
        console.print(f"{n} object(s) read from {url}", highlight=False)
        return run_import(study_id, Path(tmp), seed=seed, replace=replace)
