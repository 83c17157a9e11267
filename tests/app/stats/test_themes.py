import numpy as np
import pytest
from scipy.stats import chi2_contingency

from app.stats.significance import adjust_pvalues
from app.stats.synthetic import synthetic_votes
from app.stats.themes import group_table, groups_differ


@pytest.fixture(scope="module")
def votes():
    themes = ("people", "animals", "nature", "city", "fantasy")
    return synthetic_votes(4000, seed=8, criteria=("c1", "c2"), criterion_scale={"c1": 1.0, "c2": 1.0}, themes=themes,
                           theme_scale={"people": 3.0, "animals": 0.0, "nature": 1.0, "city": 1.0, "fantasy": 1.0})


def test_cells_and_bh(votes):
    table = group_table(votes, "theme", n_boot=100)
    assert len(table) == 5 * 2
    np.testing.assert_allclose(table["p_bh"], adjust_pvalues(table["p_value"], "bh"))
    people = table[(table["theme"] == "people") & (table["criterion"] == "c1")].iloc[0]
    part = votes[(votes["theme"] == "people") & (votes["criterion"] == "c1")]
    assert people["wins_a"] == (part["winner"] == "model_a").sum()
    assert people["significant"] and people["winner"] == "A"
    assert people["votes_needed_80"] is None  # sample sizes are planned per criterion only


def test_themes_differ_is_pearson_chi_square(votes):
    table = group_table(votes, "theme", n_boot=0)
    result = {r["criterion"]: r for r in groups_differ(table, "theme")}["c1"]
    c1 = table[table["criterion"] == "c1"]
    ref = chi2_contingency(c1[["wins_a", "wins_b"]].to_numpy(), correction=False)
    assert result["chi2"] == pytest.approx(ref.statistic) and result["p_value"] == pytest.approx(ref.pvalue)
    assert result["dof"] == 4 and result["p_value"] < 1e-6  # the generating model has strong theme effects


def test_single_group_cannot_be_tested(votes):
    one = votes[votes["theme"] == "people"]
    result = groups_differ(group_table(one, "theme", n_boot=0), "theme")[0]
    assert result["p_value"] is None and result["n_groups"] == 1
