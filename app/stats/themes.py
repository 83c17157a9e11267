"""Per-theme and per-detail-level figures, and whether the groups differ at all.

Cells are group x criterion (x model pair); their p-values are Benjamini-Hochberg adjusted across all cells
of the table (the "overall" aggregate, when present, forms its own family).

"Do themes differ at all" (``groups_differ``) is a permutation test at prompt level. A theme (or detail
level) is a property of the prompt, so the prompt is the unit the question is about: votes on one prompt
share that prompt's pull towards one model, and a test that treats votes as independent (Pearson's
chi-square on pooled votes, what this module did before) said "differ" 18% / 47% of the time at alpha = 5%
with no theme effect and prompt effects of sd 0.3 / 0.5 on the logit scale. Here each prompt keeps all its
votes and the theme labels are permuted across the prompts of the cell (Fisher 1935; Good 2005, Permutation,
Parametric and Bootstrap Tests of Hypotheses, ch. 3 and 5): under "no theme effect" the prompts are
exchangeable between themes whatever their own effects and their raters, so the test is exact in finite
samples. The statistic is Pearson's chi-square of the group x (wins A, wins B) table of decided votes, which
is reported (``chi2``, ``dof``) only as a description; the p-value is ``(1 + #{permuted >= observed}) /
(1 + n_permutations)`` (Phipson & Smyth 2010). Without a prompt column nothing is known about clustering and
the classic chi-square test on votes is returned, labelled as treating votes as independent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from app.stats.frame import WINNERS, codes, column_codes, group_codes
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


N_PERMUTATIONS = 2000
_BLOCK = 2_000_000  # permutations x prompts held at once


def _chi2(wins: np.ndarray, decided: np.ndarray, share: float) -> np.ndarray:
    """Pearson's chi-square of a groups x (wins A, wins B) table, per row of ``wins``/``decided`` (rows x groups)."""
    return ((wins - share * decided) ** 2 / decided).sum(axis=-1) / (share * (1 - share))


