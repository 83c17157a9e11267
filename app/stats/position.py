"""Position bias: does the clip shown on the left win more often than chance?

Among decided votes, the share won by the left clip, with a Wilson interval and an exact two-sided binomial
test against 1/2. The headline figure uses one decision per vote (the "overall" winner), because the
criteria of one vote are not independent; per-criterion figures are given beside it. ``a_left_share`` (how
often model_a was on the left) checks the randomisation: if it is far from 1/2, a model effect can look like
a position effect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.stats.proportions import proportion_ci
from app.stats.significance import sign_test


def _figures(frame: pd.DataFrame) -> dict:
    side = frame["side"].to_numpy()
    left = int(np.count_nonzero(side == "left"))
    right = int(np.count_nonzero(side == "right"))
    n = left + right
    lo, hi = proportion_ci(left, n) if n else (None, None)
    a_left = None
    if "left_model" in frame.columns and len(frame):
        a_left = float(np.mean(frame["left_model"].to_numpy() == frame["model_a"].to_numpy()))
    return {
        "left_wins": left,
        "right_wins": right,
        "n": n,
        "rate": left / n if n else None,
        "ci": [lo, hi],
        "p_value": sign_test(left, right) if n else None,
        "a_left_share": a_left,
    }


def position_bias(votes: pd.DataFrame, overall: pd.DataFrame | None, criteria: list[str]) -> dict | None:
    """Left-win figures for the per-vote overall decision plus ``by_criterion``; None without a side column."""
    if "side" not in votes.columns:
        return None
    head = _figures(overall) if overall is not None and "side" in overall.columns else _figures(votes)
    head["unit"] = "vote (overall decision)" if overall is not None else "vote x criterion"
    head["by_criterion"] = {c: _figures(votes[votes["criterion"] == c]) for c in criteria}
    return head
