"""Error rates of the verdict under the study's real dependence: votes crossed by prompt and by rater.

Simulates studies whose prompt and rater population is exactly 50/50 (so every "significant" is false) over a
grid of prompt and rater heterogeneity, numbers of prompts and raters, and votes per rater, and reports the
family-wise rate of a false "significant" on any of six criteria after Holm, for

- **clustered**: the verdict BlindPair shows (``app.stats.pairwise.preference_table``: two-way prompt x rater
  cluster-robust score test, Holm across the criteria), and
- **independent**: the exact sign test on pooled votes with Holm (what every "significant" was before).

Then the cost of honesty: power of both under a seed-like alternative (the fast model clearly preferred, with
the same heterogeneity). The rates come with their Monte-Carlo standard error.

Usage: .venv/bin/python -m bench.verdicts [--reps 2000] [--quick]
Writes bench/results/verdicts.{md,json}.
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
import pandas as pd

from app.stats.pairwise import preference_table
from app.stats.significance import adjust_pvalues

CRITERIA = ("video_text_relevance", "appearance_distortion", "appearance_aesthetics", "motion_naturalness",
            "motion_amplitude", "overall_quality")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Design:
    name: str
    n_prompts: int
    n_raters: int
    votes_per_rater: int
    prompt_sd: float = 0.0  # logit sd of a prompt's pull towards one model, the same on every criterion
    rater_sd: float = 0.0  # logit sd of a rater's taste, the same on every criterion
    effect: float = 0.0  # logit of the fast model's advantage (0: the null)
    tie_rate: float = 0.2

    @property
    def n_votes(self) -> int:
        return self.n_raters * self.votes_per_rater


def simulate(design: Design, rng: np.random.Generator) -> pd.DataFrame:
    """One study's vote frame (vote x criterion rows) drawn from crossed random effects."""
    prompt_re = rng.normal(0, design.prompt_sd, design.n_prompts)
    rater_re = rng.normal(0, design.rater_sd, design.n_raters)
    n = design.n_votes
    rater = np.repeat(np.arange(design.n_raters), design.votes_per_rater)
    prompt = rng.integers(0, design.n_prompts, n)
    logit = design.effect + prompt_re[prompt] + rater_re[rater]
    k = len(CRITERIA)
    p_a = 1 / (1 + np.exp(-logit))
    a_wins = rng.random((n, k)) < p_a[:, None]
    tie = rng.random((n, k)) < design.tie_rate
    winner = np.where(tie, "tie", np.where(a_wins, "model_a", "model_b"))
    return pd.DataFrame({
        "criterion": np.tile(np.array(CRITERIA, dtype=object), n),
        "model_a": "fast", "model_b": "teacher",
        "winner": winner.ravel(),
        "prompt": np.repeat(prompt, k),
        "evaluator": np.repeat(rater, k),
    })


