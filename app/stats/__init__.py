"""Statistics of pairwise votes: pure functions over pandas frames (no database, no web)."""

from app.stats.agreement import agreement_by_criterion, alpha_from_long, krippendorff_alpha
from app.stats.bootstrap import cluster_bootstrap_rate, iid_bootstrap_rate
from app.stats.clean_battle import CleanBattleError, clean_battles_by_criterion, read_clean_battle, to_clean_battle
from app.stats.frame import VoteFrameError, check_votes
from app.stats.overall import DEFINITION as OVERALL_DEFINITION
from app.stats.overall import overall_votes
from app.stats.pairwise import preference_table
from app.stats.position import position_bias
from app.stats.power import decided_votes_needed, exact_power, votes_needed
from app.stats.proportions import proportion_ci, wilson_interval
from app.stats.ratings import bradley_terry, davidson, fit_davidson
from app.stats.results import compute_results
from app.stats.significance import adjust_pvalues, sign_test
from app.stats.synthetic import synthetic_votes
from app.stats.themes import group_table, groups_differ

__all__ = [
    "CleanBattleError",
    "OVERALL_DEFINITION",
    "bradley_terry",
    "clean_battles_by_criterion",
    "davidson",
    "fit_davidson",
    "read_clean_battle",
    "to_clean_battle",
    "VoteFrameError",
    "adjust_pvalues",
    "agreement_by_criterion",
    "alpha_from_long",
    "check_votes",
    "cluster_bootstrap_rate",
    "compute_results",
    "decided_votes_needed",
    "exact_power",
    "group_table",
    "groups_differ",
    "iid_bootstrap_rate",
    "krippendorff_alpha",
    "overall_votes",
    "position_bias",
    "preference_table",
    "proportion_ci",
    "sign_test",
    "synthetic_votes",
    "votes_needed",
    "wilson_interval",
]
