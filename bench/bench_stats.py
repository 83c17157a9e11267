"""Time ``compute_results`` on synthetic vote frames (10k, 100k, 1M rows by default). No assertions.

Usage: .venv/bin/python bench/bench_stats.py [--rows 10000 100000 1000000] [--models 2] [--n-boot 1000]
Frame generation is timed separately; each size is run ``--repeat`` times and the best time is reported,
since other processes share the CPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.criteria import DEFAULT_CRITERIA  # noqa: E402
from app.stats import compute_results, synthetic_votes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    models = tuple(f"M{k + 1}" for k in range(args.models))
    n_crit = len(DEFAULT_CRITERIA)
    print(f"python {platform.python_version()}, {platform.machine()}, models={args.models}, n_boot={args.n_boot}")
    print(f"{'rows':>10} {'votes':>9} {'generate s':>11} {'compute_results s (best)':>25}")
    for rows in args.rows:
        t0 = time.perf_counter()
        votes = synthetic_votes(max(1, rows // n_crit), models=models, seed=0)
        generate = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            compute_results(votes, n_boot=args.n_boot, seed=0)
            best = min(best, time.perf_counter() - t0)
        print(f"{len(votes):>10} {votes['vote_id'].nunique():>9} {generate:>11.2f} {best:>25.2f}")


if __name__ == "__main__":
    main()
