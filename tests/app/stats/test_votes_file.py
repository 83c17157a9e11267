"""Reading a raw votes export: types as the study's own frame, and every wrong row named by its line."""

import json

import numpy as np
import pandas as pd
import pytest

from app.stats.synthetic import synthetic_votes
from app.stats.votes_file import OPTIONAL, REQUIRED, VotesFileError, read_votes_file

COLUMNS = [*REQUIRED, *OPTIONAL]


@pytest.fixture
def frame():
    votes = synthetic_votes(12, seed=1, n_prompts=4, n_evaluators=3, criteria=("c1", "c2"))
    out = votes.assign(study="s", prompt=votes["prompt"].str.replace("p", "0"))  # ids that look like numbers
    out["winner_model"] = np.where(out["winner"] == "model_a", out["model_a"],
                                   np.where(out["winner"] == "model_b", out["model_b"], "tie"))
    return out[COLUMNS]


def _problems(path):
    with pytest.raises(VotesFileError) as err:
        read_votes_file(path)
    return err.value.problems


def test_values_keep_the_types_of_the_studys_frame(frame, tmp_path):
    path = tmp_path / "v.csv"
    frame.to_csv(path, index=False)
    got = read_votes_file(path)
    assert got.criteria == ["c1", "c2"] and got.format == "csv" and got.ignored_columns == []
    assert got.frame["prompt"].tolist() == frame["prompt"].tolist()  # "000" stays text, not the number 0
    assert got.frame["vote_id"].dtype == np.int64 and got.frame["flagged"].dtype == bool
    pd.testing.assert_series_equal(got.frame["winner"], frame["winner"].astype(object), check_names=False)


def test_a_value_over_two_lines_moves_the_line_numbers(frame, tmp_path):
    frame = frame.copy()
    frame.loc[1, "theme"] = "two\nlines"  # record 3 spans lines 3-4
    frame.loc[4, "winner"] = "B"  # record 6 starts on line 7
    path = tmp_path / "v.csv"
    frame.to_csv(path, index=False)
    assert _problems(path) == ["line 7: winner 'B' is not one of model_a, model_b, tie"]


def test_jsonl_missing_key_and_null(frame, tmp_path):
    records = json.loads(frame.assign(submitted_at=frame["submitted_at"].astype(str)).to_json(orient="records"))
    del records[2]["evaluator"]
    records[4]["criterion"] = None
    records[5]["flagged"] = "maybe"
    path = tmp_path / "v.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert _problems(path) == ["line 3: no evaluator", "line 5: no criterion",
                               "line 6: flagged 'maybe' is not true or false"]


def test_rows_that_contradict_themselves_or_their_vote(frame, tmp_path):
    frame = frame.copy()
    decided = frame.index[frame["winner"] != "tie"]
    r = decided[0]
    frame.loc[r, "side"] = "right" if frame.loc[r, "side"] == "left" else "left"  # the other side won
    frame.loc[decided[1], "winner_model"] = "nobody"
    frame.loc[decided[2], "left_model"] = "C"
    path = tmp_path / "v.parquet"
    frame.to_parquet(path, index=False)
    problems = _problems(path)
    assert len(problems) == 3 and all(p.startswith("row ") for p in problems)
    assert problems[0].startswith(f"row {r + 1}: side ")
    assert "winner_model 'nobody'" in problems[1] and "left_model 'C' is neither" in problems[2]


def test_a_vote_has_one_evaluator(frame, tmp_path):
    frame = frame.copy()
    frame.loc[3, "evaluator"] = "someone else"  # row 3 is vote 2's second criterion (line 5); its first on line 4
    path = tmp_path / "v.csv"
    frame.to_csv(path, index=False)
    (problem,) = _problems(path)
    assert problem.startswith("line 5: vote 2 has evaluator 'someone else' here but") and problem.endswith("line 4")


def test_extra_columns_are_ignored_and_named(frame, tmp_path):
    path = tmp_path / "v.csv"
    frame.assign(pair_id=1).to_csv(path, index=False)
    got = read_votes_file(path)
    assert got.ignored_columns == ["pair_id"] and "pair_id" not in got.frame.columns


def test_jsonl_fast_reader_counts_blank_lines_too(frame, tmp_path):
    records = json.loads(frame.assign(submitted_at=frame["submitted_at"].astype(str)).to_json(orient="records"))
    records[3]["criterion"] = None
    lines = [json.dumps(r) for r in records]
    path = tmp_path / "v.jsonl"
    path.write_text("\n" + "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")  # blank lines 1 and 4
    assert _problems(path) == ["line 6: no criterion"]
    path.write_text("\n".join(json.dumps(r) for r in json.loads(
        frame.assign(submitted_at=frame["submitted_at"].astype(str)).to_json(orient="records"))))
    assert read_votes_file(path).frame["prompt"].tolist() == frame["prompt"].tolist()