def verdicts(frame: pd.DataFrame, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """Any criterion significant after Holm (clustered, pooled sign test), and the share of single criterion
    tests significant at alpha without adjustment (clustered, pooled)."""
    table = preference_table(frame, ["criterion", "model_a", "model_b"])
    p_c, p_i = table["p_value"].to_numpy(dtype=float), table["p_independent"].to_numpy(dtype=float)
    return (float((adjust_pvalues(p_c, "holm") < alpha).any()), float((adjust_pvalues(p_i, "holm") < alpha).any()),
            float((p_c < alpha).mean()), float((p_i < alpha).mean()))


def rates(design: Design, reps: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits = np.array([verdicts(simulate(design, rng)) for _ in range(reps)], dtype=float)
    out: dict[str, float] = {"reps": reps}
    for name, column in (("clustered", 0), ("independent", 1), ("clustered_per_test", 2),
                         ("independent_per_test", 3)):
        rate = float(hits[:, column].mean())
        out[name] = rate
        out[f"{name}_mc_se"] = math.sqrt(max(rate * (1 - rate), 1e-12) / reps)
    return out


NULL_DESIGNS = [
    Design("100 prompts x 10 votes, no heterogeneity", 100, 50, 20),
    Design("100 prompts x 10 votes, prompt sd 0.5", 100, 50, 20, prompt_sd=0.5),
    Design("100 prompts x 30 votes, prompt sd 0.5", 100, 50, 60, prompt_sd=0.5),
    Design("100 prompts x 30 votes, prompt sd 1.0", 100, 50, 60, prompt_sd=1.0),
    Design("30 raters x 60 votes, rater sd 0.3", 100, 30, 60, rater_sd=0.3),
    Design("30 raters x 60 votes, rater and prompt sd 0.5", 100, 30, 60, prompt_sd=0.5, rater_sd=0.5),
    Design("small: 12 prompts, 8 raters x 30 votes, sd 0.5", 12, 8, 30, prompt_sd=0.5, rater_sd=0.5),
    Design("two raters with strong tastes, 200 votes each", 100, 2, 200, rater_sd=1.5),
]
# The seed's question: the fast model clearly preferred (logit 0.5 = 62% of decided votes at the median).
POWER_DESIGNS = [
    Design("seed-like: 100 prompts, 30 raters x 20 votes, sd 0.5, effect 0.5", 100, 30, 20, prompt_sd=0.5,
           rater_sd=0.5, effect=0.5),
    Design("seed-like, smaller effect 0.3", 100, 30, 20, prompt_sd=0.5, rater_sd=0.5, effect=0.3),
    Design("independent votes, effect 0.3", 100, 30, 20, effect=0.3),
]


def run(reps: int, quick: bool = False) -> dict[str, list[dict[str, Any]]]:
    null = NULL_DESIGNS[:3] if quick else NULL_DESIGNS
    power = POWER_DESIGNS[:1] if quick else POWER_DESIGNS
    out: dict[str, list[dict[str, Any]]] = {"null": [], "power": []}
    for kind, designs in (("null", null), ("power", power)):
        for i, design in enumerate(designs):
            t0 = time.perf_counter()
            row: dict[str, Any] = {**asdict(design), **rates(design, reps, seed=1000 * i + 7)}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            out[kind].append(row)
            print(f"{kind:5} {design.name:60} clustered {row['clustered']:.3f}  independent {row['independent']:.3f}"
                  f"  ({row['seconds']} s)", flush=True)
    return out


def markdown(result: dict[str, list[dict[str, Any]]], reps: int) -> str:
    lines = [f"### Family-wise false \"significant\" over six criteria (Holm, alpha 5%), {reps} replicates",
             "", "| design | votes | clustered verdict | pooled sign test | one test at 5%: clustered | pooled |",
             "|---|---|---|---|---|---|"]
    for r in result["null"]:
        votes = int(r["n_raters"]) * int(r["votes_per_rater"])
        lines.append(f"| {r['name']} | {votes} | {100 * float(r['clustered']):.1f}% "
                     f"± {100 * float(r['clustered_mc_se']):.1f} | "
                     f"{100 * float(r['independent']):.1f}% ± {100 * float(r['independent_mc_se']):.1f} | "
                     f"{100 * float(r['clustered_per_test']):.1f}% | {100 * float(r['independent_per_test']):.1f}% |")
    lines += ["", "### Power: any criterion significant when the fast model is truly preferred", "",
              "| design | clustered verdict | pooled sign test |", "|---|---|---|"]
    for r in result["power"]:
        lines.append(f"| {r['name']} | {100 * float(r['clustered']):.1f}% | "
                     f"{100 * float(r['independent']):.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="three null designs and one power design")
    args = parser.parse_args(argv)
    result = run(args.reps, quick=args.quick)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verdicts.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "verdicts.md").write_text(markdown(result, args.reps))
    print(markdown(result, args.reps))


if __name__ == "__main__":
    main()
