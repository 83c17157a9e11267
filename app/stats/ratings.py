"""Ratings for more than two models: Bradley-Terry in the convention of FastChat's arena, and Davidson's tie model.

Bradley-Terry (BT). P(i beats j) = 1 / (1 + BASE ** ((R_j - R_i) / SCALE)) with SCALE 400, BASE 10, and a tie
counted as half a win to each side -- exactly the likelihood of FastChat's ``compute_elo_mle_with_tie`` /
``bt_loss_and_grad`` (lm-sys/FastChat ``fastchat/serve/monitor/elo_analysis.py``), whose older
``compute_mle_elo`` fits the same model as an (L2-regularised) scikit-learn logistic regression. We maximise the
unpenalised likelihood by Newton's method, vectorised over bootstrap replicates (each replicate is a vector of
outcome counts, so 1000 replicates are one batched solve rather than 1000 optimiser runs); the tests check it
against scipy's L-BFGS on FastChat's loss. Ratings are centred so their mean is 1000 (FastChat instead anchors a
named baseline model, which our studies do not have). Intervals are percentile bootstrap intervals resampling
prompts (battles when there is no prompt, as FastChat does); a model's rank is 1 + the number of models whose
lower bound is above its upper bound (FastChat's "rank (UB)"), so models with overlapping intervals share ranks.

Davidson (1970, JASA 65:317-328, "On extending the Bradley-Terry model to accommodate ties"):
P(i beats j) = pi_i / D, P(tie) = nu * sqrt(pi_i * pi_j) / D, D = pi_i + pi_j + nu * sqrt(pi_i * pi_j);
fitted by maximum likelihood with scipy.optimize (BFGS on log-worths and log nu). Worths are reported
normalised to sum to 1, as in Davidson's paper.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, logsumexp

from app.stats.frame import WINNERS, codes, same_value

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0


def battle_table(votes: pd.DataFrame, models: list[str] | None = None) -> tuple[list[str], pd.DataFrame]:
    """Aggregate battles to one row per unordered model pair: model_a, model_b, wins_a, wins_b, ties, i, j.

    Rows where a model meets itself carry no information and are dropped.
    """
    frame = votes[~same_value(votes["model_a"], votes["model_b"])]
    if models is None:
        models = sorted({str(x) for x in pd.unique(frame["model_a"])} | {str(x) for x in pd.unique(frame["model_b"])})
    i, j = codes(frame["model_a"], models), codes(frame["model_b"], models)
    w = codes(frame["winner"], WINNERS)
    swap = i > j
    lo, hi = np.where(swap, j, i), np.where(swap, i, j)
    win_lo = np.where(swap, w == 1, w == 0)
    win_hi = np.where(swap, w == 0, w == 1)
    tie = ~(win_lo | win_hi)
    m = len(models)
    key = lo * m + hi
    present = np.flatnonzero(np.bincount(key, minlength=m * m))
    table = pd.DataFrame(
        {
            "i": present // m,
            "j": present % m,
            "wins_a": np.bincount(key, weights=win_lo, minlength=m * m)[present].astype(np.int64),
            "wins_b": np.bincount(key, weights=win_hi, minlength=m * m)[present].astype(np.int64),
            "ties": np.bincount(key, weights=tie, minlength=m * m)[present].astype(np.int64),
        }
    )
    table.insert(0, "model_a", [models[k] for k in table["i"]])
    table.insert(1, "model_b", [models[k] for k in table["j"]])
    return models, table.reset_index(drop=True)


def fit_bt(
    matchups: np.ndarray,
    score_a: np.ndarray,
    games: np.ndarray,
    n_models: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood BT strengths (natural log-odds, mean 0) for one or many count vectors.

    ``matchups`` (P, 2) model indices; ``score_a`` and ``games`` shaped (P,) or (B, P): model i's score
    (wins + ties / 2) and the number of games per matchup. Returns (theta (B, M), converged (B,)).
    """
    s = np.atleast_2d(np.asarray(score_a, dtype=float))
    n = np.atleast_2d(np.asarray(games, dtype=float))
    b = s.shape[0]
    design = np.zeros((len(matchups), n_models))
    design[np.arange(len(matchups)), matchups[:, 0]] = 1.0
    design[np.arange(len(matchups)), matchups[:, 1]] = -1.0
    free = design[:, 1:]  # model 0 fixed at 0 to identify the scale; centred at the end
    theta = np.zeros((b, n_models - 1))
    converged = np.zeros(b, dtype=bool)
    ridge = 1e-9 * np.eye(n_models - 1)  # keeps models with no games (in a replicate) solvable at 0
    for _ in range(max_iter):
        p = expit(theta @ free.T)
        grad = (s - n * p) @ free
        weight = n * p * (1 - p)
        info = np.einsum("bp,pi,pj->bij", weight, free, free) + ridge
        step = np.linalg.solve(info, grad[..., None])[..., 0]
        # Separated data (a model that never loses) has no finite MLE; bounded steps keep such fits finite
        # and they are reported as not converged.
        step = np.clip(step, -2.0, 2.0)
        theta = theta + step * ~converged[:, None]
        converged |= np.abs(step).max(axis=1) < tol
        if converged.all():
            break
    full = np.concatenate([np.zeros((b, 1)), theta], axis=1)
    return full - full.mean(axis=1, keepdims=True), converged


