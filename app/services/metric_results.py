"""The automatic metrics beside the votes, for ``results.json``, the dashboard and the HTML report.

Computed from the cached vote frame (``app.services.results_cache``) and the stored clip metrics, by the pure
``app.stats.adjusted.metric_analysis``; memoised on the cached results under a fingerprint of the study's
metrics, so a page view computes nothing unless a vote, a QC flag or a metric changed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app import charts
from app.metrics import METRICS, spec
from app.models import Clip, Pair, Study, Vote
from app.services.metrics import clip_costs, clip_metric_rows, metrics_fingerprint, metrics_progress
from app.services.results_cache import CachedResults
from app.services.results_data import criterion_keys, criterion_labels
from app.stats.adjusted import DEFAULT_ADJUST_FOR, MetricLink, metric_analysis
from app.stats.overall import OVERALL

OVERALL_LABEL = "Overall preferred"
METHODS = {
    "agreement": "Agreement: among decided votes whose two clips differ on the metric, the share where the rater's "
    "winner is the clip the metric favours; 95% interval and test two-way clustered by prompt and rater.",
    "adjusted": "Motion-adjusted preference: a logistic model of the vote on the clips' difference in mean optical "
    "flow (in standard deviations), as FastChat's style control adds style differences to its model; its intercept "
    "is the preference between two clips that move equally. The unadjusted share is the same model without the "
    "covariate on the same votes. Intervals: two-way cluster-robust (prompt x rater), Student's t; Holm across the "
    "criteria.",
    "prediction": "Prediction: a logistic model on every metric difference and nothing else (no model identity), "
    "fitted on the other prompts and scored on held-out ones (grouped K-fold by prompt), against always predicting "
    "the model that won more training votes.",
    "cost": "Cost and quality: median GPU-seconds per clip (denoising + VAE decoding) with a 95% bootstrap "
    "interval over clips, against the share of its decided votes each model won (clustered interval).",
}


def _pair_clips(session: Session, *, study_id: int) -> pd.DataFrame:
    clip_a, clip_b = aliased(Clip), aliased(Clip)
    rows = session.execute(
        select(Vote.id, Pair.clip_a_id, Pair.clip_b_id)
        .join(Pair, Pair.id == Vote.pair_id)
        .join(clip_a, clip_a.id == Pair.clip_a_id).join(clip_b, clip_b.id == Pair.clip_b_id)
        .where(Vote.study_id == study_id, Pair.kind == "normal")
    ).all()
    return pd.DataFrame(rows, columns=["vote_id", "clip_a", "clip_b"])


def _links(criteria: list[str], measured: set[str]) -> list[MetricLink]:
    return [MetricLink(criterion, m.name, sign) for m in METRICS for criterion, sign in m.criteria
            if criterion in criteria and m.name in measured]


def _compute(session: Session, *, study_id: int, cached: CachedResults) -> dict[str, Any]:
    frame = cached.frame
    if not cached.include_flagged and "flagged" in frame.columns:
        frame = frame[~frame["flagged"].astype(bool)]
    criteria = list(cached.results.get("criteria_keys") or criterion_keys(session, study_id=study_id))
    values = clip_metric_rows(session, study_id=study_id)
    measured = set(values["metric"]) if len(values) else set()
    metrics = [m.name for m in METRICS if m.name in measured]
    models = list(cached.results.get("models") or [])
    if not models:
        study = session.get(Study, study_id)
        models = [m.name for m in study.models] if study is not None else []
    analysis = metric_analysis(
        frame, _pair_clips(session, study_id=study_id), values,
        clip_costs(session, study_id=study_id), models=models, criteria=criteria,
        links=_links(criteria, measured), metrics=metrics,
        adjust_for=[m for m in DEFAULT_ADJUST_FOR if m in measured],
    )
    analysis["definitions"] = [{"name": m.name, "label": m.label, "version": _version(values, m.name), "unit": m.unit,
                                "better": m.better, "description": m.description, "source": m.source,
                                "criteria": [c for c, _ in m.criteria]} for m in METRICS]
    analysis["notes"] = _notes(analysis, criterion_labels(session, study_id=study_id))
    analysis["methods"] = METHODS
    return analysis


def _version(values: pd.DataFrame, name: str) -> str | None:
    if values.empty:
        return None
    versions = values.loc[values["metric"] == name, "version"]
    return str(versions.iloc[0]) if len(versions) else None


def _label(key: str, labels: dict[str, str]) -> str:
    return OVERALL_LABEL if key == OVERALL else labels.get(key, key)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _lead(share: float, ci: list[float | None], model_a: str, model_b: str) -> tuple[str, float, list[float | None]]:
    """The model ahead, its share and interval (B's share is 1 - A's, interval flipped)."""
    if share >= 0.5:
        return model_a, share, ci
    lo, hi = ci
    return model_b, 1 - share, [None if hi is None else 1 - hi, None if lo is None else 1 - lo]


def _notes(analysis: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Headline sentences: a preference that disappears (or appears) once motion is accounted for."""
    notes = []
    adjusted = analysis.get("adjusted") or []
    for r in adjusted:
        un, adj = r["unadjusted"], r["adjusted"]
        if not (r["disappears"] or r["appears"]) or un["share"] is None or adj["share"] is None:
            continue
        who, share, ci = _lead(un["share"], un["ci"], r["model_a"], r["model_b"])
        adj_share = adj["share"] if who == r["model_a"] else 1 - adj["share"]
        adj_ci = adj["ci"] if who == r["model_a"] else [None if adj["ci"][1] is None else 1 - adj["ci"][1],
                                                        None if adj["ci"][0] is None else 1 - adj["ci"][0]]
        what = _label(r["criterion"], labels)
        if r["disappears"]:
            notes.append(f"{who}'s preference on {what} disappears once motion is accounted for: {_pct(share)} "
                         f"({_pct(ci[0])}–{_pct(ci[1])}) of decided votes, but {_pct(adj_share)} "
                         f"({_pct(adj_ci[0])}–{_pct(adj_ci[1])}) between clips that move equally.")
        else:
            notes.append(f"On {what}, a preference appears once motion is accounted for: {_pct(share)} for {who} "
                         f"unadjusted, {_pct(adj_share)} ({_pct(adj_ci[0])}–{_pct(adj_ci[1])}) between clips that "
                         "move equally.")
    held = [r for r in adjusted if r["unadjusted"].get("significant") and not r["disappears"]]
    if adjusted and not notes and held:
        what = "The preference" if len(held) == 1 else f"All {len(held)} preferences"
        notes.append(f"{what} significant before accounting for motion {'holds' if len(held) == 1 else 'hold'} "
                     "after it.")
    return notes


