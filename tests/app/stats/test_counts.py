"""Counting rows first (``count_rows`` + ``weight=``) must give the very figures of the rows themselves."""

import pandas as pd
from pandas.testing import assert_frame_equal

from app.stats.frame import check_votes, count_rows
from app.stats.pairwise import preference_table
from app.stats.synthetic import synthetic_votes
from app.stats.themes import group_table

COLS = ["criterion", "model_a", "model_b", "winner", "prompt", "evaluator", "theme", "detail"]


def _frame():
    frame = synthetic_votes(1500, models=("A", "B", "C"), n_prompts=30, seed=4)
    frame.loc[frame.index[::13], "theme"] = None  # missing values form their own cell
    return check_votes(frame)


def test_count_rows_adds_up_to_the_rows():
    frame = _frame()
    counts = count_rows(frame, COLS, "rows")
    assert counts["rows"].sum() == len(frame)
    assert len(counts) == len(frame[COLS].drop_duplicates())
    assert all(isinstance(counts[c].dtype, pd.CategoricalDtype) for c in COLS)


def test_weighted_tables_equal_row_tables_clustered_inference_included():
    """Rows counted by prompt and evaluator (among others) give the same clustered intervals, tests and design
    effects as the votes one by one."""
    frame = _frame()
    counts = count_rows(frame, COLS, "rows")
    by = ["criterion", "model_a", "model_b"]
    assert_frame_equal(preference_table(counts, by, weight="rows"), preference_table(frame, by), rtol=1e-9)
    assert_frame_equal(group_table(counts, "theme", weight="rows"), group_table(frame, "theme"), rtol=1e-9)


def test_large_key_spaces_are_renumbered_to_the_same_cells(monkeypatch):
    import app.stats.frame as frame_module

    frame = _frame()
    counts = count_rows(frame, COLS, "rows")
    for limit in (1, 50, 1000):  # renumber after nearly every column, then now and then
        monkeypatch.setattr(frame_module, "_DENSE_CELLS", limit)
        assert_frame_equal(count_rows(frame, COLS, "rows"), counts, check_exact=True)
