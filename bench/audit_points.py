"""Monte-Carlo checks of four figures the audit of issue 20 found misleading: "do themes differ", position bias,
Bradley-Terry intervals under rater tastes, and Krippendorff's alpha beside raw agreement. No assertions.

Usage: .venv/bin/python bench/audit_points.py [--reps 1000] [--seed 0] [--only themes position ratings alpha]

Each row gives the rejection (or coverage) rate of the method the app now uses beside the one it replaced,
over ``--reps`` simulated studies; the Monte-Carlo standard error of a rate p is sqrt(p (1 - p) / reps)
(about 0.7 points at 5% with 1000 replicates).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2_contingency

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.stats.agreement import agreement_by_criterion  # noqa: E402
from app.stats.position import position_bias  # noqa: E402
from app.stats.ratings import bradley_terry  # noqa: E402
from app.stats.themes import groups_differ  # noqa: E402

cat = pd.Categorical.from_codes


def themes(reps: int, seed: int) -> None:
    """No theme effect (and some), prompt effects of several sizes: 60 prompts over 5 themes, 20 votes each."""
    print("\n## Do themes differ (rejection rate at 5%)\n")
    print("| prompt sd | theme effect | permutation across prompts (now) | chi-square on pooled votes (before) |")
    print("|---|---|---|---|")
    n_prompts, per_prompt, n_themes = 60, 20, 5
    for k, (sd, effect) in enumerate([(s, e) for s in (0.0, 0.3, 0.5, 1.0) for e in (0.0, 0.3, 0.6)]):
        rng = np.random.default_rng([seed, k])
        theme = rng.permuted(np.tile(np.arange(n_prompts) % n_themes, (reps, 1)), axis=1)
        logit = rng.normal(0, sd, (reps, n_prompts)) + effect * np.linspace(-1, 1, n_themes)[theme]
        logit = np.repeat(logit, per_prompt, axis=1).ravel()
        a_wins = rng.random(logit.size) < 1 / (1 + np.exp(-logit))
        tie = rng.random(logit.size) < 0.2
        study = np.repeat(np.arange(reps), n_prompts * per_prompt)
        n = logit.size
        frame = pd.DataFrame({
            "criterion": cat(study, [f"s{r}" for r in range(reps)]),
            "model_a": cat(np.zeros(n, dtype=int), ["A", "B"]), "model_b": cat(np.ones(n, dtype=int), ["A", "B"]),
            "winner": cat(np.where(tie, 2, np.where(a_wins, 0, 1)), ["model_a", "model_b", "tie"]),
            "prompt": cat(np.tile(np.repeat(np.arange(n_prompts), per_prompt), reps) + study * n_prompts,
                          [f"p{j}" for j in range(reps * n_prompts)]),
            "theme": cat(np.repeat(theme.ravel(), per_prompt), [f"t{j}" for j in range(n_themes)]),
        })
        now = np.mean([r["p_value"] < 0.05 for r in groups_differ(frame, "theme", n_perm=1000, seed=seed)])
        decided = frame[frame["winner"] != "tie"]
        before = np.mean([chi2_contingency(pd.crosstab(part["theme"], part["winner"]).to_numpy(),
                                           correction=False).pvalue < 0.05
                          for _, part in decided.groupby("criterion", observed=True)])
        print(f"| {sd} | {effect} | {100 * now:.1f}% | {100 * before:.1f}% |")


def _position_study(rng: np.random.Generator, *, n: int = 600, p_a: float = 0.5, a_left: float = 0.5,
                    left: float = 0.0, rater_left_sd: float = 0.0) -> pd.DataFrame:
    prompt, rater = rng.integers(50, size=n), rng.integers(25, size=n)
    prompt_re, rater_re, rater_left = rng.normal(0, 0.5, 50), rng.normal(0, 0.3, 25), rng.normal(0, rater_left_sd, 25)
    shown_left = rng.random(n) < a_left
    logit = (np.log(p_a / (1 - p_a)) + prompt_re[prompt] + rater_re[rater]
             + np.where(shown_left, 1, -1) * (left + rater_left[rater]))
    a_wins = rng.random(n) < 1 / (1 + np.exp(-logit))
    tie = rng.random(n) < 0.1
    models = ["A", "B"]
    return pd.DataFrame({
        "criterion": cat(np.zeros(n, dtype=int), ["c"]), "model_a": cat(np.zeros(n, dtype=int), models),
        "model_b": cat(np.ones(n, dtype=int), models), "left_model": cat(np.where(shown_left, 0, 1), models),
        "side": cat(np.where(tie, 2, np.where(a_wins == shown_left, 0, 1)), ["left", "right", "tie"]),
        "winner": cat(np.where(tie, 2, np.where(a_wins, 0, 1)), ["model_a", "model_b", "tie"]),
        "prompt": cat(prompt, [f"p{k}" for k in range(50)]), "evaluator": cat(rater, [f"e{k}" for k in range(25)]),
    })


def position(reps: int, seed: int) -> None:
    """600 decided-or-tied votes on one pair, 50 prompts (sd 0.5), 25 raters (sd 0.3), 10% ties."""
    print("\n## Position bias (rejection rate at 5%)\n")
    print("| design | conditional on the models, clustered (now) | left share, sign test (before) |")
    print("|---|---|---|")
    designs = [
        ("no bias, P(A wins) 0.5", {}),
        ("no bias, P(A wins) 0.8, A left 60%", {"p_a": 0.8, "a_left": 0.6}),
        ("no bias on average, raters' own side tastes sd 0.5", {"rater_left_sd": 0.5}),
        ("left pull 0.25 (logit), P(A wins) 0.5", {"left": 0.25}),
        ("left pull 0.25, P(A wins) 0.88", {"p_a": 0.88, "left": 0.25}),
        ("left pull 0.25, P(A wins) 0.95", {"p_a": 0.95, "left": 0.25}),
        ("left pull 0.4, P(A wins) 0.88", {"p_a": 0.88, "left": 0.4}),
    ]
    for k, (name, design) in enumerate(designs):
        rng = np.random.default_rng([seed, 100 + k])
        now = before = 0
        for _ in range(reps):
            pb = position_bias(_position_study(rng, **design), None, ["c"])
            now += pb["p_value"] < 0.05
            before += binomtest(pb["left_wins"], pb["left_wins"] + pb["right_wins"]).pvalue < 0.05
        print(f"| {name} | {100 * now / reps:.1f}% | {100 * before / reps:.1f}% |")


def _tastes(rng: np.random.Generator, rater_sd: float, n_raters: int) -> pd.DataFrame:
    models = np.array(["A", "B", "C"])
    pair = np.array([(0, 1), (1, 2), (0, 2)])[rng.integers(3, size=900)]
    prompt, rater = rng.integers(60, size=900), rng.integers(n_raters, size=900)
    taste, pull = rng.normal(0, rater_sd, (n_raters, 3)), rng.normal(0, 0.5, (60, 3))
    logit = (taste[rater, pair[:, 0]] - taste[rater, pair[:, 1]] + pull[prompt, pair[:, 0]]
             - pull[prompt, pair[:, 1]])
    a_wins, tie = rng.random(900) < 1 / (1 + np.exp(-logit)), rng.random(900) < 0.2
    return pd.DataFrame({"model_a": models[pair[:, 0]], "model_b": models[pair[:, 1]],
                         "winner": np.where(tie, "tie", np.where(a_wins, "model_a", "model_b")),
                         "prompt": prompt.astype(str), "evaluator": rater.astype(str), "criterion": "c"})


def ratings(reps: int, seed: int) -> None:
    """Three models equal in the population; 900 votes, 60 prompts (sd 0.5 per model), raters with own tastes."""
    print("\n## Bradley-Terry 95% interval of a model: coverage of its population rating (1000)\n")
    print("| raters, taste sd | prompt x rater (now) | prompts only | votes only |")
    print("|---|---|---|---|")
    reps = max(1, reps // 5)  # 200 bootstrap replicates per study and method
    for k, (n_raters, sd) in enumerate([(20, 0.5), (20, 1.0), (10, 0.7), (40, 0.5)]):
        rng = np.random.default_rng([seed, 200 + k])
        covered = {"two-way": 0, "prompt": 0, "vote": 0}
        for _ in range(reps):
            frame = _tastes(rng, sd, n_raters)
            for name, kw in (("two-way", {}), ("prompt", {"rater": None}), ("vote", {"prompt": None, "rater": None})):
                block = bradley_terry(frame, n_boot=200, seed=1, **kw)
                lo, hi = next(r["ci"] for r in block["ratings"] if r["model"] == "A")
                covered[name] += lo <= 1000 <= hi
        print(f"| {n_raters}, {sd} | " + " | ".join(f"{100 * covered[m] / reps:.1f}%" for m in covered) + " |")


def alpha(reps: int, seed: int) -> None:
    """Raters sharing a latent preference per pair; alpha nominal and ordinal, raw agreement."""
    print("\n## Krippendorff's alpha beside raw agreement (means over studies)\n")
    print("| design | nominal alpha | ordinal alpha | raw pairwise agreement |")
    print("|---|---|---|---|")
    rng = np.random.default_rng([seed, 300])
    for name, mean, pair_sd, noise in (("shared latent preference", 0.0, 1.5, 0.7),
                                       ("nearly every vote for one model", 1.8, 0.2, 0.8)):
        got = []
        for _ in range(max(1, reps // 10)):
            latent = rng.normal(mean, pair_sd, 100)
            score = latent[:, None] + rng.normal(0, noise, (100, 3))  # 100 pairs, 3 raters each
            winner = np.where(score > 0.5, "model_b", np.where(score < -0.5, "model_a", "tie"))
            frame = pd.DataFrame({"criterion": "c", "prompt": np.repeat([f"p{k}" for k in range(100)], 3),
                                  "model_a": "A", "model_b": "B", "evaluator": np.tile(["e0", "e1", "e2"], 100),
                                  "winner": winner.ravel()})
            a = agreement_by_criterion(frame, ["c"])["c"]
            got.append((a["alpha"], a["alpha_ordinal"], a["pairwise_agreement"]))
        m = np.nanmean(np.array(got, dtype=float), axis=0)
        print(f"| {name} | {m[0]:.2f} | {m[1]:.2f} | {100 * m[2]:.0f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=["themes", "position", "ratings", "alpha"])
    args = parser.parse_args()
    for name in args.only:
        t0 = time.perf_counter()
        {"themes": themes, "position": position, "ratings": ratings, "alpha": alpha}[name](args.reps, args.seed)
        print(f"\n({name}: {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