def metric_results(session: Session, *, study_id: int, cached: CachedResults) -> dict[str, Any]:
    """The metrics block of ``results.json`` (keys documented in ``app.stats.adjusted.metric_analysis``)."""
    fingerprint = metrics_fingerprint(session, study_id=study_id)
    return cached.memo(f"metrics:{fingerprint}", lambda: _compute(session, study_id=study_id, cached=cached))


# ------------------------------------------------------------------------------------------------------------------
def _agreement_rows(analysis: dict[str, Any], labels: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for r in analysis.get("agreement") or []:
        m = spec(r["metric"])
        favours = "higher" if r["sign"] > 0 else "lower"
        lo, hi = (r.get("ci") or [None, None])[:2]
        rows.append({"label": f"{_label(r['criterion'], labels)} ↔ {m.label}",
                     "short": f"{_label(r['criterion'], labels)} ↔ {SHORT.get(m.name, m.name)}", "rate": r.get("share"),
                     "lo": lo,
                     "hi": hi, "n": r["n"], "n_equal": r["n_equal"], "p": r.get("p_value"),
                     "significant": r.get("significant"), "favours": f"{favours} {m.label.lower()}",
                     "approximate": r.get("approximate")})
    return rows


def _adjusted_rows(analysis: dict[str, Any], labels: dict[str, str], two: bool) -> list[dict[str, Any]]:
    rows = []
    for r in analysis.get("adjusted") or []:
        label = _label(r["criterion"], labels) + ("" if two else f": {r['model_a']} vs {r['model_b']}")
        coef = r["coefficients"][0] if r["coefficients"] else None
        rows.append({"label": label, "model_a": r["model_a"], "model_b": r["model_b"], "n": r["n"],
                     "n_decided": r["n_decided"], "un": r["unadjusted"], "adj": r["adjusted"], "coef": coef,
                     "disappears": r["disappears"], "appears": r["appears"], "is_overall": r["criterion"] == OVERALL})
    return rows


def _chart_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two chart rows per criterion: as voted, then adjusted (a short second label keeps the axis readable)."""
    out = []
    for r in rows:
        for kind, label in (("un", r["label"]), ("adj", "↳ motion-adjusted")):
            block = r[kind]
            lo, hi = (block.get("ci") or [None, None])[:2]
            out.append({"label": label, "rate": block.get("share"), "lo": lo, "hi": hi,
                        "significant": block.get("significant")})
    return out


SHORT = {"motion_mean": "flow", "motion_p95": "flow p95", "warp_error": "warping", "flicker": "flicker",
         "sharpness": "sharpness", "brisque": "BRISQUE", "clip_score": "CLIP"}


def _cost_points(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for r in analysis.get("cost_quality") or []:
        overall = (r.get("shares") or {}).get(OVERALL) or {}
        lo, hi = (overall.get("ci") or [None, None])[:2]
        s_lo, s_hi = (r.get("seconds_ci") or [None, None])[:2]
        points.append({"model": r["model"], "seconds": r.get("seconds"), "s_lo": s_lo, "s_hi": s_hi,
                       "rate": overall.get("share"), "lo": lo, "hi": hi, "clips": r.get("clips_timed"),
                       "shares": r.get("shares") or {}})
    return points


def metrics_view(session: Session, *, study: Study, cached: CachedResults) -> dict[str, Any]:
    """What ``templates/results/_metrics.html`` draws: the same numbers as ``results.json``'s "metrics"."""
    analysis = metric_results(session, study_id=study.id, cached=cached)
    labels = criterion_labels(session, study_id=study.id)
    models = analysis.get("models") or []
    two = len(models) == 2
    progress = metrics_progress(session, study_id=study.id)
    agreement = _agreement_rows(analysis, labels)
    adjusted = _adjusted_rows(analysis, labels, two)
    costs = _cost_points(analysis)
    subject = models[0] if two else "model A of each pair"
    summary = []
    for block in analysis.get("summary") or []:
        m = spec(block["metric"])
        summary.append({"label": m.label, "unit": m.unit, "better": m.better, "models": block["models"]})
    prediction = []
    for r in (analysis.get("prediction") or {}).get("criteria") or []:
        weights = sorted((r.get("coefficients") or {}).items(), key=lambda kv: -abs(kv[1]))[:3]
        prediction.append({"label": _label(r["criterion"], labels), "n": r["n"], "folds": r.get("folds"),
                           "accuracy": r.get("accuracy"), "baseline": r.get("baseline"), "error": r.get("error"),
                           "coefficients": [(SHORT.get(k, k), v) for k, v in weights]})
    return {
        "available": bool(analysis.get("clips_measured")), "progress": progress, "notes": analysis.get("notes") or [],
        "definitions": [d for d in analysis.get("definitions") or [] if d["version"]],
        "summary": summary, "agreement": agreement, "adjusted": adjusted, "prediction": prediction, "costs": costs,
        "criteria": [(k, _label(k, labels)) for k in analysis.get("criteria") or []],
        "adjusted_for": [spec(m).label for m in analysis.get("adjusted_for") or []], "subject": subject,
        "methods": list(METHODS.values()),
        "charts": {
            "agreement": charts.forest_plot([a | {"label": a["short"]} for a in agreement], subject="the metric's pick",
                                            uid="metric-agree", label_width=280) if agreement else "",
            "adjusted": charts.forest_plot(_chart_rows(adjusted), subject=subject, uid="metric-adjusted",
                                           label_width=220) if adjusted and two else "",
            "cost": charts.cost_scatter(costs, uid="metric-cost") if costs else "",
        },
    }
