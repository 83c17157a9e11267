"""bench/launch.py (issue 16) and bench/http_costs.py run at their tiny sizes and measure what they say.

No timing is asserted: what is checked is that every server stored exactly what it accepted in every mode
(closed loop, burst, open loop), that the burst really joined its evaluators, and that each HTTP piece was timed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.servers import postgres_unavailable_reason


@pytest.fixture(autouse=True)
def _restore(restore_environment):
    """Every test here: see tests/bench/conftest.py."""


def _check_launch(tmp_path: Path, backend: str) -> None:
    from bench import launch

    report = launch.main(["--tiny", "--backends", backend, "--results-dir", str(tmp_path)])
    data = json.loads((tmp_path / "launch.json").read_text())["data"][backend]
    assert set(data["closed"]) == {f"{kind}-{c}" for kind in ("app", "fastapi", "floor") for c in (1, 4)}
    runs = [*data["closed"].values(), *data["reference"].values(), *data["burst"].values(), *data["open"].values()]
    for run in runs:
        assert run["accepted"] > 0 and run["stored"] == run["accepted"]
        assert run["server_cpu_ms_per_vote"] > 0
        assert 0 < run["cpu_window"]["votes"] <= run["accepted"]
    # The open loop's server CPU is charged to the votes of its window, all of them, and not to the joins of
    # its evaluator pool before it.
    for run in data["open"].values():
        assert run["cpu_window"]["votes"] == run["accepted"]
    burst = data["burst"]["8"]
    assert burst["joins"] >= 8 and burst["join_p99_ms"] is not None  # every arriving evaluator joined
    assert (f"{backend}: stored = accepted in every run", True, "agree") in report.bars
    assert (tmp_path / "launch.md").read_text().startswith("## ")


def test_launch_runs_every_mode_and_stores_what_it_accepted(tmp_path):
    _check_launch(tmp_path, "sqlite")


@pytest.mark.postgres
@pytest.mark.slow
def test_launch_runs_on_postgres(tmp_path):
    reason = postgres_unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
        pytest.skip(reason)
    _check_launch(tmp_path, "postgres")


def test_http_costs_prices_every_piece(tmp_path):
    from bench import http_costs

    http_costs.main(["--tiny", "--results-dir", str(tmp_path)])
    costs = json.loads((tmp_path / "http_costs.json").read_text())["data"]
    assert {key for key, _label in http_costs.LABELS} <= set(costs)
    assert all(costs[k] > 0 for k in costs if k != "middleware_us")
    assert Path(tmp_path / "http_costs.md").read_text().count("|") > 20
