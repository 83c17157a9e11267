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

from app.stats.frame import SIDES, codes, column_codes, same_value
from app.stats.proportions import proportion_ci
from app.stats.significance import sign_test


def _figures(side: np.ndarray, a_left: np.ndarray | None) -> dict:
    left = int(np.count_nonzero(side == 0))
    right = int(np.count_nonzero(side == 1))
    n = left + right
    lo, hi = proportion_ci(left, n) if n else (None, None)
    return {
        "left_wins": left,
        "right_wins": right,
        "n": n,
        "rate": left / n if n else None,
        "ci": [lo, hi],
        "p_value": sign_test(left, right) if n else None,
        "a_left_share": float(a_left.mean()) if a_left is not None and a_left.size else None,
    }


def _arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    side = codes(frame["side"], SIDES)
    a_left = same_value(frame["left_model"], frame["model_a"]) if "left_model" in frame.columns else None
    return side, a_left


def position_bias(votes: pd.DataFrame, overall: pd.DataFrame | None, criteria: list[str]) -> dict | None:
    """Left-win figures for the per-vote overall decision plus ``by_criterion``; None without a side column."""
    if "side" not in votes.columns:
        return None
    side, a_left = _arrays(votes)
    use_overall = overall is not None and "side" in overall.columns
    head = _figures(*_arrays(overall)) if use_overall else _figures(side, a_left)
    head["unit"] = "vote (overall decision)" if use_overall else "vote x criterion"
    crit, cats = column_codes(votes["criterion"])
    head["by_criterion"] = {}
    for c in criteria:
        mask = crit == (cats.index(c) if c in cats else -2)
        head["by_criterion"][c] = _figures(side[mask], None if a_left is None else a_left[mask])
    return head
