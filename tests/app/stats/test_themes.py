import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2_contingency

from app.stats.significance import adjust_pvalues
from app.stats.synthetic import synthetic_votes
from app.stats.themes import group_table, groups_differ

REPS = 200


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


def test_themes_differ_reports_pooled_chi_square_with_a_prompt_level_p_value(votes):
    result = {r["criterion"]: r for r in groups_differ(votes, "theme")}["c1"]
    c1 = votes[(votes["criterion"] == "c1") & (votes["winner"] != "tie")]
    pooled = pd.crosstab(c1["theme"], c1["winner"]).to_numpy()
    ref = chi2_contingency(pooled, correction=False)
    assert result["chi2"] == pytest.approx(ref.statistic) and result["dof"] == 4  # the description
    assert result["unit"] == "prompt" and result["n_units"] == c1["prompt"].nunique()
    assert result["n_permutations"] == 2000 and "permut" in result["test"]
    assert result["p_value"] == pytest.approx(1 / 2001)  # strong theme effects: no permutation reaches it
    assert groups_differ(votes, "theme") == groups_differ(votes, "theme")  # seeded


def test_single_group_cannot_be_tested(votes):
    one = votes[votes["theme"] == "people"]
    result = groups_differ(one, "theme")[0]
    assert result["p_value"] is None and result["n_groups"] == 1


def test_without_prompts_votes_are_treated_as_independent(votes):
    result = {r["criterion"]: r for r in groups_differ(votes.drop(columns="prompt"), "theme")}["c1"]
    assert result["unit"] == "vote" and "independent" in result["test"]
    assert result["p_value"] < 1e-6


def _studies(seed, *, theme_effect=0.0, prompt_sd=0.5, n_prompts=60, votes_per_prompt=20, n_themes=5):
    """REPS studies in one frame, one criterion each: prompts spread over themes, each with its own effect
    (sd ``prompt_sd`` on the logit scale) and the theme's (``theme_effect`` x -1 .. 1 across themes)."""
    rng = np.random.default_rng(seed)
    prompt_theme = np.tile(np.arange(n_prompts) % n_themes, (REPS, 1))
    prompt_theme = rng.permuted(prompt_theme, axis=1)
    shift = theme_effect * np.linspace(-1, 1, n_themes)
    logit = rng.normal(0, prompt_sd, (REPS, n_prompts)) + shift[prompt_theme]
    logit = np.repeat(logit, votes_per_prompt, axis=1).ravel()
    a_wins = rng.random(logit.size) < 1 / (1 + np.exp(-logit))
    tie = rng.random(logit.size) < 0.2
    study = np.repeat(np.arange(REPS), n_prompts * votes_per_prompt)
    prompt = np.tile(np.repeat(np.arange(n_prompts), votes_per_prompt), REPS) + study * n_prompts
    cat = pd.Categorical.from_codes
    n = logit.size
    return pd.DataFrame({
        "criterion": cat(study, [f"s{k}" for k in range(REPS)]),
        "model_a": cat(np.zeros(n, dtype=int), ["A", "B"]), "model_b": cat(np.ones(n, dtype=int), ["A", "B"]),
        "winner": cat(np.where(tie, 2, np.where(a_wins, 0, 1)), ["model_a", "model_b", "tie"]),
        "prompt": cat(prompt, [f"p{k}" for k in range(REPS * n_prompts)]),
        "theme": cat(np.repeat(prompt_theme.ravel(), votes_per_prompt), [f"t{k}" for k in range(n_themes)]),
    })


def _said_differ(frame):
    results = groups_differ(frame, "theme", n_perm=500)
    assert len(results) == REPS
    return sum(r["p_value"] < 0.05 for r in results)


def test_no_theme_effect_is_rarely_called_a_difference_despite_prompt_effects():
    # Prompt effects of sd 0.5 and no theme effect: the chi-square on pooled votes said "differ" 47% of the time.
    assert _said_differ(_studies(1)) <= binom.ppf(0.999, REPS, 0.05)


def test_a_real_theme_effect_is_found():
    # Themes shifting the logit from -0.6 to +0.6, on top of the same prompt effects.
    assert _said_differ(_studies(2, theme_effect=0.6)) >= 0.7 * REPS
