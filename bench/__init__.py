"""Benchmarks: what BlindPair does and how its cost grows, each figure beside a floor measured in the same run.

Run by hand (``python -m bench.<name> --help``) or all at once with ``make bench`` (``python -m bench.run_all``).
Results land in ``bench/results/`` (JSON + a markdown table per benchmark); BENCHMARKS.md records them with the
machine, the date and what limits each figure. The test suite only checks that each benchmark runs at a tiny
size (tests/bench/); no test asserts a timing.
"""
