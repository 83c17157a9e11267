"""Turns ``compute_results``' dict (plus evaluators and costs from the DB) into what the pages draw.

One builder serves the dashboard, the HTML report and the study-page panel, so they cannot disagree. Every
number shown comes from the statistics dict unchanged; this module only picks, labels and arranges.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from app import charts
from app.models import Study
from app.services.generation import off_card_models
from app.services.metric_results import metrics_view
from app.services.results_cache import CachedResults, get_results
from app.services.results_data import compression_by_model, criterion_labels, evaluator_rows, model_costs
from app.services.trust import cluster_sensitivity

OVERALL = "overall"
OVERALL_LABEL = "Overall preferred"


def _row(rec: dict, labels: dict[str, str], *, agreement: dict | None = None, group: str | None = None) -> dict:
    key = rec["criterion"]
    adj = rec.get("p_bh") if group is not None else rec.get("p_holm")
    return {
        "key": key, "label": labels.get(key, OVERALL_LABEL if key == OVERALL else key), "group": group,
        "is_overall": key == OVERALL, "model_a": rec["model_a"], "model_b": rec["model_b"],
        "a": rec["wins_a"], "tie": rec["ties"], "b": rec["wins_b"], "n": rec["n"], "tie_rate": rec["tie_rate"],
        "rate": rec["pref_rate_a"], "ci_lo": rec["ci"][0], "ci_hi": rec["ci"][1],
        "tie_lo": rec["tie_ci"][0], "tie_hi": rec["tie_ci"][1], "approximate": bool(rec.get("approximate")),
        "n_prompts": rec.get("n_prompts"), "n_raters": rec.get("n_raters"),
        "p": rec["p_value"], "p_adj": adj, "p_independent": (rec.get("independent") or {}).get("p_value"),
        "significant": bool(rec["significant"]), "leader": rec.get("leader"),
        "votes_needed": rec.get("more_votes_80"), "lever": rec.get("best_lever"),
        "design_effect": rec.get("design_effect"),
        "alpha": ((agreement or {}).get(key) or {}).get("alpha"),
    }


def _pair_label(row: dict, two_models: bool) -> str:
    return row["label"] if two_models else f"{row['label']}: {row['model_a']} vs {row['model_b']}"


def _ratings(results: dict) -> tuple[list[dict], dict | None, str]:
    """The overall ratings block, tolerant of interval spelling (``ci: [lo, hi]`` or ``lo``/``hi``)."""
    block = (results.get("ratings") or {}).get(OVERALL)
    if not block:
        return [], None, ""
    if block.get("error"):
        return [], None, f"Ratings could not be computed: {block['error']}"
    rows = []
    for i, r in enumerate(block.get("ratings", [])):
        lo, hi = (r.get("ci") or [r.get("lo"), r.get("hi")])[:2]
        rows.append({"model": r["model"], "rating": r["rating"], "lo": lo, "hi": hi, "rank": r.get("rank", i + 1)})
    winrate = None
    if block.get("win_rate") and block.get("order"):
        winrate = {"models": block["order"], "matrix": block["win_rate"]}
    unit = block.get("bootstrap_unit", "prompt")
    resampled = "prompts and raters independently (pigeonhole bootstrap)" if unit == "prompt x rater" else f"{unit}s"
    note = ("Bradley-Terry ratings on the arena scale (400 points = 10:1 odds, mean 1000) from decided votes (a tie "
            f"counts for neither model; Davidson's model below treats ties as their own outcome); 95% intervals "
            f"from bootstrap resampling {resampled}; a model's rank is 1 + the number of models whose interval lies "
            "entirely above its own.")
    never_lost = (block.get("separation") or {}).get("top") or []
    if block.get("regularised"):
        note += (f" {', '.join(never_lost) or 'A model'} never lost, so no finite maximum-likelihood rating exists; "
                 "ratings are regularised with half a virtual win each way for every pair that met.")
    dav = block.get("davidson")
    if dav:
        note += (f" Davidson's tie model (ties as their own outcome): tie parameter ν = {dav['nu']:.2f}; worths "
                 + ", ".join(f"{w['model']} {w['worth']:.3f}" for w in dav["worths"])
                 + ("." if dav.get("converged", True) else " (the fit did not fully converge; read it as rough)."))
    return rows, winrate, note


def _group_tests(tests: list[dict] | None, labels: dict[str, str]) -> list[str]:
    return [
        f"{labels.get(t['criterion'], OVERALL_LABEL if t['criterion'] == OVERALL else t['criterion'])}: "
        + (f"permutation p = {t['p_value']:.3f} (theme labels shuffled across {t['n_units']} prompts)"
           if t.get("n_permutations") else f"χ²({t['dof']}) = {t['chi2']:.2f}, p = {t['p_value']:.3f} "
           "(votes treated as independent: no prompt column)")
        for t in tests or [] if t.get("p_value") is not None
    ]


def _ratings_by_criterion(results: dict, labels: dict[str, str]) -> dict | None:
    blocks = results.get("ratings") or {}
    keys = [k for k in [*results.get("criteria_keys", []), OVERALL] if (blocks.get(k) or {}).get("ratings")]
    if OVERALL not in keys:
        return None
    if not keys:
        return None
    models = [r["model"] for r in blocks[keys[-1]]["ratings"]]
    values = [[next((r["rating"] for r in blocks[k]["ratings"] if r["model"] == m), None) for k in keys]
              for m in models]
    # "cells", not "values": Jinja would resolve .values to the dict method.
    return {"labels": [labels.get(k, OVERALL_LABEL if k == OVERALL else k) for k in keys], "models": models,
            "cells": values}


def _cost_points(results: dict, costs: list[dict], models: list[str]) -> list[dict]:
    rate: dict[str, tuple[float | None, float | None, float | None]] = {}
    overall = results.get("overall") or []
    if len(models) == 2 and overall:
        rec = overall[0]
        r, (lo, hi) = rec["pref_rate_a"], rec["ci"]
        rate[rec["model_a"]] = (r, lo, hi)
        rate[rec["model_b"]] = (None if r is None else 1 - r, None if hi is None else 1 - hi,
                                None if lo is None else 1 - lo)
    else:
        wins: dict[str, float] = {}
        decided: dict[str, float] = {}
        for rec in overall:
            for m, w in ((rec["model_a"], rec["wins_a"]), (rec["model_b"], rec["wins_b"])):
                wins[m] = wins.get(m, 0) + w
                decided[m] = decided.get(m, 0) + rec["wins_a"] + rec["wins_b"]
        rate = {m: (wins[m] / decided[m] if decided[m] else None, None, None) for m in wins}
    out = []
    for c in costs:
        r, lo, hi = rate.get(c["model"], (None, None, None))
        seconds = c["median_model_seconds"] if c["median_model_seconds"] is not None else c["median_wall_seconds"]
        out.append(c | {"seconds": seconds, "rate": r, "lo": lo, "hi": hi})
    return out


def _vote_level(cached: CachedResults) -> dict:
    """Figures over votes (not vote x criterion rows), computed once per cached result."""
    frame = cached.frame
    first = frame.drop_duplicates("vote_id")
    shown = first if cached.include_flagged else first[~first["flagged"]]
    return {
        "per_day": _per_day(shown),
        "timeline": charts.votes_over_time(list(shown["submitted_at"].dt.to_pydatetime()) if len(shown) else []),
        "median_seconds": (first.groupby("evaluator")["time_spent_ms"].median() / 1000).round(1).to_dict(),
        "flagged_votes": int(first["flagged"].sum()),
    }


def _per_day(votes: pd.DataFrame) -> list[dict]:
    if votes.empty:
        return []
    counts = votes["submitted_at"].dt.strftime("%Y-%m-%d").value_counts().sort_index()
    total, out = 0, []
    for day, n in counts.items():
        total += int(n)
        out.append({"day": day, "votes": int(n), "total": total})
    return out


def _agreement_rows(agreement: dict, labels: dict[str, str], keys: list[str]) -> list[dict]:
    """Krippendorff's alpha per criterion with Krippendorff's own reading (Content Analysis, 2nd ed., 2004):
    alpha >= .800 reliable, .667-.800 tentative conclusions only, below .667 unreliable."""
    rows = []
    for key in [*keys, OVERALL]:
        a = agreement.get(key)
        if not a:
            continue
        alpha = a.get("alpha")
        reading = ("not enough overlap" if alpha is None else "reliable" if alpha >= 0.8
                   else "tentative" if alpha >= 0.667 else "low")
        rows.append({"label": labels.get(key, OVERALL_LABEL if key == OVERALL else key), "alpha": alpha,
                     "alpha_ordinal": a.get("alpha_ordinal"), "raw": a.get("pairwise_agreement"),
                     "n_units": a.get("n_units"), "n_judgements": a.get("n_judgements"), "reading": reading})
    return rows


def _position_rows(pb: dict | None, labels: dict[str, str]) -> list[dict]:
    rows = []
    for key, f in ((pb or {}).get("by_criterion") or {}).items():
        if f and f.get("n"):
            lo, hi = (f.get("ci") or [None, None])[:2]
            rows.append({"label": labels.get(key, key), "left": f.get("left_wins"), "right": f.get("right_wins"),
                         "rate": f.get("rate"), "lo": lo, "hi": hi, "p": f.get("p_value")})
    return rows


def _position_bias(pb: dict | None, model_a: str | None) -> dict | None:
    if not pb or not pb.get("n"):
        return None
    lo, hi = (pb.get("ci") or [None, None])[:2]
    rate, p = pb.get("rate"), pb.get("p_value")
    verdict = ("a significant pull towards one side" if p is not None and p < 0.05
               else "no significant pull towards either side")
    a_left, raw = pb.get("a_left_share"), pb.get("raw_rate")
    balance = f" {model_a} was shown on the left in {100 * a_left:.0f}% of votes." if a_left is not None else ""
    plain = f" The plain share of votes won by the left clip was {100 * raw:.1f}%." if raw is not None else ""
    text = (f"A model shown on the left won {100 * rate:.1f}% of the time against the same model shown on the right "
            f"({pb['n']} decided votes); 50% means no position bias, and here there is {verdict}. Each model is "
            "compared with itself on either side, so a better model that happened to be shown on the left more "
            "often does not look like a position effect; the interval and test allow for votes clustering by prompt "
            f"and by evaluator.{balance}{plain}") if rate is not None else ""
    return {"left": pb.get("left_wins"), "right": pb.get("right_wins"), "n": pb["n"], "rate": rate, "lo": lo,
            "hi": hi, "p": p, "text": text}


def _heat(rows: list[dict[str, Any]], res: dict[str, Any], labels: dict[str, str], *, subject: str,
          **options: Any) -> str:
    """A groups x criteria heatmap (themes or detail levels) of the first model's preference share."""
    names = list(dict.fromkeys(r["group"] for r in rows))
    cols = [(k, labels.get(k, k)) for k in res.get("criteria_keys", [])] + [(OVERALL, OVERALL_LABEL)]
    cells = {(r["group"], r["key"]): {"rate": r["rate"], "n": r["a"] + r["b"], "significant": r["significant"]}
             for r in rows}
    return charts.heatmap(names, cols, cells, subject=subject, **options)


