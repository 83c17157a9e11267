import json

import pytest

from app.stats.clean_battle import (
    CleanBattleError,
    clean_battles_by_criterion,
    read_clean_battle,
    to_clean_battle,
)
from app.stats.synthetic import synthetic_votes


def test_export_has_fastchat_fields_and_round_trips(tmp_path):
    votes = synthetic_votes(60, seed=4)
    logs = clean_battles_by_criterion(votes)
    assert set(logs) == set(votes["criterion"])
    records = logs["text_relevance"]
    assert len(records) == 60
    assert {"model_a", "model_b", "winner", "judge", "anony", "tstamp"} <= set(records[0])
    assert isinstance(records[0]["tstamp"], float) and records[0]["judge"].startswith("e")
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(records))
    back = read_clean_battle(path)
    part = votes[votes["criterion"] == "text_relevance"].sort_values("submitted_at", kind="stable")
    assert back["winner"].tolist() == part["winner"].tolist()
    assert back["criterion"].unique().tolist() == ["text_relevance"]
    assert (back["submitted_at"] - part["submitted_at"].reset_index(drop=True)).abs().max().total_seconds() < 1e-3


def test_bothbad_ties_fold_into_ties_and_raw_is_kept():
    records = [{"model_a": "x", "model_b": "y", "winner": "tie (bothbad)", "judge": "j", "anony": False,
                "tstamp": 1.0}]
    frame = read_clean_battle(records)
    assert frame.loc[0, "winner"] == "tie" and frame.loc[0, "winner_raw"] == "tie (bothbad)"
    assert read_clean_battle(records, anony_only=True).empty


def test_bad_records_are_listed():
    with pytest.raises(CleanBattleError, match="record 1: winner 'left'") as info:
        read_clean_battle([{"model_a": "x", "model_b": "y", "winner": "tie"},
                           {"model_a": "x", "model_b": "y", "winner": "left"}, {"model_a": "x"}])
    assert info.value.errors == ["record 1: winner 'left' is not one of model_a, model_b, tie, tie (bothbad)",
                                 "record 2: missing model_b, winner"]
    with pytest.raises(CleanBattleError, match="not valid JSON"):
        read_clean_battle(b"[{oops")
    with pytest.raises(CleanBattleError, match="cannot read"):
        read_clean_battle("/nonexistent/battles.json")


def test_single_criterion_export():
    votes = synthetic_votes(10, seed=1)
    assert len(to_clean_battle(votes, criterion="overall_quality")) == 10
