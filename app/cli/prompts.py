"""CLI: ``blindpair prompts import|check|themes|list``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from app.cli.base import prompts_app
from app.models import Study
from app.services.prompts import (
    MAX_CLIP_TOKENS,
    PromptError,
    PromptFileError,
    PromptSpec,
    add_prompts,
    count_clip_tokens,
    load_builtin_suite,
    parse_prompt_file,
)

console = Console()
err_console = Console(stderr=True)


def find_study(session, ref: str) -> Study:
    """A study by numeric id or slug; exits with a clear message when there is none."""
    study = session.get(Study, int(ref)) if ref.isdigit() else None
    study = study or session.scalars(select(Study).where(Study.slug == ref)).first()
    if study is None:
        err_console.print(f"[red]There is no study {ref!r}.[/red] Give its id or slug (the study page shows both).")
        raise typer.Exit(1)
    return study


def _read_prompt_file(path: Path) -> list[PromptSpec]:
    if not path.is_file():
        err_console.print(f"[red]{path} is not a file.[/red]")
        raise typer.Exit(1)
    try:
        return parse_prompt_file(path.read_bytes(), path.name)
    except PromptFileError as exc:
        err_console.print(f"[red]{path.name} was refused: {len(exc.errors)} problem(s). Nothing was imported.[/red]")
        for error in exc.errors:
            err_console.print(f"  {error}", markup=False, highlight=False)
        raise typer.Exit(1) from exc


def _prompt_table(specs: list[PromptSpec], title: str) -> Table:
    table = Table(title=title)
    for col in ("id", "theme", "detail", "tokens", "text"):
        table.add_column(col, justify="right" if col == "tokens" else "left", overflow="fold")
    for s in specs:
        table.add_row(s.external_id, s.theme, s.detail, f"{count_clip_tokens(s.text)}/{MAX_CLIP_TOKENS}", s.text)
    return table


@prompts_app.command("import")
def import_prompts(
    file: Path = typer.Argument(..., help="A .csv (id,text,theme[,detail,tags]) or .jsonl file."),
    study: str = typer.Option(..., "--study", help="Study id or slug."),
) -> None:
    """Add prompts from a CSV or JSONL file to a study; a file with any bad line is refused whole."""
    from app.db import session_scope

    specs = _read_prompt_file(file)
    with session_scope() as session:
        target = find_study(session, study)
        try:
            added = add_prompts(session, study_id=target.id, specs=specs)
        except PromptError as exc:
            err_console.print(f"[red]Nothing was imported into {target.name!r}:[/red]")
            for error in exc.errors:
                err_console.print(f"  {error}", markup=False, highlight=False)
            raise typer.Exit(1) from exc
        themes = Counter(p.theme for p in added)
        console.print(f"[green]Added {len(added)} prompt(s) to study {target.name!r} (id {target.id}).[/green]")
        for theme, n in themes.items():
            console.print(f"  {theme}: {n}")


@prompts_app.command("check")
def check_prompts(file: Path = typer.Argument(..., help="A .csv or .jsonl prompt file.")) -> None:
    """Validate a prompt file (fields, ids, CLIP length) without importing it."""
    specs = _read_prompt_file(file)
    console.print(_prompt_table(specs, f"{file.name}: {len(specs)} prompt(s), all fit CLIP's {MAX_CLIP_TOKENS} tokens"))


@prompts_app.command("themes")
def list_themes_cmd() -> None:
    """Themes of the built-in suite with how many prompts of each detail level they hold."""
    suite = load_builtin_suite()
    table = Table(title=f"Built-in suite: {len(suite)} prompts")
    for col in ("theme", "prompts", "short", "medium", "long"):
        table.add_column(col, justify="left" if col == "theme" else "right")
    by_theme: dict[str, Counter] = {}
    for s in suite:
        by_theme.setdefault(s.theme, Counter())[s.detail] += 1
    for theme, c in by_theme.items():
        table.add_row(theme, str(sum(c.values())), str(c["short"]), str(c["medium"]), str(c["long"]))
    console.print(table)


prompts_app.command("list-themes", hidden=True)(list_themes_cmd)


@prompts_app.command("list")
def list_prompts(theme: str = typer.Option(None, "--theme", help="Only this theme.")) -> None:
    """The built-in suite's prompts with their exact CLIP token counts."""
    suite = load_builtin_suite()
    if theme:
        known = sorted({s.theme for s in suite})
        suite = [s for s in suite if s.theme == theme]
        if not suite:
            err_console.print(f"[red]No theme {theme!r}.[/red] Themes: {', '.join(known)}")
            raise typer.Exit(1)
    console.print(_prompt_table(suite, "Built-in suite" + (f": {theme}" if theme else "")))
