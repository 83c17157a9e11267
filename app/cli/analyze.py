"""CLI: ``blindpair analyze`` — a study's results in the terminal (and as HTML/JSON files), the same results
re-computed from a study's raw votes export (``--votes``, so a reviewer reproduces a paper's numbers from its
published votes file), or ratings for an external FastChat ``clean_battle`` log computed with the same
statistics."""

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
    votes: Path = typer.Option(
        None, "--votes", dir_okay=False,
        help="Re-analyse a study's raw votes export (CSV, JSONL or Parquet): its results, without its database.",
    ),
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
    """Summarise a study (--study), re-analyse its raw votes export (--votes) or rate a clean_battle log (--battles)."""
    console = Console(width=width)
    if sum(bool(x) for x in (study, votes, battles)) != 1:
        _fail("Give exactly one of --study ID (a BlindPair study), --votes FILE (a study's raw votes export) or "
              "--battles FILE (a clean_battle log).", code=2)
    if html and not study:
        _fail("--html needs --study (the report shows the study's evaluators and costs, which a file lacks).", code=2)
    if battles:
        _analyze_battles(console, battles, anony_only=anony_only, n_boot=n_boot, json_out=json_out)
    elif votes:
        _analyze_votes(console, votes, include_flagged=include_flagged, json_out=json_out)
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


# --- a study's raw votes export ----------------------------------------------------------------------------


def _analyze_votes(console: Console, path: Path, *, include_flagged: bool, json_out: Path | None) -> None:
    """Results of a raw votes file, by the very call the study's pages make (same bootstrap size and seed)."""
    from app.services import results_cache
    from app.stats.frame import VoteFrameError
    from app.stats.votes_file import VotesFileError, read_votes_file

    try:
        data = read_votes_file(path)
    except VotesFileError as exc:
        _fail(f"{path} could not be analysed: {exc}")
        return
    try:
        results = results_cache.compute(data.frame, criteria=data.criteria, include_flagged=include_flagged)
    except VoteFrameError as exc:
        _fail(f"{path} could not be analysed: {exc}")
        return
    print_results(console, results, title=path.name)
    if data.ignored_columns:
        console.print(f"[dim]Columns not used by the statistics: {', '.join(data.ignored_columns)}.[/dim]")
    excluded = results.get("excluded_flagged_votes") or 0
    if excluded:
        console.print(f"{excluded} vote(s) of evaluators flagged by quality control left out; add --include-flagged "
                      "to count them.")
    console.print(f"[dim]{results_cache.N_BOOT} bootstrap replicates, seed {results_cache.SEED}, as the study's "
                  "own results.[/dim]")
    if json_out:
        payload = {"source": str(path), "format": data.format, "include_flagged": include_flagged,
                   "votes": results.get("n_votes"), "results": results}
        json_out.write_text(json.dumps(payload, indent=1, allow_nan=False))
        console.print(f"Results JSON written to {json_out}")


def _interval(ci: object) -> str:
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci):
        return f"{_pct(float(ci[0]))}–{_pct(float(ci[1]))}"
    return "–"


def print_results(console: Console, results: dict, *, title: str) -> None:
    """The headline and the per-criterion verdicts of a results dict (``compute_results``)."""
    n_votes = results.get("n_votes") or 0
    console.print(Panel.fit(
        f"[bold]{results.get('headline', '')}[/bold]\n{n_votes:,} votes from {results.get('n_evaluators') or 0} "
        f"evaluators on {results.get('n_prompts') or 0} prompts.", title=title, border_style="blue"))
    rows = [*results.get("criteria", []), *results.get("overall", [])]
    if not rows:
        return
    two = len(results.get("models") or []) == 2
    table = Table(title="Per criterion" + ("" if two else " and model pair"), title_justify="left",
                  header_style="bold")
    for name in ("Criterion", "A", "B"):
        table.add_column(name, no_wrap=True)
    for name in ("A wins", "Ties", "B wins", "Pref. A", "95% interval", "p (adj.)"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Result", no_wrap=True)
    for r in rows:
        ci = r.get("ci", r.get("bootstrap_ci"))
        result = f"[green]★ {r.get('leader')}[/green]" if r.get("significant") else "[dim]undecided[/dim]"
        table.add_row(str(r.get("criterion")), str(r.get("model_a")), str(r.get("model_b")), str(r.get("wins_a")),
                      str(r.get("ties")), str(r.get("wins_b")), _pct(r.get("pref_rate_a"), 1), _interval(ci),
                      _p(r.get("p_holm", r.get("p_value"))), result)
    console.print(table)
    overall_ratings = (results.get("ratings") or {}).get(OVERALL) or {}
    if overall_ratings.get("ratings"):
        print_ratings(console, [r | {"lo": r["ci"][0], "hi": r["ci"][1]} for r in overall_ratings["ratings"]],
                      {"models": overall_ratings["order"], "matrix": overall_ratings["win_rate"]},
                      title="Ratings (overall)")
    if results.get("overall_definition"):
        console.print(f"[dim]{results['overall_definition']}[/dim]")


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
    from app.stats.ratings import rate_models

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
        # No prompts in an arena log, and judges are often one per battle: the bootstrap resamples battles, as
        # FastChat's does (a study's votes are resampled by prompt and rater).
        block = rate_models(part, n_boot=n_boot, seed=0, prompt=None, rater=None)  # one bootstrap for both fits
        dav = block.pop("davidson")
        print_ratings(console, [r | {"lo": r["ci"][0], "hi": r["ci"][1]} for r in block["ratings"]],
                      {"models": block["order"], "matrix": block["win_rate"]},
                      title=f"Bradley-Terry ratings ({block['n_battles']:,} battles, {n_boot} bootstrap replicates)")
        if block.get("regularised"):
            sep = block.get("separation") or {}
            console.print(f"[yellow]No finite maximum-likelihood rating: {', '.join(sep.get('top', []))} never lost "
                          "to the other models; ratings are regularised (half a virtual win each way per "
                          "pair).[/yellow]")
        regularised = block.get("bootstrap_regularised_share")
        if regularised:
            console.print(f"[dim]{100 * regularised:.0f}% of bootstrap replicates needed the regularised fit (a model "
                          "that never loses in a resample has no finite maximum-likelihood rating).[/dim]")
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
        wr = Table(title="Win rate, row vs column (among decided votes; ties count for neither)",
                   title_justify="left", header_style="bold")
        wr.add_column("")
        for s in short:
            wr.add_column(s, justify="right")
        for k, (m, row) in enumerate(zip(models, winrate["matrix"], strict=True)):
            wr.add_row(f"{short[k]} {m}", *["·" if x is None else f"{100 * x:.0f}%" for x in row])
        console.print(wr)
