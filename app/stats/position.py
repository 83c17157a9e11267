"""Position bias: does a clip win more often when it is shown on the left than when the same model is on the right?

Conditioned on model identity. For each model pair, among decided votes, ``p_L = P(A wins | A on the left)``
and ``p_R = P(A wins | A on the right)``; the left advantage is ``delta = (p_L - p_R) / 2`` and ``rate =
1/2 + delta`` is the share of decided votes the left clip would win if every pair were shown equally often
each way round (``rate`` = 1/2: no position bias). Pairs are pooled by their number of decided votes. Only
pairs seen both ways round carry information.

Why not the share of votes the left clip won (what this module reported before): that share mixes the
position effect with the models' own: when one model is much better, every vote is mostly decided by the
model, so the left share is noisy and a real pull to the left goes unseen (power 0.21 instead of 0.52 at
P(A wins) = 0.88), and when the better model happened to sit on the left more often than half the time it
looks like a position effect (a false flag 56% of the time with A on the left 60% of the time at P(A wins)
= 0.8). Comparing the same model on the left and on the right removes both.

Inference: ``delta`` is a weighted sum of per-vote influence values ``u_i = w_k s_i (y_i - p_{k,s_i}) /
(2 n_{k,s_i})`` (``y`` = A won, ``s`` = +1 left / -1 right, ``w_k`` the pair's weight, ``n_{k,s}`` its decided
votes with A on that side); its variance is two-way cluster-robust by prompt and by rater (Cameron, Gelbach
& Miller 2011: the one-way cluster sums by prompt plus by rater minus by prompt x rater, each with the G/(G-1)
factor, the larger one-way variance when that is not positive), as the preference shares are. The test is
``delta / se`` against Student's t with ``min(prompts, raters) - 1`` degrees of freedom and the interval is
``rate +- t se`` from the same statistic, so the interval excludes 1/2 exactly when p < alpha. With fewer than
``APPROXIMATE_BELOW`` prompts or raters the figure is labelled approximate.

The headline figure uses one decision per vote (the "overall" winner), because the criteria of one vote are
not independent; per-criterion figures are given beside it. ``a_left_share`` (how often model_a was on the
left) checks the randomisation; ``raw_rate`` is the plain share of decided votes won by the left clip, for
reference only. Without a ``left_model`` column the model on each side is unknown and the figures fall back
to that plain share (``method`` says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from app.stats.clustered import APPROXIMATE_BELOW, Clustering, sum_variance
from app.stats.frame import SIDES, WINNERS, codes, column_codes, group_codes, same_value

CONFIDENCE = 0.95
CONDITIONAL = ("left advantage conditional on the model pair: (P(A wins | A left) - P(A wins | A right)) / 2 "
               "among decided votes, pairs pooled by decided votes; two-way cluster-robust (prompt x rater) t test")
MARGINAL = ("share of decided votes won by the left clip (no left_model column, so not conditional on the "
            "models); cluster-robust t test against 1/2")


def _estimate(y: np.ndarray, group: np.ndarray, sign: np.ndarray, pair: np.ndarray
              ) -> tuple[float | None, np.ndarray, np.ndarray]:
    """(delta, influence value per row, rows used) for decided rows: ``y`` 0/1, ``group`` = (pair, side) code,
    ``sign`` +1 / -1, ``pair`` the pair code of the row. Pairs not seen on both sides are left out."""
    n_groups = int(group.max(initial=-1)) + 1
    n_g = np.bincount(group, minlength=n_groups).astype(float)
    s_g = np.bincount(group, weights=y, minlength=n_groups)
    # each pair's two groups: group = 2 * pair + (0 left, 1 right)
    n_pairs = (n_groups + 1) // 2
    padded = np.zeros(2 * n_pairs)
    padded[:n_groups] = n_g
    n_lr = padded.reshape(n_pairs, 2)
    both = np.asarray((n_lr > 0).all(axis=1))
    used = both[pair]
    if not used.any():
        return None, np.zeros(0), used
    weight = np.where(both, n_lr.sum(axis=1), 0.0)
    weight /= weight.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_g > 0, s_g / n_g, np.nan)
    padded_mean = np.full(2 * n_pairs, np.nan)
    padded_mean[:n_groups] = mean
    mean_lr = padded_mean.reshape(n_pairs, 2)
    delta = float((weight[both] * (mean_lr[both, 0] - mean_lr[both, 1]) / 2).sum())
    g, s = group[used], sign[used]
    u = weight[pair[used]] * s * (y[used] - mean[g]) / (2 * n_g[g])
    return delta, u, used


def _inference(delta: float | None, u: np.ndarray, prompt: np.ndarray | None, rater: np.ndarray | None,
               confidence: float) -> dict[str, Any]:
    """rate, ci, p_value and what they rest on, from the estimate and its influence values."""
    out: dict[str, Any] = {"rate": None, "ci": [None, None], "p_value": None, "left_advantage": delta,
                           "se": None, "df": 0, "n_prompts": 0, "n_raters": 0, "approximate": False}
    if delta is None:
        return out
    var, df, g_p, g_r = sum_variance(u, Clustering(prompt, rater))
    present = [g for g in (g_p, g_r) if g]
    out.update(rate=0.5 + delta, df=df, n_prompts=g_p, n_raters=g_r,
               approximate=bool(present) and min(present) < APPROXIMATE_BELOW)
    if df <= 0 or not np.isfinite(var):
        return out
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0:
        p = 1.0 if delta == 0 else 0.0
        half = 0.0
    else:
        p = float(2 * stats.t.sf(abs(delta) / se, df))
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    out.update(se=se, p_value=p, ci=[max(0.0, 0.5 + delta - half), min(1.0, 0.5 + delta + half)])
    return out


def _figures(frame: pd.DataFrame, clustering: Clustering, confidence: float) -> dict[str, Any]:
    """Every figure of one frame (one criterion, or the per-vote overall decisions)."""
    side = codes(frame["side"], SIDES)
    decided = side < 2
    left_wins, right_wins = int((side == 0).sum()), int((side == 1).sum())
    a_left = same_value(frame["left_model"], frame["model_a"]) if "left_model" in frame.columns else None
    prompt = None if clustering.prompt is None else clustering.prompt[decided]
    rater = None if clustering.rater is None else clustering.rater[decided]
    if a_left is not None:
        y = (codes(frame["winner"], WINNERS) == 0)[decided].astype(float)
        pair, _ = group_codes(frame, ["model_a", "model_b"])
        pair = pair[decided].astype(np.int64)
        right = ~a_left[decided]
        delta, u, used = _estimate(y, 2 * pair + right, np.where(right, -1.0, 1.0), pair)
        method = CONDITIONAL
    else:
        y = (side == 0)[decided].astype(float)
        used = np.ones(y.size, dtype=bool)
        delta = float(y.mean()) - 0.5 if y.size else None
        u = (y - y.mean()) / y.size if y.size else np.zeros(0)
        method = MARGINAL
    fig = _inference(delta, u, None if prompt is None else prompt[used], None if rater is None else rater[used],
                     confidence)
    n = left_wins + right_wins
    return {
        "left_wins": left_wins,
        "right_wins": right_wins,
        "n": int(used.sum()),
        "rate": fig.pop("rate"),
        "ci": fig.pop("ci"),
        "p_value": fig.pop("p_value"),
        "a_left_share": float(a_left.mean()) if a_left is not None and len(a_left) else None,
        "raw_rate": left_wins / n if n else None,
        **fig,
        "method": method,
    }


def position_bias(votes: pd.DataFrame, overall: pd.DataFrame | None, criteria: list[str], *,
                  confidence: float = CONFIDENCE) -> dict[str, Any] | None:
    """Left-advantage figures for the per-vote overall decision plus ``by_criterion``; None without a side column.

    Keys: left_wins, right_wins (decided votes won by each side), n (decided votes used: pairs seen both ways
    round), rate (conditional left-win rate, 1/2 = no bias), ci, p_value, a_left_share, raw_rate (plain left
    share), left_advantage (rate - 1/2), se, df, n_prompts, n_raters, approximate, method; ``unit`` and
    ``by_criterion`` ({criterion: the same figures}) at the top level.
    """
    if "side" not in votes.columns:
        return None
    use_overall = overall is not None and "side" in overall.columns and len(overall) > 0
    head_frame = overall if use_overall and overall is not None else votes
    head = _figures(head_frame, Clustering.of(head_frame), confidence)
    head["unit"] = "vote (overall decision)" if use_overall else "vote x criterion"
    crit, cats = column_codes(votes["criterion"])
    by: dict[str, Any] = {}
    for criterion in criteria:
        part = votes[crit == cats.index(criterion)] if criterion in cats else votes.iloc[0:0]
        by[criterion] = _figures(part, Clustering.of(part), confidence)
    head["by_criterion"] = by
    return head
