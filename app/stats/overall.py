"""The "overall preferred" aggregate over the criteria.

Definition: for each vote (one evaluator judging one pair), the model that wins more of the criteria on
which the evaluator chose a side is that vote's overall winner; when both models win equally many
(including when every criterion was judged indistinguishable) the vote is an overall tie. The resulting
one-row-per-vote frame goes through the same statistics as a single criterion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.stats.frame import SIDES, WINNERS, codes, in_list, same_value

OVERALL = "overall"
DEFINITION = (
    "Overall preferred: for each vote, the model that won more of the criteria on which the evaluator picked a "
    "side; a vote where both models won equally many criteria (or all were judged indistinguishable) is a tie. "
    "It weighs every criterion alike (motion amplitude as much as the rater's own overall-quality answer, which "
    "it contradicts in some votes), so it summarises the criteria rather than replacing the overall-quality "
    "question; it is tested in the same Holm family as the criteria, so adding it does not raise the chance of a "
    "false 'significant' anywhere in the table."
)


def _votes_of_rows(vote_id: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(vote number of every row, in vote_id order; position of each vote's first row).

    Frames from the database come sorted by vote_id: then the numbers follow from where the id changes, with
    no hashing of millions of ids (the same numbers ``pd.factorize(sort=True)`` gives).
    """
    ids = vote_id.to_numpy()
    if ids.dtype.kind in "iu" and len(ids) and bool((ids[1:] >= ids[:-1]).all()):
        new = np.empty(len(ids), dtype=bool)
        new[0] = True
        np.not_equal(ids[1:], ids[:-1], out=new[1:])
        return np.cumsum(new) - 1, np.flatnonzero(new)
    vote, uniques = pd.factorize(vote_id, sort=True)
    first = np.full(len(uniques), len(ids))
    np.minimum.at(first, vote, np.arange(len(ids)))
    return vote, first


def overall_votes(votes: pd.DataFrame, criteria: list[str] | None = None) -> pd.DataFrame:
    """One row per vote_id with criterion 'overall' and the majority winner over ``criteria`` (all if None).

    Other columns are taken from the vote's first row; ``side`` is recomputed from ``left_model``.
    """
    if "vote_id" not in votes.columns:
        raise ValueError("the overall aggregate needs a vote_id column to group a vote's criteria")
    frame = votes
    if criteria is not None:
        keep = in_list(votes["criterion"], criteria)
        frame = votes if keep.all() else votes[keep]  # no copy of every column when nothing is dropped
    if frame.empty:
        return frame.iloc[0:0].assign(criterion=pd.Series(dtype=object))
    vote, first = _votes_of_rows(frame["vote_id"])
    w = codes(frame["winner"], WINNERS)
    won = np.bincount(vote * 4 + (w + 1), minlength=len(first) * 4).reshape(-1, 4)  # slot 0: not a winner
    a, b = won[:, 1], won[:, 2]
    out = frame.iloc[first].reset_index(drop=True).copy()
    crit = frame["criterion"]
    if isinstance(crit.dtype, pd.CategoricalDtype) and OVERALL in crit.cat.categories:
        code = crit.cat.categories.get_loc(OVERALL)
        out["criterion"] = pd.Categorical.from_codes(np.full(len(out), code), categories=crit.cat.categories)
    else:
        out["criterion"] = OVERALL
    winner = np.where(a > b, 0, np.where(b > a, 1, 2))
    out["winner"] = pd.Categorical.from_codes(winner, categories=WINNERS)
    out["criteria_won_a"] = a.astype(int)
    out["criteria_won_b"] = b.astype(int)
    if "left_model" in out.columns:
        a_left = same_value(out["left_model"], out["model_a"])
        side = np.where(winner == 2, 2, np.where((winner == 0) == a_left, 0, 1))
        out["side"] = pd.Categorical.from_codes(side, categories=SIDES)
    return out
