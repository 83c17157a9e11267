import random

from app.trust.clusters import SessionInfo, address_clusters
from app.trust.collusion import lean_p_value, lean_tests


def _honest(rng, n_votes=8, share=0.5):
    a = sum(rng.random() < share for _ in range(n_votes))
    return (a, n_votes - a)


def _study(rng, *, honest=20, cluster=6, cluster_votes=None, cells=("motion", "overall"), share=0.5):
    sessions = [SessionInfo(i, f"addr-{i}") for i in range(honest)]
    sessions += [SessionInfo(honest + i, "one-address") for i in range(cluster)]
    answers = {}
    for cell in cells:
        per = {i: _honest(rng, share=share) for i in range(honest)}
        for i in range(cluster):
            per[honest + i] = cluster_votes(rng) if cluster_votes else _honest(rng, share=share)
        answers[cell] = per
    return answers, address_clusters(sessions)


def test_a_swarm_pushing_one_side_is_flagged():
    answers, clusters = _study(random.Random(1), cluster_votes=lambda rng: (8, 0))
    tests = lean_tests(answers, clusters, alpha=0.001)
    flagged = {t.cluster.label for t in tests if t.flagged}
    assert flagged == {"A1"} and {t.cell for t in tests if t.flagged} == {"motion", "overall"}
    top = min(tests, key=lambda t: t.p_value)
    assert top.cluster_share == 1.0 and 0.3 < top.rest_share < 0.7 and top.p_adjusted == min(1, 2 * top.p_value)


def test_honest_clusters_are_flagged_about_as_often_as_alpha_allows():
    # 300 studies with an honest lab of 6 behind one address, in an even and in a lopsided contest.
    flagged = 0
    for seed in range(300):
        rng = random.Random(seed)
        answers, clusters = _study(rng, share=0.5 if seed % 2 else 0.8)
        flagged += any(t.flagged for t in lean_tests(answers, clusters, alpha=0.01))
    assert flagged <= 9  # 1% per study expected; well under 3%


def test_a_swarm_agreeing_with_a_real_winner_is_not_an_outlier():
    # When the study itself prefers A 90% of the time, a cluster that always says A is only a bit keener.
    answers, clusters = _study(random.Random(3), share=0.9, cluster_votes=lambda rng: (8, 0))
    assert not any(t.flagged for t in lean_tests(answers, clusters, alpha=0.001))


def test_too_few_sessions_are_not_judged_and_alpha_zero_switches_off():
    answers, clusters = _study(random.Random(4), honest=2, cluster_votes=lambda rng: (8, 0))
    assert lean_tests(answers, clusters, alpha=0.001) == []  # fewer than 3 others: no comparison
    answers, clusters = _study(random.Random(4), cluster_votes=lambda rng: (8, 0))
    assert lean_tests(answers, clusters, alpha=0.001, min_sessions=7) == []
    assert not any(t.flagged for t in lean_tests(answers, clusters, alpha=0.0))


def test_perfectly_even_raters_do_not_divide_by_zero():
    p = lean_p_value([(4, 4), (4, 4)], [(4, 4)] * 10)
    assert p == 1.0
    assert 0 < lean_p_value([(8, 0), (8, 0)], [(4, 4)] * 10) < 0.01  # floored at binomial spread: finite
