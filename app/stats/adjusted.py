"""Automatic clip metrics beside the votes: do raters agree with the metrics, and does a preference survive
once motion is accounted for?

Every function takes plain frames and returns plain records; nothing here knows where the metrics came from.

- **Pair differences.** Each vote row gets, per metric, ``value(model A's clip) - value(model B's clip)``, with
  model A the earlier model of the study's order (as everywhere in the results).
- **Agreement.** Per criterion and matching metric: among decided votes whose clips differ on the metric, the
  share where the rater's winner is the clip the metric favours (the higher value for +1 links, the lower for
  -1). Interval and test: the two-way (prompt x rater) cluster-robust score test of ``app.stats.clustered``.
- **Adjusted preference.** A logistic model of "A won" (decided votes) on an intercept and the metric
  differences, as FastChat's style control adds style differences to its Bradley-Terry model
  (https://lmsys.org/blog/2024-08-28-style-control/). With the differences at zero, i.e. for two clips that
  move as much as each other, the intercept is A's log-odds of winning: ``expit(b0)`` is the adjusted
  preference. The unadjusted one is the same model without covariates, on the same votes. The differences are
  divided by their standard deviation (never centred: centring would move the point the intercept describes).
  Standard errors are two-way cluster-robust by prompt and rater (statsmodels' GLM with ``cov_type='cluster'``
  and two group columns, Cameron, Gelbach & Miller 2011), with Student's t on min(prompts, raters) - 1 degrees
  of freedom. Only motion is adjusted for by default: the other metrics measure what the criteria ask about
  (distortion, aesthetics, relevance), and adjusting for them would remove the very differences being judged.
- **Prediction.** How well the metric differences alone (no model identity) predict each vote: a logistic model
  without intercept, fitted on K-1 folds of prompts and scored on the held-out prompts (grouped K-fold), so no
  prompt is both learned and tested.
- **Cost and quality.** Per model: median GPU-seconds per clip with a bootstrap interval over clips, and the
  share of its decided votes it won, with the clustered interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

from app.stats.clustered import Clustering, share_inference
from app.stats.frame import plain_json
from app.stats.overall import OVERALL, overall_votes
from app.stats.significance import adjust_pvalues

ALPHA = 0.05
CONFIDENCE = 0.95
FOLDS = 5
N_BOOT = 1000
DEFAULT_ADJUST_FOR = ("motion_mean",)
_DIFF = "d_"
EQUAL_RTOL = 1e-9  # metric values this close (relative) count as equal


@dataclass(frozen=True)
class MetricLink:
    """A criterion and a metric that should move with it: ``sign`` +1 if the preferred clip should have the
    higher value, -1 the lower."""

    criterion: str
    metric: str
    sign: int


# ------------------------------------------------------------------------------------------------------------------
def pair_differences(votes: pd.DataFrame, pair_clips: pd.DataFrame, clip_metrics: pd.DataFrame, *,
                     models: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per vote x criterion with ``y`` (1.0 A won, 0.0 B won, nan tie) and ``d_<metric>`` columns.

    ``votes``: vote_id, criterion, model_a, model_b, winner ('model_a' | 'model_b' | 'tie'), prompt, evaluator.
    ``pair_clips``: vote_id, clip_a, clip_b (the clips behind the vote's model_a and model_b).
    ``clip_metrics``: clip_id, metric, value (one value per clip and metric).
    """
    cols = ["vote_id", "criterion", "model_a", "model_b", "winner", "prompt", "evaluator"]
    out = votes[[c for c in cols if c in votes.columns]].copy()
    for c in ("criterion", "model_a", "model_b", "winner", "prompt", "evaluator"):
        if c in out.columns:
            out[c] = out[c].astype(str)
    out = out.merge(pair_clips[["vote_id", "clip_a", "clip_b"]], on="vote_id", how="left")
    order = {m: i for i, m in enumerate(models)}
    swap = (out["model_a"].map(order).fillna(-1).to_numpy() > out["model_b"].map(order).fillna(-1).to_numpy())
    a_model, b_model = out["model_a"].to_numpy(), out["model_b"].to_numpy()
    a_clip, b_clip = out["clip_a"].to_numpy(), out["clip_b"].to_numpy()
    out["model_a"], out["model_b"] = np.where(swap, b_model, a_model), np.where(swap, a_model, b_model)
    out["clip_a"], out["clip_b"] = np.where(swap, b_clip, a_clip), np.where(swap, a_clip, b_clip)
    won_a = (out["winner"] == "model_a").to_numpy()
    won_b = (out["winner"] == "model_b").to_numpy()
    won_a, won_b = np.where(swap, won_b, won_a), np.where(swap, won_a, won_b)
    out["y"] = np.where(won_a, 1.0, np.where(won_b, 0.0, np.nan))
    wide = (clip_metrics.pivot_table(index="clip_id", columns="metric", values="value", aggfunc="mean")
            if len(clip_metrics) else pd.DataFrame())
    for metric in metrics:
        values = wide[metric] if metric in wide.columns else pd.Series(dtype=float)
        a = out["clip_a"].map(values).astype(float).to_numpy()
        b = out["clip_b"].map(values).astype(float).to_numpy()
        diff = a - b
        # Two measurements of identical clips can differ in the last bits (threaded floating-point sums): equal.
        with np.errstate(invalid="ignore"):
            diff[np.abs(diff) <= EQUAL_RTOL * np.fmax(np.fmax(np.abs(a), np.abs(b)), 1.0)] = 0.0
        out[_DIFF + metric] = diff
    return out.drop(columns=["winner"])


