"""Per-cell preference figures: counts, shares, Wilson and prompt-bootstrap intervals, sign test.

A cell is one combination of the ``by`` columns (always including the model pair). Counting is done once on
integer codes (``np.bincount``), so a million rows cost tens of milliseconds; the bootstrap then works on
per-prompt counts (see ``bootstrap``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.stats.bootstrap import cluster_bootstrap_rate, iid_bootstrap_rate
from app.stats.frame import WINNERS, codes, column_codes, group_codes
from app.stats.power import votes_needed
from app.stats.proportions import wilson_interval
from app.stats.significance import sign_tests


def preference_table(
    votes: pd.DataFrame,
    by: list[str],
    *,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    cluster: str | None = "prompt",
    stratify: str | None = None,
    confidence: float = 0.95,
    weight: str | None = None,
) -> pd.DataFrame:
    """One row per cell of ``by`` with wins/ties/shares, intervals and the unadjusted sign-test p-value.

    ``cluster``: the column whose values are resampled by the bootstrap (prompts); None or absent means votes
    are resampled independently. ``stratify``: resample clusters within the strata of this column (used for
    per-theme cells, where the number of prompts per theme is fixed by design). ``weight``: a column saying
    how many votes each row stands for (``frame.count_rows``); the figures are those of the repeated rows.
    """
    by = list(by)
    if votes.empty:
        return pd.DataFrame(columns=[*by, "wins_a", "wins_b", "ties", "n"])
    cells, keys = group_codes(votes, by)
    n_cells = len(keys)
    w = codes(votes["winner"], WINNERS)
    is_a, is_b, is_t = (w == 0), (w == 1), (w == 2)
    if weight is not None:
        rows = votes[weight].to_numpy(dtype=float)
        is_a, is_b, is_t = is_a * rows, is_b * rows, is_t * rows
    wins_a = np.bincount(cells, weights=is_a, minlength=n_cells).astype(np.int64)
    wins_b = np.bincount(cells, weights=is_b, minlength=n_cells).astype(np.int64)
    ties = np.bincount(cells, weights=is_t, minlength=n_cells).astype(np.int64)
    n = wins_a + wins_b + ties
    decided = wins_a + wins_b

    out = keys.copy()
    out["wins_a"], out["wins_b"], out["ties"], out["n"] = wins_a, wins_b, ties, n
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share_a"] = wins_a / np.where(n > 0, n, np.nan)
        out["share_b"] = wins_b / np.where(n > 0, n, np.nan)
        out["tie_rate"] = ties / np.where(n > 0, n, np.nan)
        out["pref_rate_a"] = wins_a / np.where(decided > 0, decided, np.nan)
    out["wilson_lo"], out["wilson_hi"] = wilson_interval(wins_a, decided, confidence=confidence)

    if cluster and cluster in votes.columns:
        cl_codes, cl_uniques = column_codes(votes[cluster])
        used = np.flatnonzero(np.bincount(cl_codes + 1, minlength=len(cl_uniques) + 1)[1:])
        # keep only clusters that occur here (a theme's table must not resample other themes' prompts)
        remap = np.full(len(cl_uniques) + 1, used.size)  # rows without a prompt share one extra cluster
        remap[used + 1] = np.arange(used.size)
        cl_codes = remap[cl_codes + 1]
        n_cl = used.size + int((cl_codes == used.size).any())
        flat = cl_codes.astype(np.int64) * n_cells + cells
        s = np.bincount(flat, weights=is_a, minlength=n_cl * n_cells).reshape(n_cl, n_cells)
        t = np.bincount(flat, weights=is_a + is_b, minlength=n_cl * n_cells).reshape(n_cl, n_cells)
        strata = None
        if stratify and stratify in votes.columns:
            strata = np.zeros(n_cl, dtype=np.int64)
            strata[cl_codes] = column_codes(votes[stratify])[0]  # a prompt has one theme/detail level
        lo, hi = cluster_bootstrap_rate(s, t, n_boot=n_boot, seed=seed, strata=strata, confidence=confidence)
        out["bootstrap_unit"] = cluster
    else:
        lo, hi = iid_bootstrap_rate(wins_a, wins_b, ties, n_boot=n_boot, seed=seed, confidence=confidence)
        out["bootstrap_unit"] = "vote"
    out["boot_lo"], out["boot_hi"] = lo, hi
    out["p_value"] = sign_tests(wins_a, wins_b)
    return out


def add_decision(
    table: pd.DataFrame, adjusted_col: str, *, alpha: float = 0.05, family_size: int, power: bool = True
) -> pd.DataFrame:
    """Add 'significant', 'leader', 'winner' and the 80%-power vote counts given an adjusted p-value column.

    With ``power=False`` (theme and detail cells, where nobody plans sample sizes) the vote counts are None.

    Power is computed at the Bonferroni level alpha / family_size: Holm and BH reject whatever Bonferroni
    rejects, so that many votes suffice for the adjusted test too (it may be more than strictly needed).
    """
    out = table.copy()
    sig = out[adjusted_col].to_numpy(dtype=float) < alpha
    out["significant"] = sig
    none = np.array(None, dtype=object)  # "no leader": an object array, as np.where(..., None) gives
    lead = np.where(out["wins_a"] > out["wins_b"], out["model_a"], np.where(out["wins_b"] > out["wins_a"],
                                                                            out["model_b"], none))
    out["leader"] = lead
    out["winner"] = np.where(sig, lead, none)
    level = alpha / max(family_size, 1)
    needed = [
        votes_needed(int(a), int(b), int(t), alpha=level, power=0.8) if power else None
        for a, b, t in zip(out["wins_a"], out["wins_b"], out["ties"], strict=True)
    ]
    more = [None if (s or v is None) else max(0, v - int(n)) for s, v, n in zip(sig, needed, out["n"], strict=True)]
    # object dtype keeps these ints (a float column would turn 477 into 477.0 in the JSON)
    out["votes_needed_80"] = pd.Series(needed, index=out.index, dtype=object)
    out["more_votes_80"] = pd.Series(more, index=out.index, dtype=object)
    return out