def to_rating(theta: np.ndarray, *, scale: float = SCALE, base: float = BASE, init: float = INIT_RATING) -> np.ndarray:
    """Natural-log strengths to the Elo scale: init + scale * log_base(odds)."""
    return init + theta * scale / math.log(base)


def ranks_from_intervals(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 + the number of models whose lower bound lies above this model's upper bound."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def _cluster_counts(votes: pd.DataFrame, models: list[str], table: pd.DataFrame, cluster: str) -> np.ndarray:
    """(n_clusters, P * 3) counts of wins_a, wins_b, ties per cluster and matchup (matchups as in ``table``)."""
    m = len(models)
    frame = votes[~same_value(votes["model_a"], votes["model_b"])]
    i, j = codes(frame["model_a"], models), codes(frame["model_b"], models)
    w = codes(frame["winner"], WINNERS)
    swap = i > j
    key = np.where(swap, j, i) * m + np.where(swap, i, j)
    pos = np.full(m * m, -1)
    pos[table["i"].to_numpy() * m + table["j"].to_numpy()] = np.arange(len(table))
    p = pos[key]
    outcome = np.where(np.where(swap, w == 1, w == 0), 0, np.where(np.where(swap, w == 0, w == 1), 1, 2))
    cl, uniques = pd.factorize(frame[cluster], sort=True)
    cells = len(table) * 3
    flat = cl.astype(np.int64) * cells + p * 3 + outcome
    return np.bincount(flat, minlength=len(uniques) * cells).reshape(len(uniques), cells).astype(float)


def check_connected(models: list[str], table: pd.DataFrame) -> None:
    """Ratings compare models only through chains of battles; refuse when some groups never meet."""
    graph = coo_matrix((np.ones(len(table)), (table["i"], table["j"])), shape=(len(models), len(models)))
    n_groups, labels = connected_components(graph, directed=False)
    if n_groups > 1:
        groups = [", ".join(models[k] for k in np.flatnonzero(labels == g)) for g in range(n_groups)]
        raise ValueError(
            f"the models fall into {n_groups} groups that never met, so their ratings cannot be compared: "
            + " | ".join(groups) + ". Rate each group separately."
        )


def win_rate_matrix(table: pd.DataFrame, models: list[str]) -> list[list[float | None]]:
    """Empirical share of battles the row model won against the column model (ties count in the denominator
    but not as wins, as FastChat's ``compute_pairwise_win_fraction``); None where two models never met."""
    m = len(models)
    out: list[list[float | None]] = [[None] * m for _ in range(m)]
    for row in table.itertuples(index=False):
        total = row.wins_a + row.wins_b + row.ties
        if total:
            out[row.i][row.j] = row.wins_a / total
            out[row.j][row.i] = row.wins_b / total
    return out


def bradley_terry(
    votes: pd.DataFrame,
    *,
    models: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str | None = "prompt",
    confidence: float = 0.95,
) -> dict:
    """BT ratings with bootstrap intervals, ranks and win-rate matrices (keys in the return statement)."""
    models, table = battle_table(votes, models)
    m = len(models)
    if m < 2 or table.empty:
        raise ValueError("Bradley-Terry ratings need battles between at least two different models")
    check_connected(models, table)
    matchups = table[["i", "j"]].to_numpy()
    counts = table[["wins_a", "wins_b", "ties"]].to_numpy(dtype=float)
    score, games = counts[:, 0] + counts[:, 2] / 2, counts.sum(axis=1)
    theta, converged = fit_bt(matchups, score, games, m)
    rating = to_rating(theta[0])

    unit = "vote"
    rng = np.random.default_rng(seed)
    if n_boot > 0:
        if cluster and cluster in votes.columns:
            unit = cluster
            per_cluster = _cluster_counts(votes, models, table, cluster)
            w = rng.multinomial(len(per_cluster), np.full(len(per_cluster), 1 / len(per_cluster)), size=n_boot)
            boot = (w @ per_cluster).reshape(n_boot, len(table), 3)
        else:
            flat = counts.ravel()
            boot = rng.multinomial(int(flat.sum()), flat / flat.sum(), size=n_boot).reshape(n_boot, len(table), 3)
        b_theta, b_conv = fit_bt(matchups, boot[..., 0] + boot[..., 2] / 2, boot.sum(axis=2), m)
        tail = (1 - confidence) / 2 * 100
        lower, upper = np.percentile(to_rating(b_theta), [tail, 100 - tail], axis=0)
        boot_converged = float(b_conv.mean())
    else:
        lower = upper = np.full(m, np.nan)
        boot_converged = None
    ranks = ranks_from_intervals(lower, upper) if n_boot > 0 else np.argsort(np.argsort(-rating)) + 1
    order = list(np.argsort(-rating, kind="stable"))
    empirical = win_rate_matrix(table, models)
    predicted = 1 / (1 + BASE ** ((rating[None, :] - rating[:, None]) / SCALE))
    return {
        "ratings": [
            {"model": models[k], "rating": float(rating[k]), "ci": [float(lower[k]), float(upper[k])],
             "rank": int(ranks[k])}
            for k in order
        ],
        "order": [models[k] for k in order],
        "win_rate": [[empirical[r][c] for c in order] for r in order],
        "predicted_win_rate": [[None if r == c else float(predicted[r, c]) for c in order] for r in order],
        "n_battles": int(games.sum()),
        "bootstrap_unit": unit,
        "converged": bool(converged[0]),
        "bootstrap_converged_share": boot_converged,
        "scale": SCALE,
        "base": BASE,
        "centre": INIT_RATING,
    }


def _davidson_nll(params: np.ndarray, i: np.ndarray, j: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log-likelihood and its gradient in (log-worths of models 1.., log nu); model 0 fixed at 0."""
    m = params.size  # m - 1 free log-worths + log nu
    log_pi = np.concatenate([[0.0], params[: m - 1]])
    log_nu = params[-1]
    a, b = log_pi[i], log_pi[j]
    tie = log_nu + (a + b) / 2
    log_d = logsumexp(np.stack([a, b, tie]), axis=0)
    ll = counts[:, 0] * (a - log_d) + counts[:, 1] * (b - log_d) + counts[:, 2] * (tie - log_d)
    n = counts.sum(axis=1)
    p_i, p_j, p_t = np.exp(a - log_d), np.exp(b - log_d), np.exp(tie - log_d)
    g = np.zeros(m)  # index k: model k (k = 0 dropped below), last: log nu
    np.add.at(g, i, counts[:, 0] + counts[:, 2] / 2 - n * (p_i + p_t / 2))
    np.add.at(g, j, counts[:, 1] + counts[:, 2] / 2 - n * (p_j + p_t / 2))
    grad = np.concatenate([g[1:m], [(counts[:, 2] - n * p_t).sum()]])
    return -float(ll.sum()), -grad


def fit_davidson(matchups: np.ndarray, counts: np.ndarray, n_models: int) -> dict:
    """Davidson (1970) worths (normalised to sum 1) and tie parameter nu by maximum likelihood.

    ``counts`` (P, 3): wins of matchups[:, 0], wins of matchups[:, 1], ties.
    """
    counts = np.asarray(counts, dtype=float)
    if counts[:, 2].sum() == 0:
        raise ValueError("the Davidson model needs at least one tie to estimate its tie parameter")
    i, j = matchups[:, 0], matchups[:, 1]
    x0 = np.zeros(n_models)  # n_models - 1 free log-worths + log nu
    res = minimize(_davidson_nll, x0, args=(i, j, counts), jac=True, method="BFGS", options={"gtol": 1e-8})
    log_pi = np.concatenate([[0.0], res.x[: n_models - 1]])
    worth = np.exp(log_pi - logsumexp(log_pi))
    return {"worths": worth, "nu": float(np.exp(res.x[-1])), "log_likelihood": -float(res.fun),
            "converged": bool(res.success)}


def davidson(votes: pd.DataFrame, *, models: list[str] | None = None) -> dict | None:
    """Davidson fit of a vote frame: {"worths": [{"model","worth","rating"}], "nu", ...}; None without ties."""
    models, table = battle_table(votes, models)
    counts = table[["wins_a", "wins_b", "ties"]].to_numpy(dtype=float)
    if table.empty or counts[:, 2].sum() == 0:
        return None
    fit = fit_davidson(table[["i", "j"]].to_numpy(), counts, len(models))
    log_w = np.log(fit["worths"])
    rating = to_rating(log_w - log_w.mean())
    order = np.argsort(-fit["worths"], kind="stable")
    return {
        "worths": [{"model": models[k], "worth": float(fit["worths"][k]), "rating": float(rating[k])} for k in order],
        "nu": fit["nu"],
        "log_likelihood": fit["log_likelihood"],
        "converged": fit["converged"],
    }
