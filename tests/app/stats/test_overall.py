import pandas as pd

from app.stats.overall import DEFINITION, overall_votes


def test_majority_of_decided_criteria():
    rows = []
    spec = {1: ["model_a", "model_a", "model_b"], 2: ["tie", "tie", "model_b"], 3: ["model_a", "model_b", "tie"],
            4: ["tie", "tie", "tie"]}
    for vote_id, winners in spec.items():
        for c, w in zip(["c1", "c2", "c3"], winners, strict=True):
            rows.append({"vote_id": vote_id, "criterion": c, "model_a": "A", "model_b": "B", "left_model": "B",
                         "winner": w})
    out = overall_votes(pd.DataFrame(rows)).set_index("vote_id")
    assert out["winner"].to_dict() == {1: "model_a", 2: "model_b", 3: "tie", 4: "tie"}
    assert out["side"].to_dict() == {1: "right", 2: "left", 3: "tie", 4: "tie"}
    assert (out["criterion"] == "overall").all()
    assert "won more of the criteria" in DEFINITION


def test_rows_in_any_order_give_the_same_votes():
    from app.stats.synthetic import synthetic_votes

    frame = synthetic_votes(300, seed=2)
    shuffled = frame.sample(frac=1, random_state=0)  # vote ids out of order: the hashing path
    sorted_path = overall_votes(frame)
    hashed = overall_votes(shuffled).sort_values("vote_id").reset_index(drop=True)
    cols = ["vote_id", "winner", "side", "criteria_won_a", "criteria_won_b", "prompt", "evaluator"]
    pd.testing.assert_frame_equal(sorted_path[cols], hashed[cols])
