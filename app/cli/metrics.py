"""CLI: ``blindpair metrics compute STUDY`` (and ``metrics show``): the automatic clip metrics of a study."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from app.cli.base import app, counted_progress
from app.cli.prompts import find_study
from app.services import metrics as svc

metrics_app = typer.Typer(help="Automatic clip metrics (motion, flicker, warping error, sharpness, BRISQUE, CLIP).",
                          no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")
console = Console()


def compute_with_progress(study_id: int, *, force: bool = False, with_clip: bool = False, device: str = "cpu",
                          show_progress: bool = True) -> svc.ComputeSummary:
    """Measure the study's clips that need it (all with ``force``) under a progress bar with counts and ETA."""
    from app.db import session_scope

    with session_scope() as session:
        ids = ([t.clip_id for t in svc.targets(session, study_id=study_id)] if force
               else [t.clip_id for t in svc.needing(session, study_id=study_id, with_weights=with_clip)])
    with counted_progress(console, show=show_progress and bool(ids)) as bar:
        task = bar.add_task("measuring clips", total=len(ids))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if with_clip:
            from worker.metrics import compute_for_clips

            return compute_for_clips(ids, device=device, force=force, progress=progress)
        return svc.compute_clips(ids, force=force, progress=progress)


def report(summary: svc.ComputeSummary) -> None:
    console.print(f"[green]{summary.measured} clip(s) measured[/green], {summary.skipped_current} already current, "
                  f"{len(summary.failed)} failed ({summary.seconds:.1f} s).", highlight=False)
    for name, why in summary.not_computed.items():
        console.print(f"[yellow]{name} not computed:[/yellow] {why}", highlight=False)
    for clip_id, error in list(summary.failed.items())[:20]:
        console.print(f"[red]clip {clip_id}:[/red] {error}", highlight=False)


@metrics_app.command("compute")
def compute(
    study: str = typer.Argument(..., help="Study id or slug."),
    force: bool = typer.Option(False, "--force", help="Recompute every clip, not only those missing a metric."),
    clip: bool = typer.Option(False, "--clip", help="Also CLIP text-video relevance (needs the CLIP weights: "
                                                    "BLINDPAIR_CLIP_MODEL, default openai/clip-vit-base-patch32)."),
    device: str = typer.Option("cpu", help="Device for CLIP: cpu, cuda or cuda:N."),
) -> None:
    """Compute the metrics of the study's clips that lack a current value, with a progress bar."""
    from app.db import session_scope

    with session_scope() as session:
        study_id = find_study(session, study).id
    summary = compute_with_progress(study_id, force=force, with_clip=clip, device=device)
    report(summary)
    if summary.failed:
        raise typer.Exit(1)


@metrics_app.command("show")
def show(study: str = typer.Argument(..., help="Study id or slug.")) -> None:
    """Per model: how many clips are measured and the median of each metric."""
    from app.db import session_scope

    with session_scope() as session:
        target = find_study(session, study)
        progress = svc.metrics_progress(session, study_id=target.id)
        table = svc.metrics_table(session, study_id=target.id)
    console.print(f"{progress.measured} of {progress.clips} clips measured, {progress.with_clip} with CLIP relevance.")
    names = [m.name for m in svc.METRICS if m.name in table.columns and table[m.name].notna().any()]
    models = list(dict.fromkeys(table["model"]))
    out = Table(title="Median per model")
    out.add_column("metric")
    for model in models:
        out.add_column(f"{model} ({int((table['model'] == model).sum())} clips)", justify="right")
    for name in names:
        out.add_row(name, *(f"{table.loc[table['model'] == m, name].median():.4g}" for m in models))
    console.print(out)