def with_overall(votes: pd.DataFrame, criteria: list[str]) -> pd.DataFrame:
    """The vote rows plus one 'overall' row per vote (``app.stats.overall``'s definition)."""
    if votes.empty or "vote_id" not in votes.columns:
        return votes
    overall = overall_votes(votes, criteria)
    cols = [c for c in ("vote_id", "criterion", "model_a", "model_b", "winner", "prompt", "evaluator")
            if c in votes.columns]
    frames = [votes[cols].astype({c: str for c in cols if c != "vote_id"}),
              overall[cols].astype({c: str for c in cols if c != "vote_id"})]
    return pd.concat(frames, ignore_index=True)


def _inference_rows(frame: pd.DataFrame, agree: np.ndarray, cells: np.ndarray, n_cells: int,
                    confidence: float) -> list[dict[str, Any]]:
    inf = share_inference(np.asarray(agree, dtype=float), np.ones(len(agree)), cells, n_cells,
                          Clustering.of(frame), confidence=confidence)
    return [{"share": inf.estimate[i], "ci": [inf.lo[i], inf.hi[i]], "p_value": inf.p_value[i],
             "n_prompts": inf.n_prompts[i], "n_raters": inf.n_raters[i], "approximate": inf.approximate[i]}
            for i in range(n_cells)]