def _charts(res: dict[str, Any], labels: dict[str, str], rows: list[dict[str, Any]], themes: list[dict[str, Any]],
            details: list[dict[str, Any]], costs: Any, ratings: Any, *, timeline: str, model_a: str | None,
            model_b: str | None, two: bool) -> dict[str, Any]:
    # Charts draw the verdict's own interval (clustered by prompt and rater): a ★ never sits on a bar across 50%.
    chart_rows = [r | {"label": _pair_label(r, two), "lo": r["ci_lo"], "hi": r["ci_hi"]} for r in rows]
    return {
        "wtl": charts.stacked_bars(chart_rows, model_a=model_a or "", model_b=model_b or "") if two else "",
        "forest": charts.forest_plot(chart_rows, subject=model_a or "") if two else "",
        "cost": charts.cost_scatter(costs),
        "timeline": timeline,
        "ratings": charts.ratings_plot(ratings) if ratings else "",
        "heat": _heat(themes, res, labels, subject=model_a or "") if themes and two else "",
        "detail_heat": (_heat(details, res, labels, subject=model_a or "", uid="heat-detail",
                              row_title="detail level") if details and two else ""),
    }


def _kpis(res: dict[str, Any], agreement: dict[str, Any], ov: dict[str, Any] | None, *, n_votes: int,
          model_a: str | None) -> list[tuple[str, str]]:
    """The headline figures; the overall preference only for two models (``model_a`` given)."""
    kpis = [
        (f"{n_votes:,}", "votes analysed"),
        (f"{res.get('n_evaluators') or 0}", "evaluators"),
        (f"{res.get('n_prompts') or 0}", "prompts"),
    ]
    if ov and ov["rate"] is not None and model_a is not None:
        kpis.append((f"{100 * ov['rate']:.0f}%", f"overall preference for {model_a}"))
        kpis.append((f"{100 * ov['tie_rate']:.0f}%", "overall ties"))
    alphas = [a["alpha"] for k, a in agreement.items() if k != OVERALL and a.get("alpha") is not None]
    if alphas:
        kpis.append((f"{sorted(alphas)[len(alphas) // 2]:.2f}", "median agreement (Krippendorff α)"))
    return kpis


