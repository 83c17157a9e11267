"""Adaptive against uniform pair selection with 3+ models: votes until every interval is narrow enough.

Synthetic studies with known Bradley-Terry strengths (natural log-odds) and a tie rate. Votes arrive one at a
time; each policy picks the model pair of the next vote:

- **random**: a model pair uniformly at random (the baseline of the Chatbot Arena paper);
- **least_voted**: the pair with the fewest votes, ties at random (BlindPair's default, a balanced design);
- **arena_eq9**: BlindPair's ``pair_selection = "arena_eq9"``: least-voted until every pair has
  ``MIN_VOTES_PER_PAIR`` votes, then Chatbot Arena's Eq. 9 with the shrunk per-vote variance of
  ``app.stats.adaptive`` (the same functions the app calls), recomputed after every vote;
- **adaptive**: BlindPair's ``pair_selection = "adaptive"``: the same warm-up, then the sequential optimal design
  for every rating's interval (``app.stats.adaptive.rating_variances`` / ``design_scores``, the functions the app
  calls); the strengths are refitted every ``REFIT_EVERY`` votes (the app reuses its tallies for 15 s), the
  counts are fresh on every vote. Its information is the same Wald information the rating target below uses,
  but the target is computed by this file's own fit (``bt_widths``), not by the rule's code.

Stopping targets, each recorded as the first vote count (checked every ``--every`` votes) at which it holds:

- **win matrix**: the 95% Wilson interval of every model pair's win rate (wins / decided votes; ties count for
  neither side, the project's rule) narrower than ``--win-width``; and the average width below it (the
  paper's Figure 7 plots the average);
- **ratings**: the 95% Wald interval of every model's Bradley-Terry rating (fitted to decided votes, one half
  added to each side of every pair so the fit exists from the first votes; Fisher information, ratings
  centred to mean 0, natural log-odds units) narrower than ``--bt-width``; and the average width below it.

Published figure (Chiang et al. 2024, arXiv:2403.04132, Section 7.1, Figure 7): replaying Arena's fitted
strengths, "to estimate the win matrix to a precision of 0.2, random needs 6,800 samples and adaptive needs
4,400 samples; ... to estimate the score to a precision of 0.3, random needs 17,200 samples and adaptive needs
16,400": adaptive saves 35% of the votes on the win matrix and 5% on the scores, average widths, against random.

A study stops at ``Scenario.max_votes`` votes (6,000; 12,000 with 12 models); a target not met by then counts
as max_votes + 1 and the table says how many replicates that was (its mean is then a lower bound).

Usage: .venv/bin/python -m bench.adaptive [--reps 1000] [--reps-large 300] [--quick]
Writes bench/results/adaptive.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from app.stats.adaptive import (
    MIN_VOTES_PER_PAIR,
    counted_models,
    design_scores,
    eq9_gain,
    fit_strengths,
    pick_least_score,
    rating_variances,
    vote_variance,
)

RESULTS = Path(__file__).resolve().parent / "results"
Z = 1.959963984540054
POLICIES = ("random", "least_voted", "arena_eq9", "adaptive")
TARGETS = ("win_max", "win_mean", "bt_max", "bt_mean")
# The published savings of adaptive over random (average widths), for the comparison in the table.
# The adaptive rule refits the strengths every this many votes (the app: every 15 s or a tenth more votes).
REFIT_EVERY = 10
PUBLISHED = {"win_mean": 1 - 4400 / 6800, "bt_mean": 1 - 16400 / 17200}


@dataclass(frozen=True)
class Scenario:
    name: str
    strengths: tuple[float, ...]  # true BT strengths, natural log-odds
    tie_rate: float = 0.2
    max_votes: int = 6000  # a study stops here; targets not met by then are counted as unmet


SCENARIOS = (
    Scenario("4 models, spread", (0.0, 0.5, 1.5, 3.0)),
    Scenario("5 models, one far ahead", (0.0, 0.2, 0.4, 0.6, 2.5)),
    Scenario("6 models, spread", (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)),
    Scenario("6 models, all close (worst case)", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
    # Closer to the paper's replay (dozens of models, many lopsided pairs); beyond the 3-6 models of a study.
    Scenario("12 models, wide (Arena-like)", tuple(round(5 * i / 11, 4) for i in range(12)), max_votes=12000),
)
QUICK = SCENARIOS[:1] + SCENARIOS[2:3]


def wilson_width(wins: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """Width of the 95% Wilson score interval for wins / decided (elementwise; decided > 0)."""
    p = wins / decided
    z2 = Z * Z
    return np.asarray(2 * Z * np.sqrt(p * (1 - p) / decided + z2 / (4 * decided**2)) / (1 + z2 / decided))


def bt_widths(wins_lo: np.ndarray, wins_hi: np.ndarray, pairs: np.ndarray, m: int,
              theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate: the 95% Wald widths of the centred BT ratings, and the fit (warm start for next time).

    ``wins_*`` (R, P) decided votes of each pair's lower / higher model; one half is added to each (see module).
    """
    s = wins_lo + 0.5
    n = wins_lo + wins_hi + 1.0
    design = np.zeros((len(pairs), m))
    design[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    design[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    free = design[:, 1:]
    for _ in range(30):
        p = expit(theta @ free.T)
        grad = (s - n * p) @ free
        info = np.einsum("rp,pi,pj->rij", n * p * (1 - p), free, free)
        step = np.linalg.solve(info, grad[..., None])[..., 0]
        theta = theta + np.clip(step, -2, 2)
        if np.abs(step).max() < 1e-8:
            break
    p = expit(theta @ free.T)
    cov_free = np.linalg.inv(np.einsum("rp,pi,pj->rij", n * p * (1 - p), free, free))
    cov = np.zeros((len(theta), m, m))
    cov[:, 1:, 1:] = cov_free
    centre = np.eye(m) - 1.0 / m
    var = np.einsum("ij,rjk,ik->ri", centre, cov, centre)
    return 2 * Z * np.sqrt(var), theta


def choose(policy: str, wins_lo: np.ndarray, wins_hi: np.ndarray, ties: np.ndarray,
           rng: np.random.Generator, study: Study | None = None) -> np.ndarray:
    """The model pair (index) of the next vote of each replicate under ``policy``; tallies are (R, P).

    ``study`` (for "adaptive"): where the fit of the previous vote is kept as the next one's warm start."""
    reps, n_pairs = wins_lo.shape
    counts = wins_lo + wins_hi + ties
    least = np.argmin(counts + rng.random((reps, n_pairs)) * 0.5, axis=1)  # fewest votes, ties at random
    if policy == "random":
        return np.asarray(rng.integers(0, n_pairs, reps))
    if policy == "least_voted":
        return least
    warm = counts.min(axis=1) < MIN_VOTES_PER_PAIR
    if policy == "adaptive":
        if warm.all():
            return least
        pairs, m = study_pairs(study, n_pairs), _models(n_pairs)
        theta = None if study is None else study.theta
        if study is not None and (theta is None or study.votes % REFIT_EVERY == 0):
            # Refit now and then, warm-started, as the app reuses its tallies for a while; the information
            # (counts) is fresh on every vote.
            theta = study.theta = fit_strengths(wins_lo, wins_hi, pairs, m, theta)
        include = counted_models(wins_lo, wins_hi, ties, pairs, m)
        now, after, _ = rating_variances(wins_lo, wins_hi, ties, pairs, m, theta=theta, include=include)
        scale = np.where(include, now, 0.0).max(axis=-1)
        picked = pick_least_score(design_scores(after, scale, include), rng)
        return np.where(warm, least, picked)
    gain = eq9_gain(np.maximum(counts, 1), vote_variance(wins_lo, wins_hi, ties))
    cum = np.cumsum(gain, axis=1)
    drawn = (cum < rng.random((reps, 1)) * cum[:, -1:]).sum(axis=1)
    return np.where(warm, least, np.minimum(drawn, n_pairs - 1))


def _models(n_pairs: int) -> int:
    """The number of models M of a complete design with M (M - 1) / 2 pairs."""
    return int(round((1 + (1 + 8 * n_pairs) ** 0.5) / 2))


def study_pairs(study: Study | None, n_pairs: int) -> np.ndarray:
    return study.pairs if study is not None else np.array(list(itertools.combinations(range(_models(n_pairs)), 2)))


class Study:
    """``reps`` simulated studies of one scenario, vote by vote."""

    def __init__(self, scenario: Scenario, reps: int, rng: np.random.Generator) -> None:
        self.scenario, self.rng = scenario, rng
        self.m = len(scenario.strengths)
        self.pairs = np.array(list(itertools.combinations(range(self.m), 2)))
        strength = np.asarray(scenario.strengths)
        self.p_lo = expit(strength[self.pairs[:, 0]] - strength[self.pairs[:, 1]])  # P(lower index wins | decided)
        self.wins_lo = np.zeros((reps, len(self.pairs)))
        self.wins_hi = np.zeros((reps, len(self.pairs)))
        self.ties = np.zeros((reps, len(self.pairs)))
        self.rows = np.arange(reps)
        self.theta: np.ndarray | None = None  # the adaptive rule's last fit, (R, M)
        self.votes = 0

    def vote(self, policy: str) -> None:
        choice = choose(policy, self.wins_lo, self.wins_hi, self.ties, self.rng, self)
        self.votes += 1
        reps = len(self.rows)
        tie = self.rng.random(reps) < self.scenario.tie_rate
        lo_wins = ~tie & (self.rng.random(reps) < self.p_lo[choice])
        self.ties[self.rows, choice] += tie
        self.wins_lo[self.rows, choice] += lo_wins
        self.wins_hi[self.rows, choice] += ~tie & ~lo_wins


def allocation(scenario: Scenario, policy: str, *, reps: int, votes: int, rng: np.random.Generator) -> np.ndarray:
    """Votes per model pair (R, P) after ``votes`` votes under ``policy``."""
    study = Study(scenario, reps, rng)
    for _ in range(votes):
        study.vote(policy)
    return study.wins_lo + study.wins_hi + study.ties


def run(scenario: Scenario, policy: str, reps: int, rng: np.random.Generator, *, win_width: float,
        bt_width: float, every: int, max_votes: int) -> dict[str, np.ndarray]:
    """Votes at which each target is first met, per replicate (max_votes + 1: not met within max_votes)."""
    study = Study(scenario, reps, rng)
    met = {t: np.full(reps, max_votes + 1) for t in TARGETS}
    theta = np.zeros((reps, study.m - 1))
    for t in range(1, max_votes + 1):
        study.vote(policy)
        if t % every:
            continue
        if all((met[target] <= max_votes).all() for target in TARGETS):
            break
        decided = study.wins_lo + study.wins_hi
        ww = np.where(decided > 0, wilson_width(study.wins_lo, np.maximum(decided, 1)), 1.0)
        bw, theta = bt_widths(study.wins_lo, study.wins_hi, study.pairs, study.m, theta)
        for target, value, width in (("win_max", ww.max(axis=1), win_width), ("win_mean", ww.mean(axis=1), win_width),
                                     ("bt_max", bw.max(axis=1), bt_width), ("bt_mean", bw.mean(axis=1), bt_width)):
            newly = (met[target] > max_votes) & (value < width)
            met[target][newly] = t
    return met


def _summary(votes: np.ndarray, max_votes: int) -> dict[str, Any]:
    return {"mean": float(votes.mean()), "se": float(votes.std(ddof=1) / np.sqrt(len(votes))),
            "median": float(np.median(votes)), "not_met": int((votes > max_votes).sum())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--reps-large", type=int, default=300, help="replicates of scenarios with over 6 models")
    parser.add_argument("--quick", action="store_true", help="two scenarios only")
    parser.add_argument("--win-width", type=float, default=0.2, help="target width of every win-rate interval")
    parser.add_argument("--bt-width", type=float, default=0.5, help="target width of every rating interval")
    parser.add_argument("--every", type=int, default=10, help="check the targets every this many votes")
    parser.add_argument("--max-votes", type=int, default=None, help="override every scenario's max_votes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.time()
    rows = []
    for k, scenario in enumerate(QUICK if args.quick else SCENARIOS):
        reps = args.reps if len(scenario.strengths) <= 6 else args.reps_large
        max_votes = args.max_votes or scenario.max_votes
        result: dict[str, Any] = {"scenario": asdict(scenario), "reps": reps, "max_votes": max_votes}
        for j, policy in enumerate(POLICIES):
            # Same seed per scenario for every policy: the studies differ only by the policy's choices.
            rng = np.random.default_rng([args.seed, k, j])
            tic = time.time()
            met = run(scenario, policy, reps, rng, win_width=args.win_width, bt_width=args.bt_width,
                      every=args.every, max_votes=max_votes)
            result[policy] = {t: _summary(met[t], max_votes) for t in TARGETS}
            result[policy]["seconds"] = round(time.time() - tic, 1)
        for name in ("adaptive", "arena_eq9"):
            for baseline in ("random", "least_voted"):
                result[f"{name}_saving_vs_{baseline}"] = {
                    t: 1 - result[name][t]["mean"] / result[baseline][t]["mean"] for t in TARGETS}
        rows.append(result)
        print(f"{scenario.name}: {time.time() - started:.0f} s", flush=True)
    meta = {"reps": args.reps, "reps_large": args.reps_large, "win_width": args.win_width, "bt_width": args.bt_width,
            "every": args.every, "seed": args.seed, "seconds": round(time.time() - started, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "python": platform.python_version(),
            "published_saving_vs_random": PUBLISHED}
    out = {"meta": meta, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptive.json").write_text(json.dumps(out, indent=2))
    (args.out / "adaptive.md").write_text(render(out))
    print(render(out))
    return out


def render(out: dict[str, Any]) -> str:
    meta = out["meta"]
    names = {"win_max": f"every win rate's CI < {meta['win_width']:g}",
             "win_mean": f"average win-rate CI < {meta['win_width']:g}",
             "bt_max": f"every rating's CI < {meta['bt_width']:g}",
             "bt_mean": f"average rating CI < {meta['bt_width']:g}"}
    lines = [f"Votes until the target holds: mean (s.e.) per cell over the scenario's replicates (n); checked every "
             f"{meta['every']} votes. Savings = 1 - policy / baseline, of the means.", "",
             "| scenario (n) | target | random | least-voted | arena_eq9 | adaptive | adaptive saving vs random "
             "| adaptive saving vs least-voted | arena_eq9 saving vs random | published (vs random) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        for t in TARGETS:
            cells = [f"{r[p][t]['mean']:.0f} ({r[p][t]['se']:.0f})" + (f", {r[p][t]['not_met']} unmet"
                                                                      if r[p][t]["not_met"] else "")
                     for p in POLICIES]
            published = f"{PUBLISHED[t]:.0%}" if t in PUBLISHED else ""
            lines.append(f"| {r['scenario']['name']} ({r['reps']}) | {names[t]} | {' | '.join(cells)} | "
                         f"{r['adaptive_saving_vs_random'][t]:.1%} | {r['adaptive_saving_vs_least_voted'][t]:.1%} | "
                         f"{r['arena_eq9_saving_vs_random'][t]:.1%} | {published} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
