"""Ratings for more than two models: Bradley-Terry on the arena scale, and Davidson's tie model.

How ties enter, one rule everywhere (as for the preference shares): a tie is an outcome of its own.
Bradley-Terry is a model of preference, so it is fitted to decided votes only (a tie counts for neither
model), and the win-rate matrix is wins / (wins + losses), so the leader is never below 50% against a model it
beats; Davidson's model is the one that models ties (that is its purpose). Counting a tie as half a win to
each side (FastChat's convention, which this module followed before) shrinks the strengths towards each other
(to 0.655x the truth at a 20-40% tie rate) and a "not won" tie in the win-rate matrix could put the leader
below 50% against a model it beats.

Bradley-Terry (BT). P(i beats j) = 1 / (1 + BASE ** ((R_j - R_i) / SCALE)) with SCALE 400, BASE 10: the
likelihood of FastChat's ``compute_elo_mle_with_tie`` / ``bt_loss_and_grad`` (lm-sys/FastChat
``fastchat/serve/monitor/elo_analysis.py``) on decided battles. It is maximised by Newton's method, vectorised
over bootstrap replicates (each replicate is a vector of outcome counts, so 1000 replicates are one batched
solve). Ratings are centred so their mean is 1000.

Separation. The maximum-likelihood estimate exists only when, however the models are split into two groups,
each group beat the other at least once: the directed "beat" graph is strongly connected (Zermelo 1929; Ford
1957; Hunter 2004, Ann. Statist. 32(1), Assumption 1). A model that never lost has no finite rating; an
unbounded iteration then reports an absurd one (4175 with "95% CI" [4110, 4229]). When the condition fails the
fit adds one half to every outcome of every pair of models that met -- half a virtual win each way (the
"add one half" of Haldane 1956 and Anscombe 1956, a Jeffreys Beta(1/2, 1/2) prior per pair; Whelan 2017,
"Prior distributions for the Bradley-Terry model of paired comparisons", arXiv:1712.05311, discusses such
fictitious games) -- which always has a finite, unique maximum. The block says so: ``regularised`` and
``separation`` (the models that never lost to, or never beat, the models outside their group). The same rule
(the MLE when it exists, else the regularised fit) is applied to every bootstrap replicate, so the interval
describes the same estimator; ``bootstrap_regularised_share`` says how often it was needed and
``bootstrap_converged_share`` how often Newton converged.

Intervals. Percentile bootstrap intervals with the pigeonhole (two-way) bootstrap: prompts and raters are
resampled independently and a vote weighs its prompt's draw count times its rater's (Owen 2007, "The
pigeonhole bootstrap", Ann. Appl. Stat. 1(2); ``app.stats.clustered.pigeonhole_weights``), since votes are
crossed by prompt and by rater; resampling prompts (or votes) alone gave intervals that covered far less than
95% with rater effects. A dimension with a single cluster is not resampled; without prompts and raters votes
are resampled independently (``bootstrap_unit`` says which). With fewer than ``APPROXIMATE_BELOW`` prompts or
raters the intervals are labelled approximate. A model's rank is 1 + the number of models whose lower bound is
above its upper bound (FastChat's "rank (UB)"), so models with overlapping intervals share ranks.

Davidson (1970, JASA 65:317-328, "On extending the Bradley-Terry model to accommodate ties"):
P(i beats j) = pi_i / D, P(tie) = nu * sqrt(pi_i * pi_j) / D, D = pi_i + pi_j + nu * sqrt(pi_i * pi_j);
fitted by maximum likelihood with Newton's method on (log-worths, log nu) -- the log-likelihood is concave
there -- vectorised over the same bootstrap replicates, with the same separation rule: each of a pair's three
outcomes gets one half when the MLE does not exist (some group never lost nor tied against the rest, no tie,
no decided vote, or -- with ties, worths and nu can run off together -- a fit that does not converge to
finite values). Worths are reported normalised to sum to 1, as in Davidson's paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, logsumexp

from app.stats.clustered import APPROXIMATE_BELOW, Clustering, pigeonhole_weights
from app.stats.frame import WINNERS, codes, same_value

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
PSEUDO_COUNT = 0.5  # added to every outcome of every pair that met, only when the MLE does not exist
TIE_RULE = "decided votes only: a tie counts for neither model (Davidson's model is the one that models ties)"
_BOOT_BLOCK = 2_000_000  # bootstrap replicates x (prompt, rater) combinations held at once


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




def _strongly_connected(adjacency: np.ndarray) -> np.ndarray:
    """Per replicate (B, M, M boolean, [b, i, j]: an edge i -> j): is every model reachable from every other?"""
    m = adjacency.shape[-1]
    reach = (adjacency | np.eye(m, dtype=bool)).astype(np.float64)
    for _ in range(max(1, math.ceil(math.log2(max(m, 2))))):
        reach = ((reach @ reach) > 0).astype(np.float64)
    return np.asarray(reach.all(axis=(1, 2)))


def _edges(matchups: np.ndarray, n_models: int, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(B, M, M) adjacency: i -> j where ``forward`` (B, P) > 0 for matchup (i, j), j -> i where ``backward`` > 0."""
    adjacency = np.zeros((forward.shape[0], n_models, n_models), dtype=bool)
    i, j = matchups[:, 0], matchups[:, 1]
    adjacency[:, i, j] |= forward > 0
    adjacency[:, j, i] |= backward > 0
    return adjacency


