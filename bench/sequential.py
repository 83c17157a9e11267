"""Decide sooner, honestly: error rates and votes at stopping of the plan's sequential rule, by simulation.

Synthetic two-model studies with known truth: per-criterion preference shares for the fast model, prompt-level
correlation (a prompt's logit pull, shared by every criterion), rater taste (logit, shared by every criterion),
ties, and a share of careless raters who answer at random. Votes arrive one at a time (raters in sessions,
prompts least-voted-first) and every rule is applied after EVERY vote (continuous peeking). Per scenario:

- **sequential**: the plan's rule (``app.stats.sequential``): anytime-valid confidence sequence per criterion
  (alpha_early), and at the vote budget one clustered fixed-sample test (alpha_final) for what is still open;
- **fixed**: the fixed-sample design with the same alpha and power: one clustered test after n_fixed votes;
- **naive**: the clustered fixed-sample test (Bonferroni over criteria) repeated after every vote from the same
  minimum of prompts and raters, stopping at the first "non-inferior" - what watching the p-value does.

Reported: the family-wise rate of a false "non-inferior" when every criterion sits exactly at the margin (must be
at most alpha within Monte-Carlo error), power (every criterion decided non-inferior), and the votes at
stopping (mean, median, 90th percentile) against the fixed design's n_fixed. The truth's shares are population
shares (prompts and raters integrated out, careless raters included), calibrated by quadrature.

Usage: .venv/bin/python -m bench.sequential [--reps 1000] [--quick]
Writes bench/results/sequential.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import norm

from app.stats.clustered import Clustering, share_inference
from app.stats.sequential import (
    MIN_PROMPTS,
    MIN_RATERS,
    fixed_sample_decided,
    mixture_boundary,
    plan_design,
    score_path,
)

RESULTS = Path(__file__).resolve().parent / "results"
MARGIN = 0.45
ALPHA = 0.05
POWER = 0.8
ASSUMED = 0.5  # the plan's power is for "the fast model is no worse" (a share of 50%) against a 45% margin
K = 6  # criteria, as the default study
# The seed's truth, per criterion: the fast model clearly preferred on every criterion; MIXED has one criterion
# (motion amplitude) about even, which the study must still decide before it can stop.
SEED_SHARES = (0.66, 0.70, 0.63, 0.67, 0.60, 0.65)
MIXED_SHARES = (0.66, 0.70, 0.63, 0.67, 0.53, 0.65)


@dataclass(frozen=True)
class Scenario:
    name: str
    shares: tuple[float, ...]
    prompt_sd: float = 0.5
    rater_sd: float = 0.5
    tie_rate: float = 0.2
    careless: float = 0.1
    n_prompts: int = 100
    votes_per_session: int = 10


def _calibrate(share: float, s: Scenario) -> float:
    """The logit intercept whose population share (prompts and raters integrated out, careless raters at 1/2)
    is ``share``: two-dimensional Gauss-Hermite quadrature."""
    if s.careless >= 1:
        return 0.0
    target = (share - 0.5 * s.careless) / (1 - s.careless)
    if not 0 < target < 1:
        raise ValueError(f"share {share} is out of reach with {s.careless:.0%} careless raters")
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    sd = math.hypot(s.prompt_sd, s.rater_sd)  # the sum of two normal effects is normal
    return brentq(lambda b: float(np.sum(w * expit(b + sd * x))) - target, -10, 10)


def simulate(s: Scenario, n_votes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One study's first ``n_votes`` votes in arrival order: prompt, rater and per criterion the outcome code
    (1 fast wins, 0 reference wins, 2 tie)."""
    betas = np.array([_calibrate(p, s) for p in s.shares])
    n_raters = n_votes // s.votes_per_session + 1
    rater = np.repeat(np.arange(n_raters), s.votes_per_session)[:n_votes]
    # least-voted-first: prompts in rounds, each round a fresh random order
    rounds = n_votes // s.n_prompts + 1
    prompt = np.concatenate([rng.permutation(s.n_prompts) for _ in range(rounds)])[:n_votes]
    u = rng.normal(0, s.prompt_sd, s.n_prompts)[prompt]
    w = rng.normal(0, s.rater_sd, n_raters)[rater]
    careless = (rng.random(n_raters) < s.careless)[rater]
    p_win = np.where(careless[:, None], 0.5, expit(betas[None, :] + (u + w)[:, None]))
    win = rng.random(p_win.shape) < p_win
    tie = rng.random(p_win.shape) < s.tie_rate
    return {"prompt": prompt.astype(np.int64), "rater": rater.astype(np.int64),
            "outcome": np.where(tie, 2, win.astype(int))}


