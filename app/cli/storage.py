"""CLI: ``blindpair storage check`` and ``blindpair storage migrate`` (the clip store, docs/storage.md)."""

from __future__ import annotations

import typer
from rich.console import Console

from app.cli.base import app, counted_progress
from app.cli.prompts import find_study
from app.media.storage import STORES, StorageConfigError, StorageError, StorageUnavailable

storage_app = typer.Typer(help="Where clips are stored: check the store against the database, move a study's clips.",
                          no_args_is_help=True)
app.add_typer(storage_app, name="storage")
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]{message}[/red]", highlight=False, markup=False)
    return typer.Exit(code)


@storage_app.command("check")
def check(
    study: str = typer.Option(None, "--study", help="Check only this study's clips (orphans need a whole-store "
                                                     "check)."),
    store: str = typer.Option(None, "--store", help="local or s3; default: the configured BLINDPAIR_STORAGE."),
    create_bucket: bool = typer.Option(False, "--create-bucket", help="Create BLINDPAIR_S3_BUCKET if it does not "
                                                                      "exist (never done otherwise)."),
) -> None:
    """Every clip recorded in the database exists in the store with its recorded sha256; lists orphaned objects.
    Exits 1 when a clip is missing or differs, or the store cannot be read."""
    from app.db import session_scope
    from app.services import storage as svc

    if store is not None and store not in STORES:
        raise _fail(f"--store must be one of {', '.join(STORES)}, not {store!r}", 2)
    if create_bucket:
        try:
            from app.media.storage import backend

            backend("s3").probe()
            console.print("The bucket already exists; nothing created.")
        except StorageConfigError as exc:
            if "does not exist" not in str(exc):
                raise _fail(str(exc)) from exc
            try:
                console.print(f"Created {svc.create_bucket()}.", highlight=False)
            except StorageError as exc2:
                raise _fail(f"Could not create the bucket: {exc2}") from exc2
        except StorageError as exc:
            raise _fail(str(exc)) from exc
    with session_scope() as session:
        study_id = find_study(session, study).id if study else None
        with counted_progress(console, show=True) as bar:
            task = bar.add_task("checking clips", total=None)
            report = svc.check_storage(session, store=store, study_id=study_id,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"Store: {report.where}", highlight=False)
    if report.problem:
        raise _fail(f"The store cannot be read: {report.problem}")
    console.print(f"{report.checked} clip(s) checked; {len(report.missing)} missing, {len(report.mismatched)} "
                  f"with a different sha256, {len(report.orphans)} orphaned object(s).")
    for clip_id in report.missing:
        console.print(f"  missing: clip {clip_id} (re-import or regenerate it)")
    for clip_id in report.mismatched:
        console.print(f"  sha256 differs: clip {clip_id} (its object changed after it was recorded)")
    for name in report.orphans:
        console.print(f"  orphan: {name} (no clip names it; the worker's sweeper removes it once it is "
                      "older than BLINDPAIR_STORAGE_ORPHAN_SECONDS)", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@storage_app.command("migrate")
def migrate(
    to: str = typer.Option(..., "--to", help="The store to copy the study's clips into: s3 or local."),
    study: str = typer.Option(..., "--study", help="Study id or slug."),
) -> None:
    """Copy a study's clips into another store, checked by hash, switching each clip as it lands. Stopped or
    failed midway, run it again: it goes on where it stopped. Set BLINDPAIR_STORAGE too, for new clips."""
    from app.db import session_scope
    from app.services import storage as svc

    if to not in STORES:
        raise _fail(f"--to must be one of {', '.join(STORES)}, not {to!r}", 2)
    with session_scope() as session:
        study_id = find_study(session, study).id
    try:
        with counted_progress(console, show=True) as bar:
            task = bar.add_task(f"copying clips to {to}", total=None)
            report = svc.migrate_study(study_id=study_id, to=to,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    except StorageUnavailable as exc:
        raise _fail(f"Stopped: {exc}. Clips copied so far stay copied; run the command again to go on.") from exc
    except StorageError as exc:
        raise _fail(f"Nothing more copied: {exc}") from exc
    console.print(f"{report.copied} clip(s) copied to {report.where}, {report.already} already there, "
                  f"{len(report.failed)} failed (of {report.total}).", highlight=False)
    for clip_id, error in report.failed.items():
        console.print(f"  clip {clip_id}: {error}", highlight=False)
    from app.config import get_settings

    if get_settings().storage != to:
        console.print(f"New clips still go to {get_settings().storage}: set BLINDPAIR_STORAGE={to} for the web "
                      "server and the workers.")
    if report.failed:
        raise typer.Exit(1)
