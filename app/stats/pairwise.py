"""Per-cell preference figures: counts, shares, and the clustered interval and test behind every verdict.

A cell is one combination of the ``by`` columns (always including the model pair). Counting is done once on
integer codes (``np.bincount``). The preference share of model A among decided votes and the tie share among
all votes each get a two-way (prompt x rater) cluster-robust interval and test (``app.stats.clustered``); the
sign test and Wilson interval that treat votes as independent stay beside them, labelled, never as the verdict.

How ties enter, stated once: a tie is an outcome of its own. The preference share is A's wins among decided
votes (a tie counts for neither model), tested against 1/2; the tie share is ties among all votes, with its
own interval. Bradley-Terry and the win-rate matrix use decided votes too; Davidson models the tie.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.stats.clustered import Clustering, share_inference
from app.stats.frame import WINNERS, codes, group_codes
from app.stats.power import plan_votes
from app.stats.proportions import wilson_interval
from app.stats.significance import sign_tests


def _inference_unit(clustering: Clustering) -> str:
    dims = clustering.dimensions
    return " x ".join(dims) if dims else "vote"


def preference_table(
    votes: pd.DataFrame,
    by: list[str],
    *,
    confidence: float = 0.95,
    weight: str | None = None,
    prompt: str | None = "prompt",
    rater: str | None = "evaluator",
) -> pd.DataFrame:
    """One row per cell of ``by`` with wins/ties/shares, the clustered interval and test, and the
    independent-votes figures beside them.

    ``prompt`` / ``rater``: the columns votes cluster on (absent or None: not clustered on that dimension).
    ``weight``: a column saying how many votes each row stands for (``frame.count_rows`` over columns that
    include the prompt and the rater); the figures are those of the repeated rows.
    """
    by = list(by)
    if votes.empty:
        return pd.DataFrame(columns=[*by, "wins_a", "wins_b", "ties", "n"])
    cells, keys = group_codes(votes, by)
    n_cells = len(keys)
    w = codes(votes["winner"], WINNERS)
    is_a, is_b, is_t = (w == 0).astype(float), (w == 1).astype(float), (w == 2).astype(float)
    rows = votes[weight].to_numpy(dtype=float) if weight is not None else np.ones(len(votes))
    wins_a = np.bincount(cells, weights=is_a * rows, minlength=n_cells).astype(np.int64)
    wins_b = np.bincount(cells, weights=is_b * rows, minlength=n_cells).astype(np.int64)
    ties = np.bincount(cells, weights=is_t * rows, minlength=n_cells).astype(np.int64)
    n = wins_a + wins_b + ties
    decided = wins_a + wins_b

    out = keys.copy()
    out["wins_a"], out["wins_b"], out["ties"], out["n"] = wins_a, wins_b, ties, n
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share_a"] = wins_a / np.where(n > 0, n, np.nan)
        out["share_b"] = wins_b / np.where(n > 0, n, np.nan)
        out["tie_rate"] = ties / np.where(n > 0, n, np.nan)
        out["pref_rate_a"] = wins_a / np.where(decided > 0, decided, np.nan)

    clustering = Clustering.of(votes, prompt=prompt, rater=rater)
    pref = share_inference(is_a, is_a + is_b, cells, n_cells, clustering, weight=rows, confidence=confidence)
    tie = share_inference(is_t, np.ones(len(votes)), cells, n_cells, clustering, weight=rows,
                          confidence=confidence)
    out["ci_lo"], out["ci_hi"], out["p_value"] = pref.lo, pref.hi, pref.p_value
    out["df"], out["approximate"] = pref.df, pref.approximate
    out["n_prompts"], out["n_raters"] = pref.n_prompts, pref.n_raters
    out["design_effect"] = pref.design_effect
    out["design_effect_prompt"], out["design_effect_rater"] = pref.design_effect_prompt, pref.design_effect_rater
    out["tie_lo"], out["tie_hi"] = tie.lo, tie.hi
    out["inference_unit"] = _inference_unit(clustering)
    # Beside the verdict, labelled: what the figures would be if every vote were independent.
    out["wilson_lo"], out["wilson_hi"] = wilson_interval(wins_a, decided, confidence=confidence)
    out["p_independent"] = sign_tests(wins_a, wins_b)
    return out


def add_decision(
    table: pd.DataFrame, adjusted_col: str, *, alpha: float = 0.05, family_size: int, power: bool = True
) -> pd.DataFrame:
    """Add 'significant', 'leader', 'winner' and the planned vote counts given an adjusted p-value column.

    With ``power=False`` (theme and detail cells, where nobody plans sample sizes) the vote counts are None.
    Votes are planned at the Bonferroni level alpha / family_size: Holm and BH reject whatever Bonferroni
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
    plans = [
        plan_votes(n=int(row.n), decided=int(row.wins_a + row.wins_b), ties=int(row.ties),
                   n_prompts=int(row.n_prompts), n_raters=int(row.n_raters),
                   deff_prompt=float(row.design_effect_prompt), deff_rater=float(row.design_effect_rater),
                   alpha=level) if power else None
        for row in out.itertuples()
    ]
    # object dtype keeps these ints (a float column would turn 477 into 477.0 in the JSON)
    out["votes_needed_80"] = pd.Series([p.total if p else None for p in plans], index=out.index, dtype=object)
    out["more_votes_80"] = pd.Series(
        [None if (s or p is None or p.total is None) else max(0, p.total - int(nv))
         for s, p, nv in zip(sig, plans, out["n"], strict=True)], index=out.index, dtype=object)
    out["best_lever"] = pd.Series([p.best_lever if p else None for p in plans], index=out.index, dtype=object)
    out["icc_prompt"] = pd.Series([p.icc_prompt if p else None for p in plans], index=out.index, dtype=object)
    out["icc_rater"] = pd.Series([p.icc_rater if p else None for p in plans], index=out.index, dtype=object)
    return out
