"""The "overall preferred" aggregate over the criteria.

Definition: for each vote (one evaluator judging one pair), the model that wins more of the criteria on
which the evaluator chose a side is that vote's overall winner; when both models win equally many
(including when every criterion was judged indistinguishable) the vote is an overall tie. The resulting
one-row-per-vote frame goes through the same statistics as a single criterion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OVERALL = "overall"
DEFINITION = (
    "Overall preferred: for each vote, the model that won more of the criteria on which the evaluator picked a "
    "side; a vote where both models won equally many criteria (or all were judged indistinguishable) is a tie."
)


def overall_votes(votes: pd.DataFrame, criteria: list[str] | None = None) -> pd.DataFrame:
    """One row per vote_id with criterion 'overall' and the majority winner over ``criteria`` (all if None).

    Other columns are taken from the vote's first row; ``side`` is recomputed from ``left_model``.
    """
    if "vote_id" not in votes.columns:
        raise ValueError("the overall aggregate needs a vote_id column to group a vote's criteria")
    frame = votes if criteria is None else votes[votes["criterion"].isin(criteria)]
    if frame.empty:
        return frame.iloc[0:0].assign(criterion=pd.Series(dtype=object))
    codes, uniques = pd.factorize(frame["vote_id"], sort=True)
    w = frame["winner"].to_numpy()
    a = np.bincount(codes, weights=(w == "model_a"), minlength=len(uniques))
    b = np.bincount(codes, weights=(w == "model_b"), minlength=len(uniques))
    first = pd.Series(np.arange(len(frame))).groupby(codes).first().to_numpy()
    out = frame.iloc[first].reset_index(drop=True).copy()
    out["criterion"] = OVERALL
    out["winner"] = np.where(a > b, "model_a", np.where(b > a, "model_b", "tie"))
    out["criteria_won_a"] = a.astype(int)
    out["criteria_won_b"] = b.astype(int)
    if "left_model" in out.columns:
        won = np.where(out["winner"] == "model_a", out["model_a"], out["model_b"])
        out["side"] = np.where(out["winner"] == "tie", "tie", np.where(won == out["left_model"], "left", "right"))
    return out
