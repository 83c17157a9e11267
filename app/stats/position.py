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


def _figures(left: int, right: int, a_left: int | None, rows: int) -> dict:
    """Figures from counts: left and right wins, rows with model_a on the left (None: unknown), rows."""
    n = left + right
    lo, hi = proportion_ci(left, n) if n else (None, None)
    return {
        "left_wins": left,
        "right_wins": right,
        "n": n,
        "rate": left / n if n else None,
        "ci": [lo, hi],
        "p_value": sign_test(left, right) if n else None,
        "a_left_share": a_left / rows if a_left is not None and rows else None,
    }


def _arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    side = codes(frame["side"], SIDES)
    a_left = same_value(frame["left_model"], frame["model_a"]) if "left_model" in frame.columns else None
    return side, a_left


def _counts(side: np.ndarray, a_left: np.ndarray | None, group: np.ndarray, n_groups: int) -> list[dict]:
    """``_figures`` per group (codes 0..n_groups-1; -1 = none), from bincounts rather than a mask per group."""
    if group.size and group.min() < 0:
        keep = group >= 0
        group, side, a_left = group[keep], side[keep], None if a_left is None else a_left[keep]
    side_n = np.bincount(group * 4 + (side + 1), minlength=n_groups * 4).reshape(n_groups, 4)
    rows = side_n.sum(axis=1)
    a_n = np.bincount(group[a_left], minlength=n_groups) if a_left is not None else None
    return [_figures(int(side_n[g, 1]), int(side_n[g, 2]), None if a_n is None else int(a_n[g]), int(rows[g]))
            for g in range(n_groups)]


def position_bias(votes: pd.DataFrame, overall: pd.DataFrame | None, criteria: list[str]) -> dict | None:
    """Left-win figures for the per-vote overall decision plus ``by_criterion``; None without a side column."""
    if "side" not in votes.columns:
        return None
    side, a_left = _arrays(votes)
    use_overall = overall is not None and "side" in overall.columns
    head_side, head_left = _arrays(overall) if use_overall else (side, a_left)
    head = _counts(head_side, head_left, np.zeros(len(head_side), dtype=np.int64), 1)[0]
    head["unit"] = "vote (overall decision)" if use_overall else "vote x criterion"
    crit, cats = column_codes(votes["criterion"])
    per = _counts(side, a_left, crit, len(cats))
    none = _counts(side[:0], None if a_left is None else a_left[:0], crit[:0], 1)[0]  # a criterion without rows
    head["by_criterion"] = {c: per[cats.index(c)] if c in cats else none for c in criteria}
    return head
