"""CLI: ``blindpair analyze`` — a study's results in the terminal (and as HTML/JSON files), or ratings for an
external FastChat ``clean_battle`` log computed with the same statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console, JustifyMethod
from rich.panel import Panel
from rich.table import Table

from app.cli.base import app

OVERALL = "overall"


def _pct(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _p(p: float | None) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


@app.command("analyze")
def analyze(
    study: str = typer.Option(None, "--study", help="Study id or slug to summarise."),
    battles: Path = typer.Option(
        None, "--battles", dir_okay=False, help="Rate an external FastChat clean_battle JSON log instead."
    ),
    include_flagged: bool = typer.Option(False, "--include-flagged",
                                         help="Count votes of evaluators flagged by quality control."),
    html: Path = typer.Option(None, "--html", dir_okay=False, help="Also write the self-contained HTML report."),
    json_out: Path = typer.Option(None, "--json", dir_okay=False, help="Also write the results as JSON."),
    anony_only: bool = typer.Option(False, "--anony-only", help="With --battles: only blind (anony) battles."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="With --battles: bootstrap replicates."),
    width: int = typer.Option(None, "--width", help="Terminal width for the tables (default: detected)."),
) -> None:
    """Summarise a study (--study) or rate a clean_battle log (--battles)."""
    console = Console(width=width)
    if bool(study) == bool(battles):
        _fail("Give exactly one of --study ID (a BlindPair study) or --battles FILE (a clean_battle log).", code=2)
    if battles:
        _analyze_battles(console, battles, anony_only=anony_only, n_boot=n_boot, json_out=json_out)
    else:
        _analyze_study(console, study, include_flagged=include_flagged, html=html, json_out=json_out)


# --- a study ---------------------------------------------------------------------------------------------------


def _find_study(session, ref: str):
    from sqlalchemy import select

    from app.models import Study

    found = session.get(Study, int(ref)) if ref.isdigit() else None
    found = found or session.scalar(select(Study).where(Study.slug == ref))
    if found is None:
        slugs = ", ".join(f"{s.id} ({s.slug})" for s in session.scalars(select(Study).order_by(Study.id)).all()[:10])
        _fail(f"No study {ref!r}. Known studies: {slugs or 'none yet (blindpair study create)'}.")
    return found


def _analyze_study(console: Console, ref: str, *, include_flagged: bool, html: Path | None,
                   json_out: Path | None) -> None:
    from app.cli.serve import require_migrated
    from app.db import session_scope
    from app.services import exports
    from app.services.results_view import study_view

    require_migrated()
    with session_scope() as session:
        study = _find_study(session, ref)
        view, cached = study_view(session, study=study, include_flagged=include_flagged)
        print_study(console, view)
        if json_out:
            body = exports.results_json(session, study=study, include_flagged=include_flagged).body
            json_out.write_bytes(body if isinstance(body, bytes) else b"".join(body))  # a Download may stream
            console.print(f"Results JSON written to {json_out}")
        if html:
            html.write_text(exports.report_html(session, study=study, include_flagged=include_flagged))
            console.print(f"HTML report written to {html}")


def print_study(console: Console, v: dict) -> None:
    study = v["study"]
    console.print(Panel.fit(f"[bold]{v['headline']}[/bold]\n{v['subhead']}",
                            title=f"{study.name} ({study.slug})", border_style="blue"))
    if v["empty"]:
        console.print("No votes yet: share the study's invite link to collect some.")
        return
    two = v["two_models"]
    title = f"Per criterion: A = {v['model_a']}, B = {v['model_b']}" if two else "Per criterion and model pair"
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("Criterion", no_wrap=True)
    for name in ("A wins", "Ties", "B wins", "Pref. A", "95% (prompts x raters)", "p (Holm)"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Result", no_wrap=True)
    table.add_column("α agree", justify="right", no_wrap=True)
    table.add_column("More votes", justify="right", no_wrap=True)
    rows = v["criteria"] + v["overall_rows"]
    for k, r in enumerate(rows):
        result = f"[green]★ {r['leader']}[/green]" if r["significant"] else "[dim]undecided[/dim]"
        more = "–" if r["significant"] else ("not reachable" if r["votes_needed"] is None else str(r["votes_needed"]))
        label = f"[bold]{r['label']}[/bold]" if r["is_overall"] else r["label"]
        table.add_row(
            label, str(r["a"]), str(r["tie"]), str(r["b"]), _pct(r["rate"], 1),
            f"{_pct(r['ci_lo'])}–{_pct(r['ci_hi'])}{'*' if r['approximate'] else ''}",
            _p(r["p_adj"]), result, "–" if r["alpha"] is None else f"{r['alpha']:.2f}", more,
            end_section=k + 1 < len(rows) and rows[k + 1]["is_overall"] and not r["is_overall"],
        )
    console.print(table)
    if v["ratings"]:
        print_ratings(console, v["ratings"], v.get("winrate"), title="Ratings (overall)")
    if v["position_bias"]:
        console.print(f"Position bias. {v['position_bias']['text']}")
    console.print(v["evaluator_summary"]
                  + ("" if v["include_flagged"] or not v["flagged_votes"] else " Add --include-flagged to count them."))
    for e in v["flagged"]:
        console.print(f"  [red]flagged[/red] {e['evaluator']} ({e['votes']} votes): "
                      f"{'; '.join(e['flag_reasons']) or 'no reason recorded'}")
    console.print(f"[dim]{v['overall_definition']}[/dim]")


# --- a clean_battle log ----------------------------------------------------------------------------------------


def _components(frame: pd.DataFrame) -> list[list[str]]:
    """Groups of models connected by battles (ratings are only comparable within one group)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(frame["model_a"], frame["model_b"], strict=True):
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for m in parent:
        groups.setdefault(find(m), []).append(m)
    return [sorted(g) for g in groups.values()]


