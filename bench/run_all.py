"""Run every benchmark and gather their tables into ``bench/results/ALL.md`` (``make bench``).

    python -m bench.run_all                   # full sizes, ~15 minutes on a 2-core machine
    python -m bench.run_all --tiny            # every benchmark at its tiny size (what the tests run)
    python -m bench.run_all --only analysis gif_encoding
    python -m bench.run_all --speed           # and the speed-under-load ones (issue 16): 15-25 minutes more

The GPU benchmark runs only where CUDA is available (or with --tiny); elsewhere its table says how to run it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import REPO_ROOT, describe_machine, machine

BENCHMARKS = ("analysis", "gif_encoding", "generation", "vote_path", "gpu_generation", "metrics", "pair_compression",
              "qc")
# Speed under load (issue 16): servers under a launch burst and an open loop on both databases, the HTTP layer's
# pieces, the peer tool (its own venv: python -m bench.peer_potato --install) and the QC re-judging's growth.
# Long, and they need PostgreSQL and the peer's venv, so only with --speed (or named in --only).
SPEED = ("launch", "http_costs", "peer_potato", "rejudging")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def selected(only: list[str], *, speed: bool) -> list[str]:
    """The benchmarks to run, in order: those named, then (``speed``) the speed ones not named already."""
    return list(only) + [n for n in SPEED if speed and n not in only]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS + SPEED, default=list(BENCHMARKS))
    p.add_argument("--speed", action="store_true", help=f"also run {', '.join(SPEED)}")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    sections = [f"# Benchmark run\n\nMachine: {describe_machine(info)}\n"]
    failed = []
    for name in selected(args.only, speed=args.speed):
        extra = ["--tiny"] if args.tiny else []
        if name == "gpu_generation" and not args.tiny and not _cuda():
            sections.append("## Generation on the GPU\n\nNo CUDA GPU on this machine: run "
                            "`python -m bench.gpu_generation` (or `python scripts/gpu_check.py`) where there is one.\n")
            continue
        module = __import__(f"bench.{name}", fromlist=["main"])
        t0 = time.perf_counter()
        print(f"=== {name} ===", flush=True)
        try:
            report = module.main([*extra, "--results-dir", str(out_dir)])
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            failed.append(name)
            sections.append(f"## {name}\n\nFAILED: {type(exc).__name__}: {exc}\n")
            print(f"{name} failed: {exc!r}", file=sys.stderr, flush=True)
            continue
        sections.append(report.markdown() + f"\n_{name} took {time.perf_counter() - t0:.0f} s._\n")
    (out_dir / "ALL.md").write_text("\n".join(sections))
    print(f"written: {out_dir / 'ALL.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
