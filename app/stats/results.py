"""``compute_results``: every figure of the results dashboard and exports, as one JSON-serialisable dict.

Keys of the returned dict (floats are plain floats, undefined values are None):

- ``models``: model names, study order (model_a of every pair comes first).
- ``criteria_keys``: the criteria analysed, in order.
- ``n_votes`` (distinct vote_id, or rows / criteria when absent), ``n_rows``, ``n_evaluators``, ``n_prompts``.
- ``excluded_flagged_votes``: votes of QC-flagged evaluators left out (0 when ``include_flagged``).
- ``include_flagged``, ``alpha`` (0.05), ``confidence`` (0.95), ``n_boot``, ``seed``.
- ``criteria``: one record per criterion (x model pair when there are more than two models) with
  ``criterion, model_a, model_b, wins_a, wins_b, ties, n, share_a, share_b, tie_rate,
  pref_rate_a`` (wins of A among decided votes), ``wilson_ci: [lo, hi]``, ``bootstrap_ci: [lo, hi]``,
  ``bootstrap_unit`` ('prompt' or 'vote'), ``p_value`` (exact sign test), ``p_holm`` (Holm across all
  records of this list), ``significant`` (p_holm < alpha), ``leader`` (model with more wins, None if equal),
  ``winner`` (leader if significant else None), ``votes_needed_80`` (total votes, ties included, for 80%
  power at the observed rate), ``more_votes_80`` (how many more than now; None when already significant or
  no effect).
- ``overall``: list of records of the same shape for the "overall preferred" aggregate (one per model pair;
  ``p_holm`` is Holm across pairs, so equals ``p_value`` with two models), ``overall_definition``: str.
- ``themes`` / ``detail_levels``: records of the same shape plus ``theme`` / ``detail`` and ``p_bh``
  (Benjamini-Hochberg across group x criterion cells; the overall cells, criterion 'overall', are their own
  family); ``significant`` and ``winner`` there use ``p_bh``; ``votes_needed_80``/``more_votes_80`` are None
  there (sample sizes are planned per criterion).
- ``themes_differ`` / ``detail_levels_differ``: records ``criterion, model_a, model_b, n_groups, chi2, dof,
  p_value, min_expected, test`` (chi-square test of independence).
- ``agreement``: ``{criterion or 'overall': {"alpha", "n_units", "n_judgements"}}`` (Krippendorff, nominal).
- ``position_bias``: ``{"left_wins", "right_wins", "n", "rate", "ci", "p_value", "a_left_share", "unit",
  "by_criterion": {criterion: same without unit}}`` or None when the frame has no ``side``.
- ``ratings``: None with two models; else ``{criterion or 'overall': block}`` where block is
  ``{"ratings": [{"model", "rating", "ci": [lo, hi], "rank"}] (best first), "order": [model...],
  "win_rate": matrix in ``order`` (row beat column, ties in the denominator; None where never met),
  "predicted_win_rate": BT matrix, "n_battles", "bootstrap_unit", "converged", "bootstrap_converged_share",
  "scale": 400, "base": 10, "centre": 1000, "davidson": {"worths": [{"model", "worth", "rating"}], "nu",
  "log_likelihood", "converged"} or None (no ties)}``, or ``{"error": str}`` when the models cannot be rated.
- Rows comparing a model with itself are dropped before anything is counted.
- ``headline``: one sentence, e.g. "A preferred on 5 of 6 criteria (significant on 4)".
- ``methods``: {name: one-sentence description} for the page's "how we computed this".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from app.stats.agreement import agreement_by_criterion
from app.stats.frame import (
    check_votes,
    count_rows,
    criteria_order,
    in_list,
    model_order,
    orient_pairs,
    plain_json,
    same_value,
)
from app.stats.overall import DEFINITION, OVERALL, overall_votes
from app.stats.pairwise import add_decision, preference_table
from app.stats.position import position_bias
from app.stats.ratings import rate_models
from app.stats.significance import adjust_pvalues
from app.stats.themes import group_table, groups_differ

ALPHA = 0.05
CONFIDENCE = 0.95

METHODS = {
    "preference_rate": "Share of decided (non-tie) votes won by model A. A tie is an outcome of its own: it counts "
    "for neither model here, and the tie share (ties among all votes) is reported with its own interval.",
    "ci": "95% interval that accounts for votes clustering by prompt and by rater: two-way cluster-robust "
    "(Cameron, Gelbach & Miller 2011), inverted from the same test as the p-value, so a share is significant "
    "exactly when its interval excludes 50%. Labelled approximate with fewer than 20 prompts or raters.",
    "test": "Two-way cluster-robust score test of the preference share against 1/2, Student's t with "
    "min(prompts, raters) - 1 degrees of freedom.",
    "holm": "Holm adjustment across the criteria and the overall aggregate together (x model pairs) controls "
    "the family-wise error at 5%.",
    "bh": "Benjamini-Hochberg adjustment across theme x criterion cells controls the false discovery rate at 5%; "
    "each cell clusters on its own prompts and raters (few prompts per theme: approximate).",
    "independent": "For comparison only, never the verdict: the exact sign test and Wilson interval as if every "
    "vote were independent.",
    "groups_differ": "Whether the preference differs between groups (themes, detail levels), tested at prompt "
    "level (a theme is a property of the prompt).",
    "agreement": "Krippendorff's alpha on the winner in model space; units are pairs judged by 2+ evaluators.",
    "position_bias": "Does the clip on the left win more often than the same model on the right?",
    "power": "Votes for 80% power to detect a 60% preference share at the Bonferroni level, inflated by the "
    "design effect measured on this study's votes (intra-class correlation by prompt and by rater), ties added "
    "at the observed tie share; the best lever says whether more prompts, more raters or more votes per prompt "
    "and rater shrinks the interval fastest.",
    "overall": DEFINITION,
}


_RECORD_KEYS = (
    "wins_a", "wins_b", "ties", "n", "share_a", "share_b", "tie_rate", "pref_rate_a",
)
_INFERENCE_KEYS = (
    "p_value", "df", "approximate", "inference_unit", "n_prompts", "n_raters", "design_effect",
    "design_effect_prompt", "design_effect_rater",
)


def _records(table: pd.DataFrame, lead: list[str], adjusted: list[str]) -> list[dict[str, Any]]:
    out = []
    for row in table.to_dict("records"):
        rec = {k: row[k] for k in lead}
        rec["model_a"], rec["model_b"] = row["model_a"], row["model_b"]
        rec.update({k: row[k] for k in _RECORD_KEYS})
        rec["ci"] = [row["ci_lo"], row["ci_hi"]]
        rec["tie_ci"] = [row["tie_lo"], row["tie_hi"]]
        rec.update({k: row[k] for k in _INFERENCE_KEYS})
        rec.update({k: row[k] for k in adjusted})
        for k in ("significant", "leader", "winner", "votes_needed_80", "more_votes_80", "best_lever",
                  "icc_prompt", "icc_rater"):
            rec[k] = row[k]
        # Beside the verdict, never as it: the same figures if every vote were independent.
        rec["independent"] = {"wilson_ci": [row["wilson_lo"], row["wilson_hi"]], "p_value": row["p_independent"]}
        out.append(plain_json(rec))
    return out


# What the preference tables read of a row: counting rows that agree on these first loses nothing.
_TABLE_COLUMNS = ("criterion", "model_a", "model_b", "winner", "prompt", "evaluator", "theme", "detail")
_COUNT = "_rows"


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as counts of rows per combination of ``_TABLE_COLUMNS`` (millions of rows to thousands)."""
    return count_rows(frame, [c for c in _TABLE_COLUMNS if c in frame.columns], _COUNT)