def bt_mle_exists(matchups: np.ndarray, wins: np.ndarray, n_models: int) -> np.ndarray:
    """Per replicate: does the BT maximum-likelihood estimate exist (``wins`` (B, P, 2) decided counts)?"""
    wins = wins if wins.ndim == 3 else wins[None]
    return _strongly_connected(_edges(matchups, n_models, wins[..., 0], wins[..., 1]))


def davidson_links(matchups: np.ndarray, counts: np.ndarray, n_models: int) -> np.ndarray:
    """Per replicate, a necessary condition for the Davidson MLE (``counts`` (B, P, 3): wins i, wins j, ties).

    Every group must have lost or tied against the rest and won or tied against it (a tie links both ways),
    and there must be at least one tie (else nu -> 0) and one decided battle (else nu -> infinity). It is not
    sufficient (with ties, worths and nu can run off together), so fits are also checked for convergence."""
    counts = counts if counts.ndim == 3 else counts[None]
    ties = counts[..., 2]
    linked = _strongly_connected(_edges(matchups, n_models, counts[..., 0] + ties, counts[..., 1] + ties))
    return linked & (ties.sum(axis=1) > 0) & (counts[..., :2].sum(axis=(1, 2)) > 0)


def fit_bt_regularised(matchups: np.ndarray, wins: np.ndarray, n_models: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT strengths by the module's rule: the MLE where it exists, else with ``PSEUDO_COUNT`` added to both
    outcomes of every matchup. ``wins`` (B, P, 2) or (P, 2). Returns (theta (B, M), converged, regularised)."""
    wins = np.asarray(wins, dtype=float)
    wins = wins if wins.ndim == 3 else wins[None]
    regularised = ~bt_mle_exists(matchups, wins, n_models)
    extra = PSEUDO_COUNT * regularised[:, None]
    theta, converged = fit_bt(matchups, wins[..., 0] + extra, wins.sum(axis=2) + 2 * extra, n_models)
    return theta, converged, regularised


def separation(matchups: np.ndarray, wins: np.ndarray, models: list[str]) -> dict[str, list[str]] | None:
    """None when every group of models beat the rest at least once; else the models in groups that never lost
    to a model outside their group ("top") and in groups that never beat one ("bottom")."""
    m = len(models)
    adjacency = _edges(matchups, m, wins[None, :, 0], wins[None, :, 1])[0]
    n_comp, label = connected_components(coo_matrix(adjacency.astype(float)), directed=True, connection="strong")
    if n_comp == 1:
        return None
    cross = adjacency & (label[:, None] != label[None, :])  # wins over a model of another group
    beaten = np.bincount(label[np.nonzero(cross)[1]], minlength=n_comp) > 0  # the group lost to an outsider
    beat = np.bincount(label[np.nonzero(cross)[0]], minlength=n_comp) > 0  # the group beat an outsider
    return {"top": [models[k] for k in range(m) if not beaten[label[k]]],
            "bottom": [models[k] for k in range(m) if not beat[label[k]]]}


def to_rating(theta: np.ndarray, *, scale: float = SCALE, base: float = BASE, init: float = INIT_RATING) -> np.ndarray:
    """Natural-log strengths to the Elo scale: init + scale * log_base(odds)."""
    return init + theta * scale / math.log(base)


def ranks_from_intervals(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 + the number of models whose lower bound lies above this model's upper bound."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def _outcomes(votes: pd.DataFrame, models: list[str], table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(the rows between two different models, each row's cell: matchup * 3 + outcome (0: table's model_a won,
    1: its model_b won, 2: tie))."""
    m = len(models)
    frame = votes[~same_value(votes["model_a"], votes["model_b"])]
    i, j = codes(frame["model_a"], models), codes(frame["model_b"], models)
    w = codes(frame["winner"], WINNERS)
    swap = i > j
    key = np.where(swap, j, i) * m + np.where(swap, i, j)
    pos = np.full(m * m, -1)
    pos[table["i"].to_numpy() * m + table["j"].to_numpy()] = np.arange(len(table))
    outcome = np.where(np.where(swap, w == 1, w == 0), 0, np.where(np.where(swap, w == 0, w == 1), 1, 2))
    return frame, pos[key] * 3 + outcome


def _compact(codes_: np.ndarray | None) -> np.ndarray | None:
    """Cluster codes renumbered 0..k-1 over the clusters present; None when fewer than two (nothing to resample)."""
    if codes_ is None:
        return None
    uniques, inverse = np.unique(codes_, return_inverse=True)
    return inverse.astype(np.int64) if uniques.size >= 2 else None


def bootstrap_counts(
    votes: pd.DataFrame,
    models: list[str],
    table: pd.DataFrame,
    *,
    n_boot: int,
    seed: int,
    prompt: str | None = "prompt",
    rater: str | None = "evaluator",
) -> tuple[np.ndarray, str, bool]:
    """(n_boot, P, 3) replicate counts of the matchups of ``table`` (wins i, wins j, ties), the bootstrap unit,
    and whether it is approximate (fewer than ``APPROXIMATE_BELOW`` clusters on a resampled dimension).

    Pigeonhole bootstrap over prompts x raters (each dimension that has at least two clusters); votes
    resampled independently when neither has."""
    frame, cell = _outcomes(votes, models, table)
    n_cells = len(table) * 3
    clustering = Clustering.of(frame, prompt=prompt, rater=rater)
    dims = {"prompt": _compact(clustering.prompt), "rater": _compact(clustering.rater)}
    rng = np.random.default_rng(seed)
    if all(c is None for c in dims.values()):
        counts = np.bincount(cell, minlength=n_cells).astype(float)
        boot = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=n_boot).astype(float)
        return boot.reshape(n_boot, len(table), 3), "vote", False
    # one row per (prompt, rater) combination that occurs, with its counts per cell
    p_codes = dims["prompt"] if dims["prompt"] is not None else np.zeros(len(frame), dtype=np.int64)
    r_codes = dims["rater"] if dims["rater"] is not None else np.zeros(len(frame), dtype=np.int64)
    combo, inverse = np.unique(p_codes * (int(r_codes.max(initial=0)) + 1) + r_codes, return_inverse=True)
    per_combo = coo_matrix((np.ones(len(frame)), (inverse, cell)), shape=(combo.size, n_cells)).tocsr()
    combo_prompt = None if dims["prompt"] is None else combo // (int(r_codes.max(initial=0)) + 1)
    combo_rater = None if dims["rater"] is None else combo % (int(r_codes.max(initial=0)) + 1)
    boot = np.empty((n_boot, n_cells))
    block = max(1, _BOOT_BLOCK // max(combo.size, 1))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        weights = pigeonhole_weights(combo_prompt, combo_rater, b, rng)  # (b, combinations)
        boot[start:start + b] = (per_combo.T @ weights.T).T
    used = [name for name, c in dims.items() if c is not None]
    sizes = [int(c.max()) + 1 for c in dims.values() if c is not None]
    return boot.reshape(n_boot, len(table), 3), " x ".join(used), min(sizes) < APPROXIMATE_BELOW


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
    """Share of decided battles the row model won against the column model: wins / (wins + losses), ties
    counting for neither; None where two models never had a decided battle."""
    m = len(models)
    out: list[list[float | None]] = [[None] * m for _ in range(m)]
    for row in table.itertuples(index=False):
        decided = row.wins_a + row.wins_b
        if decided:
            out[row.i][row.j] = row.wins_a / decided
            out[row.j][row.i] = row.wins_b / decided
    return out


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2 * 100
    lower, upper = np.percentile(values, [tail, 100 - tail], axis=0)
    return lower, upper


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicate counts (n_boot, P, 3) of a battle table's matchups (None: no bootstrap), the unit
    resampled, and whether few clusters make the intervals approximate."""

    counts: np.ndarray | None
    unit: str = "vote"
    approximate: bool = False


def replicates(votes: pd.DataFrame, models: list[str], table: pd.DataFrame, *, n_boot: int, seed: int,
               prompt: str | None = "prompt", rater: str | None = "evaluator") -> Replicates:
    """The pigeonhole bootstrap of ``bootstrap_counts``, or nothing when ``n_boot`` is 0."""
    if n_boot <= 0:
        return Replicates(None)
    counts, unit, approximate = bootstrap_counts(votes, models, table, n_boot=n_boot, seed=seed, prompt=prompt,
                                                 rater=rater)
    return Replicates(counts, unit, approximate)


def _prepared(votes: pd.DataFrame, models: list[str] | None) -> tuple[list[str], pd.DataFrame]:
    models, table = battle_table(votes, models)
    if len(models) < 2 or table.empty:
        raise ValueError("Bradley-Terry ratings need battles between at least two different models")
    check_connected(models, table)
    return models, table


def bradley_terry(
    votes: pd.DataFrame,
    *,
    models: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prompt: str | None = "prompt",
    rater: str | None = "evaluator",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """BT ratings (decided votes) with pigeonhole-bootstrap intervals, ranks and win-rate matrices.

    Keys: ratings [{model, rating, ci, rank}] best first, order, win_rate (wins / decided, in ``order``),
    predicted_win_rate, n_battles (all, ties included), n_decided, n_ties, tie_rule, bootstrap_unit
    ('prompt x rater', 'prompt', 'rater' or 'vote'), approximate, converged, regularised, separation (None, or
    {"top": [...], "bottom": [...]}), bootstrap_converged_share, bootstrap_regularised_share, scale, base,
    centre. ``prompt`` / ``rater``: the columns votes cluster on (None: not resampled on that dimension).
    """
    models, table = _prepared(votes, models)
    reps = replicates(votes, models, table, n_boot=n_boot, seed=seed, prompt=prompt, rater=rater)
    return bt_block(models, table, reps, confidence=confidence)


def rate_models(
    votes: pd.DataFrame,
    *,
    models: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prompt: str | None = "prompt",
    rater: str | None = "evaluator",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """``bradley_terry``'s block with ``"davidson"`` (``davidson``'s dict or None) added, both from one bootstrap
    (the same replicates either function draws alone, drawn once)."""
    models, table = _prepared(votes, models)
    reps = replicates(votes, models, table, n_boot=n_boot, seed=seed, prompt=prompt, rater=rater)
    block = bt_block(models, table, reps, confidence=confidence)
    block["davidson"] = davidson_block(models, table, reps, confidence=confidence)
    return block


def bt_block(models: list[str], table: pd.DataFrame, reps: Replicates, *, confidence: float = 0.95
             ) -> dict[str, Any]:
    """The Bradley-Terry block of ``bradley_terry`` from a battle table and its bootstrap replicates."""
    m = len(models)
    matchups = table[["i", "j"]].to_numpy()
    counts = table[["wins_a", "wins_b", "ties"]].to_numpy(dtype=float)
    theta, converged, regularised = fit_bt_regularised(matchups, counts[:, :2], m)
    rating = to_rating(theta[0])
    boot_converged: float | None = None
    boot_regularised: float | None = None
    if reps.counts is not None:
        b_theta, b_conv, b_reg = fit_bt_regularised(matchups, reps.counts[..., :2], m)
        lower, upper = _percentiles(to_rating(b_theta), confidence)
        boot_converged, boot_regularised = float(b_conv.mean()), float(b_reg.mean())
        ranks = ranks_from_intervals(lower, upper)
    else:
        lower = upper = np.full(m, np.nan)
        ranks = np.argsort(np.argsort(-rating)) + 1
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
        "n_battles": int(counts.sum()),
        "n_decided": int(counts[:, :2].sum()),
        "n_ties": int(counts[:, 2].sum()),
        "tie_rule": TIE_RULE,
        "bootstrap_unit": reps.unit,
        "approximate": reps.approximate,
        "converged": bool(converged[0]),
        "regularised": bool(regularised[0]),
        "separation": separation(matchups, counts[:, :2], models) if regularised[0] else None,
        "bootstrap_converged_share": boot_converged,
        "bootstrap_regularised_share": boot_regularised,
        "scale": SCALE,
        "base": BASE,
        "centre": INIT_RATING,
    }


def _davidson_design(matchups: np.ndarray, n_models: int) -> np.ndarray:
    """(P, 3, M) design: the three outcome log-odds (i wins, j wins, tie) of each matchup as linear functions
    of the parameters (log-worths of models 1.., log nu); model 0's log-worth is fixed at 0."""
    design = np.zeros((len(matchups), 3, n_models + 1))
    rows = np.arange(len(matchups))
    i, j = matchups[:, 0], matchups[:, 1]
    design[rows, 0, i] += 1.0
    design[rows, 1, j] += 1.0
    design[rows, 2, i] += 0.5
    design[rows, 2, j] += 0.5
    design[:, 2, n_models] = 1.0  # log nu
    return design[:, :, 1:]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """log P of each outcome from outcome log-odds, over the last axis."""
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def _davidson_newton(design: np.ndarray, counts: np.ndarray, *, max_iter: int = 200, tol: float = 1e-10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton's method for (B, P, 3) counts: (parameters (B, M), converged (B,), log-likelihood (B,)).

    Only the replicates still moving are updated (and computed) at each step."""
    b, n_par = counts.shape[0], design.shape[2]
    x = np.zeros((b, n_par))
    converged = np.zeros(b, dtype=bool)
    n = counts.sum(axis=2)
    ridge = 1e-9 * np.eye(n_par)  # keeps models without battles (in a replicate) solvable
    design_t = np.swapaxes(design, 1, 2)  # (P, M, 3)
    for _ in range(max_iter):
        active = np.flatnonzero(~converged)
        if active.size == 0:
            break
        xa, ca, na = x[active], counts[active], n[active]
        prob = np.exp(_log_softmax(np.einsum("pkm,bm->bpk", design, xa)))
        grad = np.einsum("pkm,bpk->bm", design, ca - na[..., None] * prob)
        # information: sum over matchups of J' (diag(p) - p p') J, times the matchup's battles
        weighted = na[..., None, None] * (prob[..., :, None] * np.eye(3) - prob[..., :, None] * prob[..., None, :])
        info = (design_t[None] @ weighted @ design[None]).sum(axis=1) + ridge
        step = np.clip(np.linalg.solve(info, grad[..., None])[..., 0], -2.0, 2.0)
        x[active] = xa + step
        converged[active] = np.abs(step).max(axis=1) < tol
    log_p = _log_softmax(np.einsum("pkm,bm->bpk", design, x))
    return x, converged, (counts * log_p).sum(axis=(1, 2))


_FINITE = 30.0  # a log-worth or log nu beyond this (odds of 10^13) is a fit running off to infinity


def fit_davidson_batch(matchups: np.ndarray, counts: np.ndarray, n_models: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Davidson fits of (B, P, 3) counts by the module's rule: the MLE where it exists (``davidson_links`` holds
    and Newton converges to finite values), else the fit with ``PSEUDO_COUNT`` added to each outcome of every
    matchup. Returns (log-worths (B, M), centred; log nu (B,); converged; regularised; log-likelihood of the
    counts themselves at the fit)."""
    counts = np.asarray(counts, dtype=float)
    counts = counts if counts.ndim == 3 else counts[None]
    design = _davidson_design(matchups, n_models)
    x = np.zeros((counts.shape[0], design.shape[2]))
    converged = np.zeros(counts.shape[0], dtype=bool)
    linked = davidson_links(matchups, counts, n_models)  # only these can have an MLE: fit them first
    if linked.any():
        x[linked], converged[linked], _ = _davidson_newton(design, counts[linked], max_iter=100)
    regularised = ~(linked & converged & (np.abs(x).max(axis=1) < _FINITE))
    if regularised.any():
        x[regularised], converged[regularised], _ = _davidson_newton(design, counts[regularised] + PSEUDO_COUNT)
    log_lik = (counts * _log_softmax(np.einsum("pkm,bm->bpk", design, x))).sum(axis=(1, 2))
    log_pi = np.concatenate([np.zeros((x.shape[0], 1)), x[:, : n_models - 1]], axis=1)
    return log_pi - log_pi.mean(axis=1, keepdims=True), x[:, -1], converged, regularised, log_lik


def fit_davidson(matchups: np.ndarray, counts: np.ndarray, n_models: int) -> dict[str, Any]:
    """Davidson (1970) worths (normalised to sum 1) and tie parameter nu.

    ``counts`` (P, 3): wins of matchups[:, 0], wins of matchups[:, 1], ties.
    """
    counts = np.asarray(counts, dtype=float)
    if counts[:, 2].sum() == 0:
        raise ValueError("the Davidson model needs at least one tie to estimate its tie parameter")
    log_pi, log_nu, converged, regularised, log_lik = fit_davidson_batch(matchups, counts, n_models)
    worth = np.exp(log_pi[0] - logsumexp(log_pi[0]))
    return {"worths": worth, "nu": float(np.exp(log_nu[0])), "log_likelihood": float(log_lik[0]),
            "converged": bool(converged[0]), "regularised": bool(regularised[0])}


def davidson(
    votes: pd.DataFrame,
    *,
    models: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prompt: str | None = "prompt",
    rater: str | None = "evaluator",
    confidence: float = 0.95,
) -> dict[str, Any] | None:
    """Davidson fit of a vote frame, None without ties. Keys: worths [{model, worth, rating, ci}] best first
    (``ci`` on the rating scale), nu, nu_ci, log_likelihood, converged, regularised, bootstrap_unit,
    approximate, bootstrap_converged_share, bootstrap_regularised_share. The bootstrap is the one of
    ``bradley_terry`` (same seed, same replicates)."""
    models, table = battle_table(votes, models)
    if table.empty or table["ties"].sum() == 0:
        return None
    reps = replicates(votes, models, table, n_boot=n_boot, seed=seed, prompt=prompt, rater=rater)
    return davidson_block(models, table, reps, confidence=confidence)


def davidson_block(models: list[str], table: pd.DataFrame, reps: Replicates, *, confidence: float = 0.95
                   ) -> dict[str, Any] | None:
    """The dict of ``davidson`` from a battle table and its bootstrap replicates (None without ties)."""
    counts = table[["wins_a", "wins_b", "ties"]].to_numpy(dtype=float)
    if table.empty or counts[:, 2].sum() == 0:
        return None
    matchups = table[["i", "j"]].to_numpy()
    fit = fit_davidson(matchups, counts, len(models))
    log_w = np.log(fit["worths"])
    rating = to_rating(log_w - log_w.mean())
    m = len(models)
    lower = upper = np.full(m, np.nan)
    nu_ci: list[float | None] = [None, None]
    boot_converged: float | None = None
    boot_regularised: float | None = None
    if reps.counts is not None:
        b_log_pi, b_log_nu, b_conv, b_reg, _ = fit_davidson_batch(matchups, reps.counts, m)
        lower, upper = _percentiles(to_rating(b_log_pi), confidence)
        nu_lo, nu_hi = _percentiles(np.exp(b_log_nu), confidence)
        nu_ci = [float(nu_lo), float(nu_hi)]
        boot_converged, boot_regularised = float(b_conv.mean()), float(b_reg.mean())
    order = np.argsort(-fit["worths"], kind="stable")
    return {
        "worths": [{"model": models[k], "worth": float(fit["worths"][k]), "rating": float(rating[k]),
                    "ci": [float(lower[k]), float(upper[k])]} for k in order],
        "nu": fit["nu"],
        "nu_ci": nu_ci,
        "log_likelihood": fit["log_likelihood"],
        "converged": fit["converged"],
        "regularised": fit["regularised"],
        "bootstrap_unit": reps.unit,
        "approximate": reps.approximate,
        "bootstrap_converged_share": boot_converged,
        "bootstrap_regularised_share": boot_regularised,
    }
