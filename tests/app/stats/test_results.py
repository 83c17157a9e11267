import json

import pandas as pd
import pytest

from app.stats import compute_results, synthetic_votes
from app.stats.frame import VoteFrameError

RECORD_KEYS = {"criterion", "model_a", "model_b", "wins_a", "wins_b", "ties", "n", "share_a", "share_b", "tie_rate",
               "pref_rate_a", "ci", "tie_ci", "p_value", "df", "approximate", "inference_unit", "n_prompts",
               "n_raters", "design_effect", "design_effect_prompt", "design_effect_rater", "p_holm", "significant",
               "leader", "winner", "votes_needed_80", "more_votes_80", "best_lever", "icc_prompt", "icc_rater",
               "independent"}


@pytest.fixture(scope="module")
def votes():
    return synthetic_votes(3000, seed=2, flagged_share=0.1)


@pytest.fixture(scope="module")
def results(votes):
    return compute_results(votes, n_boot=200)


def test_shape_and_json(results):
    json.dumps(results, allow_nan=False)
    assert results["models"] == ["A", "B"]
    assert len(results["criteria"]) == 6
    assert all(set(rec) == RECORD_KEYS for rec in results["criteria"])
    assert set(results["overall"][0]) == RECORD_KEYS
    assert all("p_bh" in rec and "theme" in rec for rec in results["themes"])
    assert results["ratings"] is None


def test_counts_match_the_frame(votes, results):
    kept = votes[~votes["flagged"]]
    assert results["n_votes"] == kept["vote_id"].nunique()
    assert results["excluded_flagged_votes"] == votes.loc[votes["flagged"], "vote_id"].nunique() > 0
    for rec in results["criteria"]:
        part = kept[kept["criterion"] == rec["criterion"]]
        counts = part["winner"].value_counts()
        assert (rec["wins_a"], rec["wins_b"], rec["ties"]) == (counts["model_a"], counts["model_b"], counts["tie"])
        assert rec["pref_rate_a"] == pytest.approx(rec["wins_a"] / (rec["wins_a"] + rec["wins_b"]))
        lo, hi = rec["ci"]
        assert lo < rec["pref_rate_a"] < hi
        assert rec["inference_unit"] == "prompt x rater"


def test_recovers_the_generating_model(results):
    # synthetic_votes makes A stronger on five criteria and B on motion_amplitude.
    leaders = {rec["criterion"]: rec["leader"] for rec in results["criteria"]}
    assert leaders.pop("motion_amplitude") == "B"
    assert set(leaders.values()) == {"A"}
    assert results["headline"].startswith("A preferred on 5 of 6 criteria")


def test_include_flagged_switch(votes):
    res = compute_results(votes, include_flagged=True, n_boot=50)
    assert res["excluded_flagged_votes"] == 0 and res["n_votes"] == votes["vote_id"].nunique()


def test_reversed_rows_are_oriented():
    df = synthetic_votes(400, seed=5)
    flipped = df.copy()
    swap = flipped["vote_id"] % 2 == 0
    flipped.loc[swap, ["model_a", "model_b"]] = flipped.loc[swap, ["model_b", "model_a"]].to_numpy()
    flipped.loc[swap, "winner"] = flipped.loc[swap, "winner"].map({"model_a": "model_b", "model_b": "model_a",
                                                                    "tie": "tie"})
    a = compute_results(df, n_boot=20)["criteria"]
    b = compute_results(flipped, n_boot=20)["criteria"]
    assert [(r["wins_a"], r["wins_b"]) for r in a] == [(r["wins_a"], r["wins_b"]) for r in b]


def test_bad_frames_are_explained():
    with pytest.raises(VoteFrameError, match="lacks column"):
        compute_results(pd.DataFrame({"criterion": ["x"]}))
    bad = synthetic_votes(5).assign(winner="left")
    with pytest.raises(VoteFrameError, match="winner must be one of"):
        compute_results(bad)


def test_empty_frame():
    res = compute_results(synthetic_votes(5).iloc[0:0])
    assert res["n_votes"] == 0 and res["criteria"] == [] and res["headline"] == "No votes yet."


def test_more_than_two_models():
    votes = synthetic_votes(3000, models=("M1", "M2", "M3"), seed=6)
    res = compute_results(votes, n_boot=100)
    json.dumps(res, allow_nan=False)
    assert len(res["criteria"]) == 6 * 3
    assert set(res["ratings"]) == set(res["criteria_keys"]) | {"overall"}
    block = res["ratings"]["overall"]
    assert block["order"][0] == "M1" and block["davidson"]["worths"][0]["model"] == "M1"
    assert res["headline"].startswith("M1 has the highest overall Bradley-Terry rating")
    assert ("clear of every other" in res["headline"]) == (sum(r["rank"] == 1 for r in block["ratings"]) == 1)


def test_external_arena_frame_runs_through_compute_results():
    from app.stats.clean_battle import read_clean_battle, to_clean_battle

    votes = synthetic_votes(300, models=("M1", "M2", "M3"), seed=2)
    frame = read_clean_battle(to_clean_battle(votes, criterion="overall_quality"))
    res = compute_results(frame.drop(columns=["prompt", "theme", "detail"]), n_boot=50)
    assert res["criteria_keys"] == ["overall_quality"]
    assert res["criteria"][0]["inference_unit"] == "rater"  # a clean_battle log has judges but no prompts
    assert res["themes"] == [] and res["ratings"]["overall_quality"]["n_battles"] == 300


def test_categorical_input_gives_the_same_results():
    votes = synthetic_votes(500, seed=11)
    text = ["evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b", "left_model", "side",
            "winner"]
    as_cat = votes.astype(dict.fromkeys(text, "category"))
    assert compute_results(as_cat, n_boot=100) == compute_results(votes, n_boot=100)


def test_text_columns_of_any_storage_and_threaded_encoding_give_the_same_results(monkeypatch):
    import app.stats.frame as frame_module

    votes = synthetic_votes(500, seed=11)
    expected = compute_results(votes, n_boot=100)
    as_object = votes.astype({c: object for c in votes.columns if votes[c].dtype == "str"})
    assert compute_results(as_object, n_boot=100) == expected
    monkeypatch.setattr(frame_module, "_PARALLEL_ROWS", 0)  # the thread pool large frames use
    assert compute_results(votes, n_boot=100) == expected


def test_criteria_subset_sets_order_and_overall():
    votes = synthetic_votes(400, seed=12)
    res = compute_results(votes, criteria=["overall_quality", "text_relevance"], n_boot=20)
    assert [r["criterion"] for r in res["criteria"]] == ["overall_quality", "text_relevance"]
    assert res["criteria_keys"] == ["overall_quality", "text_relevance"]
    part = votes[votes["criterion"].isin(["overall_quality", "text_relevance"])]
    a = (part["winner"] == "model_a").groupby(part["vote_id"]).sum()
    b = (part["winner"] == "model_b").groupby(part["vote_id"]).sum()
    assert res["overall"][0]["wins_a"] == (a > b).sum() and res["overall"][0]["ties"] == (a == b).sum()
    assert {r["detail"] for r in res["detail_levels"]} == {"short", "medium", "long"}
    with pytest.raises(VoteFrameError, match="no votes for criterion"):
        compute_results(votes, criteria=["smell"])