def _pairwise(counts: pd.DataFrame, criteria: list[str]) -> pd.DataFrame:
    table = preference_table(counts, ["criterion", "model_a", "model_b"], weight=_COUNT)
    if table.empty:
        return table
    table["_order"] = table["criterion"].map({c: i for i, c in enumerate(criteria)})
    return table.sort_values(["_order", "model_a", "model_b"], kind="stable").drop(columns="_order").reset_index(
        drop=True)


def _decide(tables: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Holm across every record of the tables together: the criteria and the overall aggregate are one family,
    so the family-wise error over the whole table is at most ALPHA."""
    present = [t for t in tables if len(t)]
    if not present:
        return tables
    p = np.concatenate([t["p_value"].to_numpy(dtype=float) for t in present])
    adjusted = adjust_pvalues(p, "holm")
    family = int(np.count_nonzero(~np.isnan(p)))
    out, start = [], 0
    for t in tables:
        if not len(t):
            out.append(t)
            continue
        t = t.assign(p_holm=adjusted[start:start + len(t)])
        start += len(t)
        out.append(add_decision(t, "p_holm", alpha=ALPHA, family_size=family))
    return out


def _ratings(frame: pd.DataFrame, models: list[str], criteria: list[str], *, n_boot: int, seed: int) -> dict:
    """{criterion: Bradley-Terry block + "davidson"}; a criterion whose models cannot be rated gets {"error"}."""
    out = {}
    for criterion in criteria:
        part = frame[frame["criterion"] == criterion]
        try:
            block = rate_models(part, models=models, n_boot=n_boot, seed=seed)
        except ValueError as exc:
            block = {"error": str(exc)}
        out[criterion] = block
    return out


def _distinct(series: pd.Series) -> int:
    """``nunique()``; for a categorical from a bincount of its codes."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        return int(series.nunique())
    return int(np.count_nonzero(np.bincount(series.cat.codes.to_numpy().astype(np.int64) + 1)[1:]))


def _headline(records: list[dict], models: list[str], ratings: dict | None) -> str:
    if not records:
        return "No votes yet."
    if len(models) > 2:
        return _ratings_headline(records, ratings or {})
    return _pair_headline(records)


def _ratings_headline(records: list[dict[str, Any]], ratings: dict[str, Any]) -> str:
    """Three or more models: the Bradley-Terry ranking, overall when there is one, else counted by criterion
    (never by criterion x model pair, which would count one criterion several times)."""
    if "ratings" in ratings.get(OVERALL, {}):
        rows = ratings[OVERALL]["ratings"]
        top = rows[0]
        shared = [r["model"] for r in rows[1:] if r["rank"] == 1]
        tail = (
            f"; its 95% interval overlaps {', '.join(shared)}, so first place is not settled"
            if shared
            else "; its 95% interval is clear of every other model's"
        )
        never_lost = (ratings[OVERALL].get("separation") or {}).get("top") or []
        if ratings[OVERALL].get("regularised") and never_lost:
            tail += (f" ({', '.join(never_lost)} never lost, so no finite maximum-likelihood rating exists: "
                     "ratings are regularised with half a virtual win each way per pair)")
        return f"{top['model']} has the highest overall Bradley-Terry rating ({top['rating']:.0f}){tail}."
    criteria = list(dict.fromkeys(r["criterion"] for r in records))
    firsts: dict[str, list[bool]] = {}
    for criterion in criteria:
        rows = ratings.get(criterion, {}).get("ratings")
        if rows:
            settled = not any(r["rank"] == 1 for r in rows[1:])
            firsts.setdefault(rows[0]["model"], []).append(settled)
    if not firsts:
        return f"No model could be rated on any of the {len(criteria)} criteria."
    ranked = sorted(firsts.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1]), kv[0]))
    unit = "criteria" if len(criteria) != 1 else "criterion"
    parts = [f"{ranked[0][0]} rated highest on {len(ranked[0][1])} of {len(criteria)} {unit} "
             f"(clear of every other model on {sum(ranked[0][1])})"]
    parts += [f"{m} on {len(v)} (clear on {sum(v)})" for m, v in ranked[1:]]
    return "; ".join(parts) + "."