def _permutation_p(wins: np.ndarray, decided: np.ndarray, labels: np.ndarray, n_groups: int, n_perm: int,
                   rng: np.random.Generator) -> tuple[float, float]:
    """(observed chi-square, permutation p-value) permuting the units' group ``labels`` (units: prompts)."""
    share = float(wins.sum() / decided.sum())
    observed = float(_chi2(np.bincount(labels, weights=wins, minlength=n_groups),
                           np.bincount(labels, weights=decided, minlength=n_groups), share))
    at_least = 0
    done = 0
    block = max(1, _BLOCK // max(labels.size, 1))
    tolerance = 1e-9 * max(1.0, observed)  # equal statistics computed in another order count as equal
    while done < n_perm:
        b = min(block, n_perm - done)
        perm = rng.permuted(np.tile(labels, (b, 1)), axis=1)
        flat = (np.arange(b)[:, None] * n_groups + perm).ravel()
        w = np.bincount(flat, weights=np.tile(wins, b), minlength=b * n_groups).reshape(b, n_groups)
        d = np.bincount(flat, weights=np.tile(decided, b), minlength=b * n_groups).reshape(b, n_groups)
        at_least += int((_chi2(w, d, share) >= observed - tolerance).sum())
        done += b
    return observed, (1 + at_least) / (1 + n_perm)


def _units(votes: pd.DataFrame, group: str, prompt: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(unit of every row, group code of every unit, unit name): prompts when known, else votes."""
    g_codes = column_codes(votes[group])[0]
    if prompt is not None and prompt in votes.columns:
        unit, _ = group_codes(votes, [prompt, group])  # a prompt has one group; a unit never straddles two
        unit = unit.astype(np.int64)
        unit_group = np.full(int(unit.max(initial=-1)) + 1, -1, dtype=np.int64)
        unit_group[unit] = g_codes
        return unit, unit_group, "prompt"
    return np.arange(len(votes), dtype=np.int64), g_codes, "vote"


def groups_differ(
    votes: pd.DataFrame,
    group: str,
    *,
    n_perm: int = N_PERMUTATIONS,
    seed: int = 0,
    weight: str | None = None,
    prompt: str | None = "prompt",
) -> list[dict]:
    """Whether the preference differs between the ``group``s (themes, detail levels), per criterion and pair.

    ``votes``: vote rows (``weight``: a column saying how many identical votes a row stands for, as
    ``frame.count_rows`` gives). Records: criterion, model_a, model_b, n_groups (groups with decided votes),
    n_units (prompts with decided votes), chi2 and dof (descriptive), p_value (permutation test at prompt
    level; None when untestable: one group, or every decided vote won by one model), n_permutations, unit
    ('prompt', or 'vote' without a prompt column), test (the method in words).
    """
    if "winner" not in votes.columns:
        # A per-group table (counts, no prompts): the prompt-level test needs the votes themselves.
        return [{"criterion": r["criterion"], "model_a": r["model_a"], "model_b": r["model_b"], "n_groups": None,
                 "n_units": None, "chi2": None, "dof": None, "p_value": None, "n_permutations": 0, "unit": None,
                 "test": "not tested: pass the vote rows (the test is at prompt level)"}
                for r in votes[["criterion", "model_a", "model_b"]].drop_duplicates().to_dict("records")]
    if votes.empty:
        return []
    cells, keys = group_codes(votes, ["criterion", "model_a", "model_b"])
    w = codes(votes["winner"], WINNERS)
    rows = votes[weight].to_numpy(dtype=float) if weight is not None else np.ones(len(votes))
    unit, unit_group, unit_name = _units(votes, group, prompt)
    keep = (w >= 0) & (w < 2) & (unit_group[unit] >= 0)  # decided votes of rows with a group
    n_units = int(unit.max(initial=-1)) + 1
    flat, inverse = np.unique(cells[keep].astype(np.int64) * n_units + unit[keep], return_inverse=True)
    wins = np.bincount(inverse, weights=((w[keep] == 0) * rows[keep]))
    decided = np.bincount(inverse, weights=rows[keep])
    cell_of, unit_of = flat // n_units, flat % n_units
    bounds = np.searchsorted(cell_of, np.arange(len(keys) + 1))
    if unit_name == "prompt":
        test = (f"permutation test at prompt level: {group} labels permuted across prompts ({n_perm} "
                f"permutations); statistic Pearson's chi-square of {group} x (wins A, wins B)")
    else:
        test = (f"chi-square test of independence, {group} x (wins A, wins B); no prompt column, so votes are "
                "treated as independent")
    out = []
    for k, key in enumerate(keys.to_dict("records")):
        lo, hi = bounds[k], bounds[k + 1]
        labels_raw = unit_group[unit_of[lo:hi]]
        present, labels = np.unique(labels_raw, return_inverse=True)
        cell_wins, cell_decided = wins[lo:hi], decided[lo:hi]
        record = {"criterion": key["criterion"], "model_a": key["model_a"], "model_b": key["model_b"],
                  "n_groups": int(present.size), "n_units": int(hi - lo) if unit_name == "prompt" else None,
                  "chi2": None, "dof": None, "p_value": None, "n_permutations": 0, "unit": unit_name,
                  "test": test}
        total = cell_wins.sum()
        if present.size >= 2 and 0 < total < cell_decided.sum():
            g = present.size
            if unit_name == "prompt":
                rng = np.random.default_rng([seed, k])  # a cell's p-value does not depend on the other cells
                chi2, p = _permutation_p(cell_wins, cell_decided, labels, g, n_perm, rng)
                record.update(n_permutations=n_perm)
            else:
                table = np.stack([np.bincount(labels, weights=cell_wins, minlength=g),
                                  np.bincount(labels, weights=cell_decided - cell_wins, minlength=g)], axis=1)
                res = chi2_contingency(table, correction=False)
                chi2, p = float(res.statistic), float(res.pvalue)
            record.update(chi2=chi2, dof=g - 1, p_value=p)
        out.append(record)
    return out
