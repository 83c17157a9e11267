import pandas as pd

from app.criteria import DEFAULT_CRITERIA
from app.stats.synthetic import synthetic_votes

CONTRACT = ["vote_id", "study_id", "evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b",
            "left_model", "side", "winner", "submitted_at", "time_spent_ms", "flagged"]


def test_contract_shape():
    df = synthetic_votes(50, seed=3)
    assert list(df.columns) == CONTRACT
    assert len(df) == 50 * len(DEFAULT_CRITERIA)
    assert str(df["submitted_at"].dtype) == "datetime64[ns, UTC]"
    assert set(df["winner"]) <= {"model_a", "model_b", "tie"}
    assert set(df["side"]) <= {"left", "right", "tie"}
    # side and winner agree through left_model
    decided = df[df["winner"] != "tie"]
    won = decided["model_a"].where(decided["winner"] == "model_a", decided["model_b"])
    assert ((won == decided["left_model"]) == (decided["side"] == "left")).all()
    pd.testing.assert_frame_equal(df, synthetic_votes(50, seed=3))


def test_more_models_and_ties():
    df = synthetic_votes(3000, models=("M1", "M2", "M3"), tie_rate=0.3, seed=1)
    pairs = set(zip(df["model_a"], df["model_b"], strict=True))
    assert pairs == {("M1", "M2"), ("M1", "M3"), ("M2", "M3")}
    assert 0.27 < (df["winner"] == "tie").mean() < 0.33