def _pair_headline(records: list[dict[str, Any]]) -> str:
    n_crit = len(records)
    leads: dict[str, list[bool]] = {}
    for rec in records:
        if rec["leader"] is not None:
            leads.setdefault(rec["leader"], []).append(bool(rec["significant"]))
    if not leads:
        return f"No model is preferred on any of the {n_crit} criteria."
    ranked = sorted(leads.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1]), kv[0]))
    unit = "criteria" if n_crit != 1 else "criterion"
    parts = [f"{ranked[0][0]} preferred on {len(ranked[0][1])} of {n_crit} {unit} (significant on {sum(ranked[0][1])})"]
    parts += [f"{m} on {len(s)} (significant on {sum(s)})" for m, s in ranked[1:]]
    return "; ".join(parts) + "."


def _prepare(votes: pd.DataFrame, criteria: list[str] | None,
             include_flagged: bool) -> tuple[pd.DataFrame, list[str], list[str], int]:
    """The checked frame, flagged evaluators left out unless asked for, oriented by model order.

    Returns (frame, criteria present, models, votes excluded as flagged)."""
    frame = check_votes(votes)
    excluded = 0
    if "flagged" in frame.columns and not include_flagged:
        flagged = frame["flagged"].fillna(False).astype(bool).to_numpy()
        excluded = int(frame.loc[flagged, "vote_id"].nunique()) if "vote_id" in frame.columns else int(flagged.sum())
        frame = frame[~flagged]
    crits = criteria_order(frame, criteria)
    # A model compared with itself says nothing about preference (one such battle is in the GenAI-Arena log).
    keep = in_list(frame["criterion"], crits) & ~same_value(frame["model_a"], frame["model_b"])
    frame = frame if keep.all() else frame[keep]  # no copy of every column when nothing is dropped
    frame = frame.assign(criterion=frame["criterion"].cat.set_categories([*crits, OVERALL]))
    models = model_order(frame) if len(frame) else []
    return orient_pairs(frame, models), crits, models, excluded