def _ad(outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (outcome == 1).astype(float), (outcome != 2).astype(float)  # ties dropped: the plan's default rule


def _final_lo(study: dict[str, np.ndarray], c: int, n: int, alpha: float) -> tuple[float, float]:
    a, d = _ad(study["outcome"][:n, c])
    inf = share_inference(a, d, np.zeros(n, dtype=np.int64), 1,
                          Clustering(study["prompt"][:n], study["rater"][:n]), confidence=1 - alpha)
    return float(inf.lo[0]), float(inf.hi[0])


def run_replicate(s: Scenario, rng: np.random.Generator, *, budget: int, n_fixed: int) -> dict[str, Any]:
    design = plan_design(alpha=ALPHA, power=POWER, assumed=ASSUMED, threshold=MARGIN, n_questions=len(s.shares))
    n_max = max(budget, n_fixed)
    study = simulate(s, n_max, rng)
    clustering_cut = Clustering(study["prompt"][:budget], study["rater"][:budget])
    z_naive = norm.isf(ALPHA / len(s.shares) / 2)
    stops, seq_ni, seq_inf, naive_stop = [], [], [], []
    for c in range(len(s.shares)):
        a, d = _ad(study["outcome"][:budget, c])
        path = score_path(a, d, clustering_cut, MARGIN)
        ready = (path.prompts >= MIN_PROMPTS) & (path.raters >= MIN_RATERS) & np.isfinite(path.v)
        v = np.nan_to_num(path.v)
        crossed = ready & (path.s ** 2 >= mixture_boundary(v, design.alpha_early, design.rho) ** 2) & (path.s != 0)
        hit = np.flatnonzero(crossed)
        if hit.size:
            stops.append(int(path.row[hit[0]]) + 1)
            seq_ni.append(path.s[hit[0]] > 0)
            seq_inf.append(path.s[hit[0]] < 0)
        else:
            lo, hi = _final_lo(study, c, budget, design.alpha_final)
            stops.append(budget)
            seq_ni.append(lo > MARGIN)
            seq_inf.append(hi < MARGIN)
        # naive: the clustered z statistic against the margin after every vote, first upward crossing stops
        up = ready & (path.s > 0) & (path.s ** 2 >= z_naive ** 2 * v) & (v > 0)
        naive_stop.append(int(path.row[np.flatnonzero(up)[0]]) + 1 if up.any() else 0)
    lo_f = [_final_lo(study, c, n_fixed, ALPHA / len(s.shares)) for c in range(len(s.shares))]
    return {
        "seq_votes": max(stops), "seq_ni_share": float(np.mean(seq_ni)),
        "fixed_ni_share": float(np.mean([lo > MARGIN for lo, _ in lo_f])),
        "seq_any_ni": any(seq_ni), "seq_all_ni": all(seq_ni),
        "seq_any_inferior": any(seq_inf), "seq_early": all(t < budget for t in stops),
        "fixed_any_ni": any(lo > MARGIN for lo, _ in lo_f), "fixed_all_ni": all(lo > MARGIN for lo, _ in lo_f),
        "naive_any_ni": any(t > 0 for t in naive_stop),
    }


def sizes(k: int = K, *, tie_rate: float = 0.2, deff: float = 1.0) -> tuple[int, int]:
    """(sequential budget, fixed-sample n) in votes, both for the same alpha, power and planned share."""
    design = plan_design(alpha=ALPHA, power=POWER, assumed=ASSUMED, threshold=MARGIN, n_questions=k, deff=deff)
    budget = math.ceil(design.budget_decided / (1 - tie_rate))
    fixed = fixed_sample_decided(ASSUMED, MARGIN, alpha=ALPHA / k, power=POWER, deff=deff)
    return budget, math.ceil(fixed / (1 - tie_rate))


def run_scenario(s: Scenario, reps: int, seed: int, *, deff: float) -> dict[str, Any]:
    budget, n_fixed = sizes(len(s.shares), tie_rate=s.tie_rate, deff=deff)
    rng = np.random.default_rng(seed)
    out = [run_replicate(s, rng, budget=budget, n_fixed=n_fixed) for _ in range(reps)]
    votes = np.array([o["seq_votes"] for o in out])

    def rate(key: str) -> dict[str, float]:
        p = float(np.mean([o[key] for o in out]))
        return {"rate": p, "mc_se": math.sqrt(max(p * (1 - p), 1e-12) / reps)}

    return {"scenario": asdict(s), "reps": reps, "budget": budget, "n_fixed": n_fixed,
            "seq_votes_mean": float(votes.mean()), "seq_votes_median": float(np.median(votes)),
            "seq_votes_p90": float(np.quantile(votes, 0.9)), "votes_ratio": float(votes.mean() / n_fixed),
            "seq_early_share": rate("seq_early")["rate"],
            "seq_power_per_criterion": float(np.mean([o["seq_ni_share"] for o in out])),
            "fixed_power_per_criterion": float(np.mean([o["fixed_ni_share"] for o in out])),
            **{k: rate(k) for k in ("seq_any_ni", "seq_all_ni", "seq_any_inferior", "fixed_any_ni", "fixed_all_ni",
                                    "naive_any_ni")}}


def scenarios(quick: bool) -> list[Scenario]:
    at = tuple([MARGIN] * K)
    grid = [Scenario("null at margin, prompt+rater sd 0.5, 20% ties, 10% careless", at),
            Scenario("null at margin, no clustering", at, prompt_sd=0.0, rater_sd=0.0, careless=0.0),
            Scenario("null at margin, prompt sd 1.0, rater sd 0.7", at, prompt_sd=1.0, rater_sd=0.7),
            Scenario("seed's truth (fast model clearly preferred)", SEED_SHARES),
            Scenario("mixed: clearly preferred on five, 53% on one", MIXED_SHARES),
            Scenario("planned alternative (50% on every criterion)", tuple([0.5] * K))]
    if not quick:
        grid += [Scenario(f"all criteria at {p:.3f}", tuple([p] * K)) for p in (0.40, 0.475, 0.55, 0.60)]
    return grid


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Sequential plan vs fixed-sample design: {meta['k']} criteria, non-inferiority margin {MARGIN}, "
             f"alpha {ALPHA} (family-wise), power {POWER} at a share of {ASSUMED}, plan design effect "
             f"{meta['deff']}; {meta['reps']} replicates per row; every rule applied after every vote.", "",
             "| truth | false/true 'non-inferior' (any criterion) seq | fixed | naive peeking | all NI seq "
             "| all NI fixed | NI per criterion seq / fixed | votes seq mean / median / p90 | fixed n | seq/fixed "
             "| stopped early |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def pct(k: str, r: dict[str, Any] = r) -> str:
            return f"{100 * r[k]['rate']:.1f}% ± {100 * r[k]['mc_se']:.1f}"
        lines.append(f"| {r['scenario']['name']} | {pct('seq_any_ni')} | {pct('fixed_any_ni')} | "
                     f"{pct('naive_any_ni')} | {pct('seq_all_ni')} | {pct('fixed_all_ni')} | "
                     f"{100 * r['seq_power_per_criterion']:.0f}% / {100 * r['fixed_power_per_criterion']:.0f}% | "
                     f"{r['seq_votes_mean']:.0f} / {r['seq_votes_median']:.0f} / {r['seq_votes_p90']:.0f} | "
                     f"{r['n_fixed']} | {r['votes_ratio']:.2f} | {100 * r['seq_early_share']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="the five headline scenarios only")
    parser.add_argument("--deff", type=float, default=1.5, help="design effect both designs are planned with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = [run_scenario(s, args.reps, args.seed + i, deff=args.deff) for i, s in enumerate(scenarios(args.quick))]
    meta = {"k": K, "reps": args.reps, "deff": args.deff, "seconds": round(time.perf_counter() - t0, 1)}
    md = markdown(rows, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sequential.md").write_text(md)
    (args.out / "sequential.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(md)
    print(f"{meta['seconds']} s")
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
