"""The QC bar by simulation, at a tiny size (the full run, with its numbers, is bench/qc.py and BENCHMARKS.md).

Simulated raters take whole sessions through the real services (check plan, flags after every vote, the
reliability rule every ten completed sessions); the test only reads back who was flagged. On the QC of issue 21's
audit (a coin-flip check schedule, the 4 s rule, no reliability rule) most careless raters passed and a third of
brisk experts were flagged.
"""

from __future__ import annotations

import random

import pytest

import app.models  # noqa: F401  (the tables, for the engine fixture's create_all)
from bench.qc import simulate


@pytest.fixture
def fixed_sides(monkeypatch):
    from app.services import assignments

    monkeypatch.setattr(assignments, "_rng", random.Random(21))


def test_careless_raters_are_caught_and_honest_ones_left_alone(engine, fixed_sides):
    result = simulate(cohort={"honest": 10, "brisk": 10, "random": 4, "left70": 3, "tie": 3}, n_prompts=30,
                      pairs_per_session=10, seed=3)
    assert sum(result.sessions.values()) == 30 and result.votes == 300
    assert result.flagged["honest"] + result.flagged["brisk"] <= 1, result.by_rule
    caught = result.flagged["random"] + result.flagged["left70"] + result.flagged["tie"]
    assert caught >= 9, result.by_rule  # of 10
    assert min(result.checks_per_session) >= 2 and result.first_pair_checks == 0
    assert result.check_share <= 0.3
    # QC takes most of the careless raters' dilution out of the estimate (the 0.02 bar needs the full run's
    # hundreds of sessions: here one session moves the share by about 0.02)
    diluted = abs(result.estimate_all - result.estimate_honest_only)
    assert diluted > 0.03
    assert abs(result.estimate_after_qc - result.estimate_honest_only) < diluted / 2, (result.flagged,
                                                                                        result.by_rule)