def _analyze_battles(console: Console, path: Path, *, anony_only: bool, n_boot: int, json_out: Path | None) -> None:
    from app.stats.clean_battle import CleanBattleError, read_clean_battle
    from app.stats.ratings import bradley_terry, davidson

    try:
        frame = read_clean_battle(path, anony_only=anony_only)
    except CleanBattleError as exc:
        _fail(f"{path} could not be read: {exc}")
    self_play = int((frame["model_a"] == frame["model_b"]).sum())
    frame = frame[frame["model_a"] != frame["model_b"]]
    ties = int((frame["winner"] == "tie").sum())
    console.print(Panel.fit(
        f"[bold]{len(frame):,} battles[/bold] between {frame[['model_a', 'model_b']].stack().nunique()} models"
        f"{' (blind battles only)' if anony_only else ''}; {ties:,} ties"
        f"{f'; {self_play} battle(s) of a model against itself ignored' if self_play else ''}.",
        title=str(path.name), border_style="blue"))
    out: list[dict] = []
    # Largest group (by battles) first: that is usually the one the log is about.
    groups = sorted(_components(frame), key=lambda g: (-int(frame["model_a"].isin(g).sum()), g))
    if len(groups) > 1:
        console.print(f"The models fall into {len(groups)} groups that never met; each is rated on its own.")
    for group in groups:
        part = frame[frame["model_a"].isin(group)]
        if len(group) < 2 or part.empty:
            continue
        # No prompts in an arena log: the bootstrap resamples battles, as FastChat's does.
        block = bradley_terry(part, n_boot=n_boot, seed=0, cluster=None)
        dav = davidson(part)
        print_ratings(console, [r | {"lo": r["ci"][0], "hi": r["ci"][1]} for r in block["ratings"]],
                      {"models": block["order"], "matrix": block["win_rate"]},
                      title=f"Bradley-Terry ratings ({block['n_battles']:,} battles, {n_boot} bootstrap replicates)")
        converged = block.get("bootstrap_converged_share")
        if converged is not None and converged < 1:
            console.print(f"[yellow]{100 * (1 - converged):.0f}% of bootstrap fits did not converge (a model that "
                          "never loses in a resample has no finite rating); treat its interval as unbounded.[/yellow]")
        if dav:
            console.print(f"Davidson tie model: tie parameter ν = {dav['nu']:.3f}; worths "
                          + ", ".join(f"{w['model']} {w['worth']:.3f}" for w in dav["worths"]))
        out.append({"models": group, "bradley_terry": block, "davidson": dav})
    if json_out:
        json_out.write_text(json.dumps({"source": str(path), "anony_only": anony_only, "groups": out}, indent=1))
        console.print(f"Ratings JSON written to {json_out}")


def print_ratings(console: Console, rows: list[dict], winrate: dict | None, *, title: str) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("Rank", "right"), ("Model", "left"), ("Rating", "right"), ("95% interval", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for r in rows:
        lo, hi = r.get("lo"), r.get("hi")
        interval = "–" if lo is None or hi is None or lo != lo else f"{lo:.0f} – {hi:.0f}"
        table.add_row(str(r["rank"]), r["model"], f"{r['rating']:.0f}", interval)
    console.print(table)
    if winrate and winrate.get("matrix"):
        models = winrate["models"]
        short = [f"#{k + 1}" for k in range(len(models))]
        wr = Table(title="Win rate, row vs column (ties not counted as wins)", title_justify="left",
                   header_style="bold")
        wr.add_column("")
        for s in short:
            wr.add_column(s, justify="right")
        for k, (m, row) in enumerate(zip(models, winrate["matrix"], strict=True)):
            wr.add_row(f"{short[k]} {m}", *["·" if x is None else f"{100 * x:.0f}%" for x in row])
        console.print(wr)