# ------------------------------------------------------------------------------------------------------------------
def metric_agreement(diffs: pd.DataFrame, links: Iterable[MetricLink], *,
                     confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per link: does the rater's winner on the criterion also win on the metric?"""
    parts: list[pd.DataFrame] = []
    agree_parts: list[np.ndarray] = []
    cell_parts: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    for link in links:
        col = _DIFF + link.metric
        if col not in diffs.columns:
            continue
        rows = diffs[(diffs["criterion"] == link.criterion) & diffs["y"].notna() & diffs[col].notna()]
        differ = rows[col].to_numpy() != 0
        rec: dict[str, Any] = {"criterion": link.criterion, "metric": link.metric, "sign": link.sign,
                               "n": int(differ.sum()), "n_equal": int((~differ).sum())}
        rows = rows[differ]
        if len(rows):
            favoured_a = link.sign * rows[col].to_numpy() > 0
            parts.append(rows)
            agree_parts.append((rows["y"].to_numpy() == 1.0) == favoured_a)
            cell_parts.append(np.full(len(rows), len(records)))
        records.append(rec)
    if parts:
        frame = pd.concat(parts, ignore_index=True)
        inferred = _inference_rows(frame, np.concatenate(agree_parts), np.concatenate(cell_parts), len(records),
                                   confidence)
        for rec, inf in zip(records, inferred, strict=True):
            rec.update(inf if rec["n"] else {})
    for rec in records:
        rec.setdefault("share", None)
        if rec.get("p_value") is not None and not math.isnan(rec["p_value"]):
            rec["significant"] = bool(rec["p_value"] < 1 - confidence)
        else:
            rec["significant"] = False
    return [plain_json(r) for r in records]


# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Fit:
    params: np.ndarray
    ci: np.ndarray  # (k, 2)
    p: np.ndarray
    df: float
    clusters: str


def _groups(frame: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """Cluster codes for statsmodels: two columns (prompt, rater) when both have 2+ clusters, else the one that
    does, else None (votes as independent)."""
    cols = []
    names = []
    for name, col in (("prompt", "prompt"), ("rater", "evaluator")):
        if col in frame.columns:
            codes = pd.factorize(frame[col])[0]
            if codes.max(initial=-1) >= 1:
                cols.append(codes)
                names.append(name)
    if not cols:
        return None, "none"
    return (np.column_stack(cols) if len(cols) == 2 else cols[0]), " x ".join(names)


def _logit(y: np.ndarray, X: np.ndarray, frame: pd.DataFrame, confidence: float) -> _Fit | str:
    """A clustered logistic fit, or the reason there is none."""
    # The GLM module alone: ``statsmodels.api`` imports the time-series and plotting packages too (2.5 s).
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    if len(y) < X.shape[1] + 2:
        return "too few decided votes"
    if y.min() == y.max():
        return "every decided vote went the same way, so the log-odds are not finite"
    groups, names = _groups(frame)
    kwargs: dict[str, Any] = ({"cov_type": "cluster", "cov_kwds": {"groups": groups}, "use_t": True}
                              if groups is not None else {"cov_type": "HC0"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            result = GLM(y, X, family=families.Binomial()).fit(**kwargs)
    except Exception as exc:  # perfect separation, a singular design, overflow: say so rather than fail the page
        return f"the logistic model could not be fitted ({type(exc).__name__}: {exc})"
    params = np.asarray(result.params, dtype=float)
    if not np.isfinite(params).all() or np.abs(params).max() > 30:
        return "the metric separates the votes perfectly, so the log-odds are not finite"
    ci = np.asarray(result.conf_int(alpha=1 - confidence), dtype=float)
    df = float(getattr(result, "df_resid_inference", None) or np.inf)
    return _Fit(params=params, ci=ci, p=np.asarray(result.pvalues, dtype=float), df=df, clusters=names)


def _share_record(fit: _Fit | str) -> dict[str, Any]:
    if isinstance(fit, str):
        return {"share": None, "ci": [None, None], "p_value": None, "error": fit}
    return {"share": float(expit(fit.params[0])), "ci": [float(expit(fit.ci[0, 0])), float(expit(fit.ci[0, 1]))],
            "p_value": float(fit.p[0]), "df": fit.df, "clusters": fit.clusters}


def adjusted_preference(diffs: pd.DataFrame, *, criteria: Sequence[str],
                        adjust_for: Sequence[str] = DEFAULT_ADJUST_FOR, alpha: float = ALPHA,
                        confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per criterion and model pair: A's preference share unadjusted and adjusted for the metric differences.

    Both come from the same decided votes (those whose clips have every covariate measured), so they differ only
    by the adjustment. Holm across the records of each kind (as the main results adjust across criteria);
    ``disappears`` marks a preference significant before adjustment and not after.
    """
    records: list[dict[str, Any]] = []
    covariates = [c for c in adjust_for if _DIFF + c in diffs.columns]
    for criterion in criteria:
        part = diffs[(diffs["criterion"] == criterion) & diffs["y"].notna()]
        for (model_a, model_b), rows in part.groupby(["model_a", "model_b"], sort=False):
            usable = rows.dropna(subset=[_DIFF + c for c in covariates]) if covariates else rows
            y = usable["y"].to_numpy(dtype=float)
            rec: dict[str, Any] = {"criterion": criterion, "model_a": model_a, "model_b": model_b,
                                   "n": len(usable), "n_decided": len(rows), "adjusted_for": covariates}
            ones = np.ones((len(usable), 1))
            rec["unadjusted"] = _share_record(_logit(y, ones, usable, confidence))
            sd = {c: float(np.std(usable[_DIFF + c].to_numpy(dtype=float))) for c in covariates}
            kept = [c for c in covariates if sd[c] > 0]
            X = np.column_stack([ones] + [usable[_DIFF + c].to_numpy(dtype=float) / sd[c] for c in kept])
            fit = _logit(y, X, usable, confidence)
            rec["adjusted"] = _share_record(fit)
            rec["coefficients"] = [] if isinstance(fit, str) else [
                {"metric": c, "per_sd": float(fit.params[i + 1]), "ci": [float(fit.ci[i + 1, 0]),
                                                                         float(fit.ci[i + 1, 1])],
                 "p_value": float(fit.p[i + 1]), "sd": sd[c]} for i, c in enumerate(kept)]
            records.append(rec)
    for kind in ("unadjusted", "adjusted"):
        p = np.array([np.nan if r[kind]["p_value"] is None else r[kind]["p_value"] for r in records], dtype=float)
        holm = adjust_pvalues(p, "holm") if len(p) else p
        for r, ph in zip(records, holm, strict=True):
            r[kind]["p_holm"] = ph
            r[kind]["significant"] = bool(not math.isnan(ph) and ph < alpha)
    for r in records:
        before, after = r["unadjusted"], r["adjusted"]
        r["disappears"] = bool(before["significant"] and not after["significant"] and after["share"] is not None)
        r["appears"] = bool(after["significant"] and not before["significant"] and before["share"] is not None)
    return [plain_json(r) for r in records]


# ------------------------------------------------------------------------------------------------------------------
def _fit_no_intercept(X: np.ndarray, y: np.ndarray, ridge: float = 1.0, iterations: int = 50) -> np.ndarray:
    """Logistic regression without intercept by Newton's method with a small ridge penalty (keeps the fit finite
    when a metric separates the training votes)."""
    beta = np.zeros(X.shape[1])
    for _ in range(iterations):
        p = expit(X @ beta)
        gradient = X.T @ (y - p) - ridge * beta
        hessian = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(X.shape[1])
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def _folds(prompts: pd.Series, k: int, seed: int) -> np.ndarray:
    """Fold number per row: the prompts shuffled once and dealt round-robin into ``k`` folds."""
    unique = np.array(sorted(prompts.unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(unique)
    fold_of = {p: i % k for i, p in enumerate(unique)}
    return prompts.map(fold_of).to_numpy(dtype=int)


def predict_votes(diffs: pd.DataFrame, *, criteria: Sequence[str], features: Sequence[str], folds: int = FOLDS,
                  seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Held-out accuracy of the metrics alone at predicting each criterion's decided votes (grouped K-fold by
    prompt), beside a baseline that always predicts the model that won more of the training votes."""
    cols = [_DIFF + f for f in features if _DIFF + f in diffs.columns and diffs[_DIFF + f].notna().any()]
    records: list[dict[str, Any]] = []
    scored: list[pd.DataFrame] = []
    for criterion in criteria:
        rows = diffs[(diffs["criterion"] == criterion) & diffs["y"].notna()].reset_index(drop=True)
        k = min(folds, int(rows["prompt"].nunique())) if len(rows) else 0
        rec: dict[str, Any] = {"criterion": criterion, "n": len(rows), "folds": k,
                               "features": [c[len(_DIFF):] for c in cols]}
        if k < 2 or not cols:
            rec["error"] = "needs decided votes on two or more prompts and at least one measured metric"
            records.append(rec)
            continue
        X = rows[cols].to_numpy(dtype=float)
        y = rows["y"].to_numpy(dtype=float)
        fold = _folds(rows["prompt"], k, seed)
        correct = np.zeros(len(rows))
        baseline = np.zeros(len(rows))
        for f in range(k):
            train, test = fold != f, fold == f
            scale = np.nanstd(X[train], axis=0)
            scale[~(scale > 0)] = 1.0
            Xtr = np.nan_to_num(X[train] / scale)  # a metric missing for a clip: no difference known
            Xte = np.nan_to_num(X[test] / scale)
            beta = _fit_no_intercept(Xtr, y[train])
            p = expit(Xte @ beta)
            correct[test] = np.where(p == 0.5, 0.5, (p > 0.5) == (y[test] == 1.0))
            majority = y[train].mean()
            baseline[test] = np.where(majority == 0.5, 0.5, (majority > 0.5) == (y[test] == 1.0))
        scale_all = np.nanstd(X, axis=0)
        scale_all[~(scale_all > 0)] = 1.0
        beta_all = _fit_no_intercept(np.nan_to_num(X / scale_all), y)
        rec["coefficients"] = {c[len(_DIFF):]: float(b) for c, b in zip(cols, beta_all, strict=True)}
        rec["_rows"] = len(scored)
        scored.append(rows.assign(_correct=correct, _baseline=baseline))
        records.append(rec)
    if scored:
        frame = pd.concat(scored, ignore_index=True)
        cells = np.concatenate([np.full(len(s), i) for i, s in enumerate(scored)])
        acc = _inference_rows(frame, frame["_correct"].to_numpy(), cells, len(scored), confidence)
        base = _inference_rows(frame, frame["_baseline"].to_numpy(), cells, len(scored), confidence)
        for rec in records:
            i = rec.pop("_rows", None)
            if i is not None:
                rec["accuracy"] = acc[i]
                rec["baseline"] = base[i]
    return plain_json({"folds": folds, "seed": seed, "criteria": records})


# ------------------------------------------------------------------------------------------------------------------
def _median_interval(values: np.ndarray, n_boot: int, rng: np.random.Generator,
                     confidence: float) -> tuple[float | None, float | None, float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None, None
    if len(values) == 1:
        return float(values[0]), None, None
    draws = np.median(rng.choice(values, size=(n_boot, len(values)), replace=True), axis=1)
    tail = (1 - confidence) / 2
    return float(np.median(values)), float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def cost_quality(votes: pd.DataFrame, clip_costs: pd.DataFrame, *, models: Sequence[str], criteria: Sequence[str],
                 n_boot: int = N_BOOT, seed: int = 0, confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per model: median GPU-seconds per clip (bootstrap interval over clips) and, per criterion (and overall),
    the share of the decided votes it took part in that it won (two-way clustered interval).

    ``votes``: criterion, model_a, model_b, winner, prompt, evaluator (with 'overall' rows if wanted);
    ``clip_costs``: model, seconds (one row per clip; NaN where no cost was recorded).
    """
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    decided = votes[votes["winner"].astype(str) != "tie"]
    keys = list(criteria)
    rows, wins, cells = [], [], []
    for mi, model in enumerate(models):
        for ci, criterion in enumerate(keys):
            part = decided[(decided["criterion"].astype(str) == criterion)
                           & ((decided["model_a"].astype(str) == model) | (decided["model_b"].astype(str) == model))]
            won = np.where(part["model_a"].astype(str) == model, part["winner"].astype(str) == "model_a",
                           part["winner"].astype(str) == "model_b")
            rows.append(part)
            wins.append(won)
            cells.append(np.full(len(part), mi * len(keys) + ci))
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    shares = (_inference_rows(frame, np.concatenate(wins), np.concatenate(cells), len(models) * len(keys),
                              confidence) if len(frame) else [])
    for mi, model in enumerate(models):
        seconds = clip_costs.loc[clip_costs["model"].astype(str) == model, "seconds"].to_numpy(dtype=float)
        median, lo, hi = _median_interval(seconds, n_boot, rng, confidence)
        per = {}
        for ci, criterion in enumerate(keys):
            n = len(rows[mi * len(keys) + ci])
            cell = shares[mi * len(keys) + ci] if n else {}
            per[criterion] = {"share": cell.get("share"), "ci": cell.get("ci", [None, None]), "n": n}
        out.append({"model": model, "clips_timed": int(np.isfinite(seconds).sum()), "seconds": median,
                    "seconds_ci": [lo, hi], "shares": per})
    return [plain_json(r) for r in out]


# ------------------------------------------------------------------------------------------------------------------
def model_summary(clip_metrics: pd.DataFrame, *, models: Sequence[str], metrics: Sequence[str],
                  confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per metric and model: clips measured, mean with a t interval over clips, median."""
    out: list[dict[str, Any]] = []
    for metric in metrics:
        part = clip_metrics[clip_metrics["metric"] == metric]
        per_model = []
        for model in models:
            values = part.loc[part["model"].astype(str) == model, "value"].to_numpy(dtype=float)
            n = len(values)
            mean = float(values.mean()) if n else None
            half = (float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
                    if n > 1 else None)
            per_model.append({"model": model, "n": n, "mean": mean,
                              "ci": [mean - half, mean + half] if mean is not None and half is not None
                              else [None, None],
                              "median": float(np.median(values)) if n else None})
        out.append({"metric": metric, "models": per_model})
    return [plain_json(r) for r in out]


def metric_analysis(votes: pd.DataFrame, pair_clips: pd.DataFrame, clip_metrics: pd.DataFrame,
                    clip_costs: pd.DataFrame, *, models: Sequence[str], criteria: list[str],
                    links: Sequence[MetricLink], metrics: Sequence[str],
                    adjust_for: Sequence[str] = DEFAULT_ADJUST_FOR, folds: int = FOLDS, seed: int = 0,
                    n_boot: int = N_BOOT) -> dict[str, Any]:
    """Everything above for one study.

    ``votes``: the vote frame (flagged evaluators already left out as the caller decides); ``clip_metrics``:
    clip_id, model, metric, value; ``clip_costs``: clip_id, model, seconds.
    """
    votes = votes[votes["criterion"].astype(str).isin(criteria)]
    keys = [*criteria, OVERALL] if "vote_id" in votes.columns and len(votes) else list(criteria)
    every = with_overall(votes, criteria) if len(votes) else votes
    if len(every):
        every = every[every["model_a"].astype(str) != every["model_b"].astype(str)]
    diffs = (pair_differences(every, pair_clips, clip_metrics, models=models, metrics=metrics) if len(every)
             else pd.DataFrame())
    result: dict[str, Any] = {
        "models": list(models), "criteria": keys, "metrics": list(metrics), "adjusted_for": list(adjust_for),
        "n_votes": int(votes["vote_id"].nunique()) if "vote_id" in votes.columns else len(votes),
        "clips_measured": int(clip_metrics["clip_id"].nunique()) if len(clip_metrics) else 0,
        "summary": model_summary(clip_metrics, models=models, metrics=metrics),
    }
    if diffs.empty:
        result.update({"agreement": [], "adjusted": [], "prediction": {"criteria": []}, "cost_quality":
                       cost_quality(every, clip_costs, models=models, criteria=keys, n_boot=n_boot, seed=seed)
                       if len(every) else []})
        return plain_json(result)
    result["agreement"] = metric_agreement(diffs, [lk for lk in links if lk.criterion in criteria])
    result["adjusted"] = adjusted_preference(diffs, criteria=keys, adjust_for=adjust_for)
    result["prediction"] = predict_votes(diffs, criteria=keys, features=metrics, folds=folds, seed=seed)
    result["cost_quality"] = cost_quality(every, clip_costs, models=models, criteria=keys, n_boot=n_boot, seed=seed)
    return plain_json(result)
