"""Per-theme and per-detail-level figures, and whether the groups differ at all.

Cells are group x criterion (x model pair); their sign-test p-values are Benjamini-Hochberg adjusted across
all cells of the table (the "overall" aggregate, when present, forms its own family). The bootstrap resamples
prompts within each group, since the number of prompts per theme is fixed by the prompt suite.

"Do themes differ at all" is Pearson's chi-square test of independence on the group x (wins of model A,
wins of model B) table of decided votes (``scipy.stats.chi2_contingency``; no continuity correction, which
SciPy applies only to 2x2 tables). It treats votes as independent, so with strong prompt clustering it is
optimistic; ``min_expected`` is reported so a reader can see when the chi-square approximation is shaky (< 5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from app.stats.overall import OVERALL
from app.stats.pairwise import add_decision, preference_table
from app.stats.significance import adjust_pvalues


def group_table(
    votes: pd.DataFrame,
    group: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    weight: str | None = None,
) -> pd.DataFrame:
    """Preference figures per ``group`` (e.g. 'theme', 'detail') x criterion x pair, with ``p_bh``.

    ``weight``: as in ``preference_table`` (rows standing for several votes).
    """
    # Each cell's interval and test cluster on its own prompts and raters (few prompts per theme: approximate).
    table = preference_table(votes, [group, "criterion", "model_a", "model_b"], weight=weight)
    if table.empty:
        return table.assign(p_bh=pd.Series(dtype=float))
    table["p_bh"] = np.nan
    parts = []
    for is_overall in (False, True):
        mask = (table["criterion"] == OVERALL) == is_overall
        if not mask.any():
            continue
        part = table[mask].copy()
        part["p_bh"] = adjust_pvalues(part["p_value"].to_numpy(), "bh")
        family = int(part["p_value"].notna().sum())
        parts.append(add_decision(part, "p_bh", alpha=alpha, family_size=family, power=False))
    return pd.concat(parts).sort_index()


def groups_differ(table: pd.DataFrame, group: str) -> list[dict]:
    """Chi-square test of independence of group and preference, per criterion and model pair."""
    out = []
    for (criterion, model_a, model_b), cell in table.groupby(["criterion", "model_a", "model_b"], sort=False):
        counts = cell[["wins_a", "wins_b"]].to_numpy(dtype=float)
        counts = counts[counts.sum(axis=1) > 0]
        record = {"criterion": criterion, "model_a": model_a, "model_b": model_b, "n_groups": int(len(counts)),
                  "chi2": None, "dof": None, "p_value": None, "min_expected": None,
                  "test": f"chi-square test of independence, {group} x (wins A, wins B)"}
        if len(counts) >= 2 and (counts.sum(axis=0) > 0).all():
            res = chi2_contingency(counts, correction=False)
            record.update(chi2=float(res.statistic), dof=int(res.dof), p_value=float(res.pvalue),
                          min_expected=float(res.expected_freq.min()))
        out.append(record)
    return out