def build_view(session: Session, *, study: Study, cached: CachedResults) -> dict[str, Any]:
    res = cached.results
    labels = criterion_labels(session, study_id=study.id)
    models = res.get("models") or [m.name for m in study.models]
    two = len(models) == 2
    agreement = res.get("agreement") or {}
    per_vote = cached.memo("vote_level", lambda: _vote_level(cached))
    evaluators = [e | {"median_seconds": per_vote["median_seconds"].get(e["evaluator"])}
                  for e in evaluator_rows(session, study_id=study.id)]
    flagged = [e for e in evaluators if e["flagged"]]
    flagged_votes = per_vote["flagged_votes"]
    criteria = [_row(r, labels, agreement=agreement) for r in res.get("criteria", [])]
    overall = [_row(r, labels, agreement=agreement) for r in res.get("overall", [])]
    order = {k: i for i, k in enumerate([*res.get("criteria_keys", []), OVERALL])}
    detail_order = {"short": 0, "medium": 1, "long": 2}
    themes = sorted((_row(r, labels, group=r["theme"]) for r in res.get("themes", [])),
                    key=lambda r: (r["group"], order.get(r["key"], 99)))
    details = sorted((_row(r, labels, group=r["detail"]) for r in res.get("detail_levels", [])),
                     key=lambda r: (detail_order.get(r["group"], 9), r["group"], order.get(r["key"], 99)))
    ratings, winrate, ratings_note = _ratings(res)
    costs = _cost_points(res, model_costs(session, study_id=study.id), models)
    n_votes = int(res.get("n_votes") or 0)
    model_a, model_b = (models + [None, None])[:2]

    view_charts = _charts(res, labels, criteria + overall, themes, details, costs, ratings,
                          timeline=per_vote["timeline"], model_a=model_a, model_b=model_b, two=two)
    theme_tests = _group_tests(res.get("themes_differ"), labels)
    pb = _position_bias(res.get("position_bias"), model_a)
    ov = overall[0] if overall else None
    kpis = _kpis(res, agreement, ov, n_votes=n_votes, model_a=model_a if two else None)
    voted = sum(1 for e in evaluators if e["votes"])
    summary = (f"{_n(len(evaluators), 'evaluator')} joined and {voted} voted; {len(flagged)} flagged by quality "
               f"control ({_n(flagged_votes, 'vote')}, {'included' if cached.include_flagged else 'excluded'} above).")
    return {
        "study": study, "empty": n_votes == 0, "include_flagged": cached.include_flagged,
        "flagged_votes": flagged_votes, "headline": res.get("headline") or "No votes yet.",
        "subhead": (f"{_n(n_votes, 'vote')} from {_n(res.get('n_evaluators') or 0, 'evaluator')} on "
                    f"{_n(res.get('n_prompts') or 0, 'prompt')}. ★ = significant after Holm adjustment across criteria "
                    f"(α = {res.get('alpha', 0.05)})."),
        "overall_definition": res.get("overall_definition", ""), "models": models, "two_models": two,
        "model_a": model_a, "model_b": model_b, "kpis": kpis,
        "criteria": [r | {"label": _pair_label(r, two)} for r in criteria],
        "overall": (ov | {"label": _pair_label(ov, two)}) if ov else None,
        "overall_rows": [r | {"label": _pair_label(r, two)} for r in overall],
        "themes": themes, "theme_tests": theme_tests, "details": details, "position_bias": pb,
        "detail_tests": _group_tests(res.get("detail_levels_differ"), labels),
        "agreement": _agreement_rows(agreement, labels, res.get("criteria_keys", [])),
        "position_rows": _position_rows(res.get("position_bias"), labels),
        "ratings": ratings, "winrate": winrate,
        "ratings_by_criterion": _ratings_by_criterion(res, labels), "ratings_note": ratings_note, "costs": costs,
        "compression": compression_by_model(session, study_id=study.id),
        "off_card": off_card_models(study),
        "sensitivity": cluster_sensitivity(session, study_id=study.id, cached=cached, labels=labels),
        "metrics": metrics_view(session, study=study, cached=cached),  # automatic clip metrics (_metrics.html)
        "per_day": per_vote["per_day"], "evaluators": evaluators, "flagged": flagged, "evaluator_summary": summary,
        "notes": list((res.get("methods") or {}).values()), "charts": view_charts, "votes": n_votes,
        "criterion_labels": labels, "settings": study.settings or {},
    }


def study_view(session: Session, *, study: Study, include_flagged: bool = False) -> tuple[dict, CachedResults]:
    cached = get_results(session, study_id=study.id, include_flagged=include_flagged)
    return build_view(session, study=study, cached=cached), cached


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")
