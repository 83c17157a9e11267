"""``blindpair analyze --votes``: a study's raw votes export gives back the study's own results."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.db import session_scope
from app.services import exports
from app.services.results_cache import get_results
from tests.app.services.results_factory import voted_study

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["analyze", *args, "--width", "200"])


def _export(session, study, fmt: str, path: Path) -> Path:
    body = exports.raw_votes(session, study=study, fmt=fmt).body
    path.write_bytes(body if isinstance(body, bytes) else b"".join(body))
    return path


def _study_results(study_id: int, *, include_flagged: bool = False) -> dict:
    with session_scope() as s:
        results = get_results(s, study_id=study_id, include_flagged=include_flagged).results
    return json.loads(json.dumps(results))  # what results.json holds


def test_each_export_format_reproduces_the_studys_results(migrated, tmp_path):
    """A three-model study (ratings, Davidson, themes) with a flagged evaluator, exported in every format."""
    from app.models import Evaluator

    with session_scope() as s:
        study = voted_study(s, n_prompts=6, n_evaluators=4, models=("lightning", "animatediff", "svd"))
        s.query(Evaluator).filter_by(study_id=study.id).order_by(Evaluator.id).first().flagged = True
        s.flush()
        files = {fmt: _export(s, study, fmt, tmp_path / f"votes.{fmt}") for fmt in exports.VOTE_FORMATS}
        study_id = study.id
    expected = _study_results(study_id)
    assert expected["excluded_flagged_votes"] > 0 and expected["ratings"] is not None
    out = tmp_path / "results.json"
    for fmt, path in files.items():
        r = run("--votes", str(path), "--json", str(out))
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["results"] == expected, fmt
        assert expected["headline"] in r.output and "--include-flagged" in r.output
    r = run("--votes", str(files["csv"]), "--include-flagged", "--json", str(out))
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["results"] == _study_results(study_id, include_flagged=True)


@pytest.fixture
def exported(tmp_path):
    """A small raw votes export in every format, written as the export service writes it (no database)."""
    from app.stats import synthetic_votes

    votes = synthetic_votes(40, seed=3, n_prompts=8, n_evaluators=5)
    frame = votes.assign(study="study-1")
    frame["winner_model"] = np.where(frame["winner"] == "model_a", frame["model_a"],
                                     np.where(frame["winner"] == "model_b", frame["model_b"], "tie"))
    frame = frame[list(exports.RAW_VOTE_COLUMNS)]
    files = {}
    for fmt in ("csv", "jsonl"):
        files[fmt] = tmp_path / f"votes.{fmt}"
        files[fmt].write_bytes(b"".join(exports._chunks(frame, fmt)))
    files["parquet"] = tmp_path / "votes.parquet"
    frame.to_parquet(files["parquet"], index=False)
    return files


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue())
    return path


def _refused(path: Path, tmp_path: Path, *needles: str) -> str:
    out = tmp_path / "never.json"
    r = run("--votes", str(path), "--json", str(out))
    assert r.exit_code == 1, r.output
    for needle in needles:
        assert needle in r.output, r.output
    assert "nothing was analysed" in r.output or "lacks column" in r.output
    assert not out.exists()  # nothing half-done
    return r.output


def test_a_missing_column_is_named(exported, tmp_path):
    files = exported
    frame = pd.read_csv(files["csv"], dtype=str, keep_default_na=False).drop(columns="winner")
    bad = tmp_path / "no_winner.csv"
    frame.to_csv(bad, index=False)
    _refused(bad, tmp_path, "lacks column(s) winner")
    pq = tmp_path / "no_prompt.parquet"
    pd.read_parquet(files["parquet"]).drop(columns="prompt").to_parquet(pq)
    _refused(pq, tmp_path, "lacks column(s) prompt")


def test_a_bad_winner_is_reported_by_its_csv_line(exported, tmp_path):
    files = exported
    rows = _csv_rows(files["csv"])
    rows[6][rows[0].index("winner")] = "left"  # rows[0] is the header, line 1: rows[6] is line 7
    output = _refused(_write_csv(tmp_path / "bad.csv", rows), tmp_path, "line 7: winner 'left' is not one of")
    assert "1 problem(s)" in output


def test_a_line_that_is_not_json_is_reported_by_its_line(exported, tmp_path):
    files = exported
    lines = files["jsonl"].read_text().splitlines()
    lines[2] = '{"vote_id": 3, "winner": '
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    _refused(bad, tmp_path, "line 3: not valid JSON")


def test_rows_of_the_wrong_shape_are_all_listed(exported, tmp_path):
    files = exported
    rows = _csv_rows(files["csv"])
    header = rows[0]
    rows[3] = rows[3][:-2]  # line 4: two fields short
    rows[9][header.index("vote_id")] = "nine"  # line 10
    rows.insert(12, list(rows[11]))  # line 13 repeats line 12's judgement
    _refused(_write_csv(tmp_path / "bad.csv", rows), tmp_path, "line 4: 15 fields where the header has 17",
             "line 10: vote_id 'nine' is not a whole number")
    rows = _csv_rows(files["csv"])
    rows.insert(12, list(rows[11]))
    _refused(_write_csv(tmp_path / "dup.csv", rows), tmp_path, "line 13: vote", "again (first on line 12)")


def test_exactly_one_source(exported):
    files = exported
    r = run("--votes", str(files["csv"]), "--study", "1")
    assert r.exit_code == 2 and "exactly one of" in r.output
    r = run("--votes", str(files["csv"]), "--html", "r.html")
    assert r.exit_code == 2 and "--html needs --study" in r.output


def test_the_reader_knows_every_column_of_the_export():
    from app.stats.votes_file import OPTIONAL, REQUIRED

    assert set(exports.RAW_VOTE_COLUMNS) == set(REQUIRED) | set(OPTIONAL)
