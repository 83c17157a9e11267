"""QC flags: each rule catches its pattern, leaves careful evaluators alone, and is stored with its reasons."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import delete, select

from app.models import Evaluator, Pair, Vote, VoteChoice
from app.services.attention import CHECK_DEGRADED, CHECK_SAME, QCSettings, ensure_attention_pairs
from app.services.qc import (
    evaluate_evaluator,
    failed_checks_reason,
    refresh_flags,
    refresh_study_flags,
    straightline_reason,
    too_fast_reason,
)
from tests.app.services.qc_votes import vote
from tests.conftest import BACKENDS
from tests.factories import make_evaluator, make_pairs, make_study


@pytest.fixture
def study(session):
    s = make_study(session, n_prompts=10, pairs_per_session=12)
    make_pairs(session, s)
    ensure_attention_pairs(session, study_id=s.id, rng=random.Random(0), n_sources=3)
    return s


def _pairs(session, study, kind):
    return session.scalars(select(Pair).where(Pair.study_id == study.id, Pair.kind == kind)
                           .order_by(Pair.id)).all()


def _honest_check(session, ev, pair, *, a_left=True, time_ms=9000):
    if pair.kind == CHECK_SAME:
        return vote(session, pair=pair, evaluator=ev, sides="tie", a_left=a_left, time_ms=time_ms)
    return vote(session, pair=pair, evaluator=ev, sides="left" if a_left else "right", a_left=a_left,
                time_ms=time_ms)


def _varied_votes(session, ev, pairs, *, time_ms=9000, seed=0):
    rng = random.Random(seed)
    for pair in pairs:
        vote(session, pair=pair, evaluator=ev, a_left=rng.random() < 0.5, time_ms=time_ms,
             sides={k: rng.choice(["left", "right", "tie"]) for k in
                    ["text_relevance", "appearance_distortion", "appearance_aesthetics", "motion_naturalness",
                     "motion_amplitude", "overall_quality"]})


# ---------------------------------------------------------------------------------------------- pure rules


def test_failed_checks_rule():
    assert failed_checks_reason([[], ["x"]], n_checks=2, max_failed=1) is None
    reason = failed_checks_reason([["first reason"], [], ["second"]], n_checks=3, max_failed=1)
    assert reason.startswith("failed 2 of 3 attention checks") and "first reason" in reason


def test_too_fast_rule():
    assert too_fast_reason([], min_seconds=4, max_share=0.2) is None
    assert too_fast_reason([9000] * 9 + [1000], min_seconds=4, max_share=0.2) is None  # 10 %
    reason = too_fast_reason([9000] * 7 + [1000] * 3, min_seconds=4, max_share=0.2)
    assert reason.startswith("3 of 10 votes were submitted in under 4 s")


def test_straightline_rule():
    assert straightline_reason(["left"] * 42, n_votes=7, min_votes=8, share=0.9) is None  # too few votes
    assert "chose 'left' for 48 of 48" in straightline_reason(["left"] * 48, n_votes=8, min_votes=8, share=0.9)
    assert straightline_reason(["left"] * 40 + ["right"] * 8, n_votes=8, min_votes=8, share=0.9) is None
    assert straightline_reason(["tie"] * 48, n_votes=8, min_votes=8, share=0.9) is None


# ---------------------------------------------------------------------------------------- on stored votes


def test_careful_evaluator_is_not_flagged(session, study):
    ev = make_evaluator(session, study)
    _varied_votes(session, ev, _pairs(session, study, "normal")[:9])
    for i, pair in enumerate(_pairs(session, study, CHECK_SAME)[:1] + _pairs(session, study, CHECK_DEGRADED)[1:3]):
        _honest_check(session, ev, pair, a_left=i % 2 == 0)
    assert evaluate_evaluator(session, evaluator_id=ev.id) == []
    assert refresh_flags(session, evaluator_id=ev.id) == []
    assert not session.get(Evaluator, ev.id).flagged


def test_failed_checks_flag(session, study):
    ev = make_evaluator(session, study)
    _varied_votes(session, ev, _pairs(session, study, "normal")[:3])
    same = _pairs(session, study, CHECK_SAME)
    vote(session, pair=same[0], evaluator=ev, sides="left")  # a clip against itself is not better
    assert evaluate_evaluator(session, evaluator_id=ev.id) == []  # one failure is allowed
    degraded = _pairs(session, study, CHECK_DEGRADED)[1]
    vote(session, pair=degraded, evaluator=ev, sides="left", a_left=False)  # preferred the damaged copy
    [reason] = evaluate_evaluator(session, evaluator_id=ev.id)
    assert reason.startswith("failed 2 of 2 attention checks")
    assert refresh_flags(session, evaluator_id=ev.id) == [reason]
    stored = session.get(Evaluator, ev.id)
    assert stored.flagged and stored.flag_reasons == [reason]


def test_too_fast_flag(session, study):
    ev = make_evaluator(session, study)
    _varied_votes(session, ev, _pairs(session, study, "normal")[:5], time_ms=1500)
    [reason] = evaluate_evaluator(session, evaluator_id=ev.id)
    assert reason.startswith("5 of 5 votes were submitted in under 3 s")
    # a study that allows quick answers
    study.qc = {"min_seconds_per_vote": 1}
    session.flush()
    assert evaluate_evaluator(session, evaluator_id=ev.id) == []


def test_lowering_the_threshold_unflags_votes_marked_too_fast_when_cast(session, study):
    """The sticky too-fast bug: votes cast at 2.5 s under the default 3 s carry the vote service's too_fast mark;
    once the study allows 2 s, the same stored durations are judged again and nobody stays flagged ("8 of 8
    votes were submitted in under 2 s" was the message on the old code)."""
    ev = make_evaluator(session, study)
    for i, pair in enumerate(_pairs(session, study, "normal")[:8]):
        vote(session, pair=pair, evaluator=ev, a_left=i % 2 == 0, time_ms=2500, too_fast=True,
             sides={k: ("left", "right", "tie")[(i + j) % 3] for j, k in enumerate(
                 ["text_relevance", "appearance_distortion", "appearance_aesthetics", "motion_naturalness",
                  "motion_amplitude", "overall_quality"])})
    [reason] = refresh_flags(session, evaluator_id=ev.id)
    assert reason.startswith("8 of 8 votes were submitted in under 3 s")
    study.qc = {"min_seconds_per_vote": 2}
    session.flush()
    assert refresh_study_flags(session, study_id=study.id) == 0
    stored = session.get(Evaluator, ev.id)
    assert not stored.flagged and stored.flag_reasons == []


def test_straightlining_flag_ignores_checks(session, study):
    ev = make_evaluator(session, study)
    normal = _pairs(session, study, "normal")
    for i, pair in enumerate(normal[:8]):
        vote(session, pair=pair, evaluator=ev, sides="left", a_left=i % 2 == 0)
    [reason] = evaluate_evaluator(session, evaluator_id=ev.id)
    assert "chose 'left' for 48 of 48 answers across 8 votes" in reason

    # all-left on degraded checks (the honest answer when the original is left) does not make anyone a
    # straight-liner: 7 varied real votes + 3 checks stay below the 8-real-vote minimum and the share
    ev2 = make_evaluator(session, study)
    _varied_votes(session, ev2, normal[:7], seed=3)
    for pair in _pairs(session, study, CHECK_DEGRADED):
        _honest_check(session, ev2, pair, a_left=True)
    assert evaluate_evaluator(session, evaluator_id=ev2.id) == []


def test_disabled_qc_and_refresh_clears_flags(session, study):
    ev = make_evaluator(session, study)
    _varied_votes(session, ev, _pairs(session, study, "normal")[:3], time_ms=100)
    assert refresh_flags(session, evaluator_id=ev.id)
    assert refresh_study_flags(session, study_id=study.id) == 1
    study.qc = {"enabled": False}
    session.flush()
    assert refresh_flags(session, evaluator_id=ev.id) == []
    stored = session.get(Evaluator, ev.id)
    assert not stored.flagged and stored.flag_reasons == []
    assert evaluate_evaluator(session, evaluator_id=ev.id, settings=QCSettings(min_seconds_per_vote=0.05)) == []


def test_refreshing_an_evaluator_that_does_not_exist_says_so(session, study):
    """Both ways in (settings read from the study, or given) name the missing evaluator instead of failing on
    ``None.flagged``."""
    with pytest.raises(ValueError, match="evaluator 987654 does not exist"):
        refresh_flags(session, evaluator_id=987654)
    with pytest.raises(ValueError, match="evaluator 987654 does not exist"):
        refresh_flags(session, evaluator_id=987654, settings=QCSettings())


def _model_votes(session, ev, pairs, choose, seed):
    """One vote per pair; ``choose(rng, fast_left)`` gives the side for every criterion."""
    rng = random.Random(seed)
    for pair in pairs:
        a_left = rng.random() < 0.5
        vote(session, pair=pair, evaluator=ev, a_left=a_left, sides=choose(rng, a_left))


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_reliability_rule_flags_a_rater_who_passes_checks_but_answers_at_random(session, study):
    """A careless rater who happens to get the checks right is still judged by all their answers: against the
    other raters' consensus on the same pairs, a random clicker agrees far less than an honest rater does."""
    normal = _pairs(session, study, "normal")
    keys = ["text_relevance", "appearance_distortion", "appearance_aesthetics", "motion_naturalness",
            "motion_amplitude", "overall_quality"]

    def honest(rng, a_left):  # clip A's model is clearly better: chosen 9 times in 10
        better = "left" if a_left else "right"
        worse = "right" if a_left else "left"
        return {k: better if rng.random() < 0.9 else rng.choice([worse, "tie"]) for k in keys}

    raters = [make_evaluator(session, study) for _ in range(12)]
    for i, ev in enumerate(raters):
        _model_votes(session, ev, normal, honest, seed=i)
    careless = make_evaluator(session, study)
    _model_votes(session, careless, normal, lambda rng, _a: {k: rng.choice(["left", "right", "tie"]) for k in keys},
                 seed=99)
    for i, pair in enumerate(_pairs(session, study, CHECK_SAME)[:1] + _pairs(session, study, CHECK_DEGRADED)[1:2]):
        _honest_check(session, careless, pair, a_left=i % 2 == 0)
    assert evaluate_evaluator(session, evaluator_id=careless.id) == []  # the per-session rules see nothing

    assert refresh_study_flags(session, study_id=study.id) == 1
    stored = session.get(Evaluator, careless.id)
    [reason] = stored.flag_reasons
    assert reason.startswith("answers agree with the other raters far less than an honest rater's would")
    assert "over 12 votes" in reason and "random clicker 33%" in reason
    assert not any(session.get(Evaluator, ev.id).flagged for ev in raters)
    # kept by the per-vote refresh, dropped when the study switches the rule off
    assert refresh_flags(session, evaluator_id=careless.id) == [reason]
    study.qc = {"reliability_alpha": 0}
    session.flush()
    assert refresh_study_flags(session, study_id=study.id) == 0


def test_study_answers_read_as_columns_are_the_join_they_replaced(session, study):
    # The reliability rule reads a study's answers as integer columns, the outcome coded in SQL and the checks'
    # known answers worked out per pair and criterion. The rows must be those of the one join with strings that
    # it replaced (tests/support/reliability_reference.py), degraded checks' unjudged criteria left out, and
    # the estimates on both the same.
    from app.services.qc import study_answers
    from app.trust.reliability import CHOICES, rater_reliability
    from tests.support.reliability_reference import reference_reliability, reference_study_answers

    rng = random.Random(3)
    keys = [c.key for c in study.criteria]
    checks = _pairs(session, study, CHECK_SAME)[:1] + _pairs(session, study, CHECK_DEGRADED)[:2]
    for i in range(6):
        ev = make_evaluator(session, study)
        _varied_votes(session, ev, _pairs(session, study, "normal")[:5], seed=i)
        for pair in checks:
            vote(session, pair=pair, evaluator=ev, a_left=rng.random() < 0.5,
                 sides={k: rng.choice(["left", "right", "tie"]) for k in keys})
    session.flush()
    old = reference_study_answers(session, study_id=study.id)
    table = study_answers(session, study_id=study.id)
    key_of = {c.id: c.key for c in study.criteria}
    new = [(int(table.rater[i]), int(table.vote[i]), int(table.pair[i]), key_of[int(table.criterion[i])],
            CHOICES[table.choice[i]], int(table.model_a[i]), int(table.model_b[i]),
            None if table.known[i] < 0 else CHOICES[table.known[i]]) for i in range(len(table))]
    assert sorted(new) == sorted((a.rater, a.vote, a.pair, a.criterion, a.choice, a.model_a, a.model_b, a.known)
                                 for a in old)
    assert {a.known for a in old} >= {"tie", "a", None}  # same-clip and degraded checks both in
    assert len(old) < 6 * 8 * len(keys)  # a degraded check's unjudged criteria are left out
    got, expected = rater_reliability(table), reference_reliability(old)
    assert {r: (e.votes, round(e.observed, 9)) for r, e in got.items()} == {
        r: (e.votes, round(e.observed, 9)) for r, e in expected.items()}


# ------------------------------------------------------------------ the session's answers counted in SQL


def _random_session(session, study, rng, *, n_real, checks):
    ev = make_evaluator(session, study)
    keys = [c.key for c in study.criteria]
    sides = ["left", "right", "tie", "both_bad"]
    # Leaning sessions too, some just short of a rule's share, so that the rules fire as well as stay quiet.
    lean, strength = rng.choice([None, "left", "right", "tie"]), rng.choice([0.7, 0.95])
    for pair in _pairs(session, study, "normal")[:n_real]:
        vote(session, pair=pair, evaluator=ev, a_left=rng.random() < 0.5, time_ms=rng.choice([900, 2500, 9000]),
             sides={k: lean if lean and rng.random() < strength else rng.choice(sides) for k in keys})
    careful = rng.random() < 0.5  # checks answered as an attentive rater would, or at random
    for pair in checks:
        if careful:
            _honest_check(session, ev, pair, a_left=rng.random() < 0.5, time_ms=rng.choice([900, 9000]))
        else:
            vote(session, pair=pair, evaluator=ev, a_left=rng.random() < 0.5, time_ms=rng.choice([900, 9000]),
                 sides={k: rng.choice(sides) for k in keys})
    return ev


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_the_answers_counted_in_sql_are_those_read_one_by_one(session, study):
    # QC judges a session after each of its votes from its answers counted in SQL (a row per vote, the checks
    # read in full) rather than every answer read: the counts must be those of the answers read one by one,
    # in the order voted, for a session with no votes, with only checks, and with "both are bad" answers.
    from app.services.attention import AnswerSummary, answer_summary, answered_votes

    rng = random.Random(11)
    same, degraded = _pairs(session, study, CHECK_SAME), _pairs(session, study, CHECK_DEGRADED)
    no_choices = _random_session(session, study, rng, n_real=3, checks=degraded[:1])
    # A vote whose choices are gone (the app never stores one: every criterion must be answered) still counts as
    # a vote, with no answers: both reads keep it.
    emptied = session.scalars(select(Vote.id).where(Vote.evaluator_id == no_choices.id).order_by(Vote.id)).first()
    session.execute(delete(VoteChoice).where(VoteChoice.vote_id == emptied))
    sessions = [make_evaluator(session, study), no_choices,
                _random_session(session, study, rng, n_real=0, checks=degraded[:2]),
                _random_session(session, study, rng, n_real=9, checks=[]),
                *(_random_session(session, study, rng, n_real=rng.randint(1, 10),
                                  checks=rng.sample(same, 1) + rng.sample(degraded, 2)) for _ in range(6))]
    session.flush()
    for ev in sessions:
        counted = answer_summary(session, evaluator_id=ev.id)
        assert counted == AnswerSummary.of(answered_votes(session, evaluator_id=ev.id))
    # what was read is not empty: the comparison covers checks, real votes and each side
    everything = [answer_summary(session, evaluator_id=ev.id) for ev in sessions]
    assert sum(len(a.checks) for a in everything) == 1 + 2 + 6 * 3
    assert any(t.answers == 0 for t in everything[1].votes)
    assert all(sum(getattr(t, side) for a in everything for t in a.votes) > 0 for side in ("left", "right", "tie"))
    assert sum(t.answers - t.left - t.right - t.tie for a in everything for t in a.votes) > 0  # both are bad


def test_the_rules_on_counted_answers_give_what_they_gave_on_every_answer(session, study):
    # The rules now take the counted answers; tests/support/qc_reference.py keeps them as they read every answer.
    # On random sessions and settings both give the same flag reasons, word for word, and the same extra check.
    from app.services.attention import AnswerSummary, answered_votes, suspicion
    from app.services.qc import flag_reasons
    from tests.support.qc_reference import reference_flag_reasons, reference_suspicion

    rng = random.Random(5)
    same, degraded = _pairs(session, study, CHECK_SAME), _pairs(session, study, CHECK_DEGRADED)
    sessions = [_random_session(session, study, rng, n_real=rng.randint(0, 10),
                                checks=rng.sample(same, rng.randint(0, 1)) + rng.sample(degraded, rng.randint(0, 2)))
                for _ in range(40)]
    # And two on a rule's edge: three real pairs all "indistinguishable" and two passed checks (too few real pairs
    # for a call, however many votes), and one vote in ten too fast (at the share allowed, not over it).
    few = make_evaluator(session, study)
    for pair in _pairs(session, study, "normal")[:3]:
        vote(session, pair=pair, evaluator=few, sides="tie")
    for pair in (same[0], degraded[0]):
        _honest_check(session, few, pair)
    one_fast = make_evaluator(session, study)
    for i, pair in enumerate(_pairs(session, study, "normal")[:10]):
        keys = [c.key for c in study.criteria]  # a mixed answer, so that only the time can make a call
        vote(session, pair=pair, evaluator=one_fast, sides={keys[0]: "left", keys[1]: "right"} | dict.fromkeys(
            keys[2:], "tie"), time_ms=900 if i == 0 else 9000)
    sessions += [few, one_fast]
    session.flush()
    fired, calls = set(), set()
    for ev in sessions:
        votes = answered_votes(session, evaluator_id=ev.id)
        for _ in range(6):
            settings = QCSettings(min_seconds_per_vote=rng.choice([1.0, 3.0]),
                                  max_too_fast_share=rng.choice([0.1, 0.1, 0.3]), max_failed_checks=rng.choice([0, 1]),
                                  straightline_min_votes=rng.choice([1, 4, 8]),
                                  straightline_share=rng.choice([0.5, 0.7, 0.9]))
            reasons = flag_reasons(AnswerSummary.of(votes), settings)
            assert reasons == reference_flag_reasons(votes, settings)
            call = suspicion(AnswerSummary.of(votes), settings)
            assert call == reference_suspicion(votes, settings)
            fired.update("too fast" if "votes were submitted in under" in r else r.split(" ")[0] for r in reasons)
            calls.add(call)
    assert fired == {"failed", "too fast", "chose"}  # every rule fired on some session, and stayed quiet on others
    assert calls >= {None, CHECK_SAME, CHECK_DEGRADED}


def test_straightlining_at_an_even_split_names_left():
    # Only at a share of 0.5 can left and right tie; the reason then names left, whichever came first.
    reason = straightline_reason(["right", "left"] * 24, n_votes=8, min_votes=8, share=0.5)
    assert reason is not None and reason.startswith("chose 'left' for 24 of 48")