def _group_results(counts: pd.DataFrame, frame: pd.DataFrame, *, n_boot: int,
                   seed: int) -> dict[str, tuple[list[Any], Any]]:
    """Per theme and per detail level: the cells' records and whether the groups differ."""
    groups: dict[str, tuple[list[Any], Any]] = {}
    for group in ("theme", "detail"):
        if group in frame.columns and len(frame):
            gt = group_table(counts, group, n_boot=n_boot, seed=seed, alpha=ALPHA, weight=_COUNT)
            differ = groups_differ(counts, group, weight=_COUNT, seed=seed)  # at prompt level: a permutation test
            groups[group] = (_records(gt, [group, "criterion"], ["p_bh"]), plain_json(differ))
        else:
            groups[group] = ([], [])
    return groups


def _agreement(frame: pd.DataFrame, overall: pd.DataFrame | None, crits: list[str]) -> dict[str, dict[str, Any]]:
    if not len(frame):
        return {}
    # Per frame rather than on the two concatenated: the criteria are disjoint and units keep their order,
    # so the figures are the same without copying every row once more.
    agreement = agreement_by_criterion(frame, crits)
    if overall is not None:
        agreement.update(agreement_by_criterion(overall, [OVERALL]))
    return agreement


@dataclass(frozen=True)
class _Verdicts:
    """The criteria and overall records (one Holm family) and what the rest of the results reuse of them."""

    counts: pd.DataFrame  # the frame's rows counted (``_counts``)
    overall_votes: pd.DataFrame | None  # one overall decision per vote (None without vote ids)
    overall_counts: pd.DataFrame | None  # those counted (None when there are none)
    criteria: list[dict[str, Any]]
    overall: list[dict[str, Any]]


def _verdicts(frame: pd.DataFrame, crits: list[str]) -> _Verdicts:
    counts = _counts(frame)
    table = _pairwise(counts, crits)
    overall = overall_votes(frame, crits) if "vote_id" in frame.columns else None
    overall_counts, ov = None, pd.DataFrame()
    if overall is not None and len(overall):
        overall_counts = _counts(overall)
        ov = _pairwise(overall_counts, [OVERALL])
    table, ov = _decide([table, ov])
    return _Verdicts(counts, overall, overall_counts,
                     _records(table, ["criterion"], ["p_holm"]) if len(table) else [],
                     _records(ov, ["criterion"], ["p_holm"]) if len(ov) else [])


def verdict_records(votes: pd.DataFrame, *, criteria: list[str] | None = None,
                    include_flagged: bool = False) -> list[dict[str, Any]]:
    """Only what decides the verdicts: the criteria and overall records of ``compute_results`` (same tests, same
    Holm family), without the themes, agreement, ratings and position figures. For sensitivity checks that
    recompute the verdicts many times (does one address decide a result?)."""
    frame, crits, _models, _excluded = _prepare(votes, criteria, include_flagged)
    v = _verdicts(frame, crits)
    return v.criteria + v.overall


def compute_results(
    votes: pd.DataFrame,
    *,
    criteria: list[str] | None = None,
    include_flagged: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """All results of a vote frame (see the module docstring for the keys)."""
    frame, crits, models, excluded = _prepare(votes, criteria, include_flagged)

    v = _verdicts(frame, crits)
    overall, criteria_records = v.overall_votes, v.criteria
    counts = v.counts if v.overall_counts is None else pd.concat([v.counts, v.overall_counts], ignore_index=True)

    groups = _group_results(counts, frame, n_boot=n_boot, seed=seed)
    agreement = _agreement(frame, overall, crits)

    ratings = None
    if len(models) > 2:
        with_overall = pd.concat([frame, overall]) if overall is not None else frame
        agreement_crits = crits + ([OVERALL] if overall is not None else [])
        ratings = _ratings(with_overall, models, agreement_crits, n_boot=n_boot, seed=seed)

    # overall has one row per distinct vote_id of the frame (it is built from the same rows)
    n_votes = len(overall) if overall is not None else (len(frame) // max(len(crits), 1))
    return plain_json(
        {
            "models": models,
            "criteria_keys": crits,
            "n_votes": n_votes,
            "n_rows": len(frame),
            "n_evaluators": _distinct(frame["evaluator"]) if "evaluator" in frame.columns else None,
            "n_prompts": _distinct(frame["prompt"]) if "prompt" in frame.columns else None,
            "excluded_flagged_votes": excluded,
            "include_flagged": include_flagged,
            "alpha": ALPHA,
            "confidence": CONFIDENCE,
            "n_boot": n_boot,
            "seed": seed,
            "criteria": criteria_records,
            "overall": v.overall,
            "overall_definition": DEFINITION,
            "themes": groups["theme"][0],
            "themes_differ": groups["theme"][1],
            "detail_levels": groups["detail"][0],
            "detail_levels_differ": groups["detail"][1],
            "agreement": agreement,
            "position_bias": position_bias(frame, overall, crits) if len(frame) else None,
            "ratings": ratings,
            "headline": _headline(criteria_records, models, ratings),
            "methods": METHODS,
        }
    )
