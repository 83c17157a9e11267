"""Study-wide QC re-judgings inside votes: cheap ones always run; an expensive one is spaced out, and a trigger
that comes too soon is owed to the next vote rather than dropped."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.services import qc
from app.services.assignments import evaluator_state
from app.services.rejudging import Rejudging
from tests.factories import make_evaluator, make_pairs, make_study


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _job(clock: Clock, ran: list[float], seconds: float):
    def job(_session) -> None:
        ran.append(clock.now)
        clock.now += seconds  # the re-judging itself takes this long
    return job


def test_cheap_rejudgings_run_at_every_trigger():
    clock, ran = Clock(), []
    r = Rejudging(clock=clock, cheap_s=0.01, spacing=20)
    for _ in range(5):
        assert r.run_if_allowed(("db", 1, "clusters"), None, triggered=True, job=_job(clock, ran, 0.002))
    assert len(ran) == 5
    assert not r.run_if_allowed(("db", 1, "clusters"), None, triggered=False, job=_job(clock, ran, 0.002))


def test_an_expensive_rejudging_is_spaced_and_an_early_trigger_is_owed_not_lost():
    clock, ran = Clock(), []
    r = Rejudging(clock=clock, cheap_s=0.01, spacing=20)
    key = ("db", 1, "reliability")
    assert r.run_if_allowed(key, None, triggered=True, job=_job(clock, ran, 0.5))  # took 0.5 s: wait 10 s
    clock.now += 3
    assert not r.run_if_allowed(key, None, triggered=True, job=_job(clock, ran, 0.5))
    assert r.owed(key)
    clock.now += 3  # a vote that triggers nothing, still inside the wait: nothing runs, still owed
    assert not r.run_if_allowed(key, None, triggered=False, job=_job(clock, ran, 0.5)) and r.owed(key)
    clock.now += 5  # the wait is over: the next vote of the study, whatever its kind, pays what was owed
    assert r.run_if_allowed(key, None, triggered=False, job=_job(clock, ran, 0.5))
    assert not r.owed(key) and len(ran) == 2
    # Other studies and other checks are not held back by this one.
    assert r.run_if_allowed(("db", 2, "reliability"), None, triggered=True, job=_job(clock, ran, 0.5))
    assert r.run_if_allowed(("db", 1, "clusters"), None, triggered=True, job=_job(clock, ran, 0.5))


def test_a_failed_rejudging_stays_owed():
    clock = Clock()
    r = Rejudging(clock=clock)
    key = ("db", 1, "clusters")

    def boom(_session) -> None:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        r.run_if_allowed(key, None, triggered=True, job=boom)
    assert r.owed(key)


def test_reliability_is_rejudged_at_a_step_that_grows_with_the_study():
    """Every 10 completed sessions up to 200, then every twentieth of those so far: its cost per completed session
    stays flat as the study grows, and it never depends on how fast the votes came."""
    due = [f for f in range(1, 1001) if f % qc.reliability_step(f) == 0]
    assert due[:20] == list(range(10, 201, 10))
    assert [f for f in due if 390 <= f <= 460] == [390, 400, 420, 440, 460]
    assert [f for f in due if f > 950] == [960, 1000]
    # Answers read per completed session: a re-judging reads every session's answers (f of them).
    per_session = [f / qc.reliability_step(f) for f in due if f >= 400]
    assert max(per_session) < 40  # tens of sessions of answers per completed session, at any size


def test_the_vote_path_rejudges_reliability_when_due_whatever_ran_just_before(monkeypatch, session):
    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    ev = make_evaluator(session, study)
    session.commit()
    runs = []
    monkeypatch.setattr(qc, "refresh_reliability_flags", lambda _s, *, study_id, settings=None: runs.append(study_id))
    monkeypatch.setattr(qc, "CLUSTER_CHECK_COMPLETIONS", 1)  # every completed session is due
    state = evaluator_state(session, evaluator_id=ev.id)
    state = replace(state, qc=replace(state.qc, enabled=True, reliability_alpha=0.01))
    make_evaluator(session, study).completed_at = ev.created_at
    session.flush()
    qc.refresh_reliability_after_vote(session, state=state, completed=True)
    qc.refresh_reliability_after_vote(session, state=state, completed=True)  # at once again: still runs
    qc.refresh_reliability_after_vote(session, state=state, completed=False)  # not a completion: nothing
    assert runs == [study.id, study.id]


def test_a_forced_rejudging_runs_inside_the_wait():
    """A session completing re-judges its address cluster at once, whatever ran just before."""
    clock, ran = Clock(), []
    r = Rejudging(clock=clock, cheap_s=0.0, spacing=40)
    key = ("db", 1, "clusters")
    assert r.run_if_allowed(key, None, triggered=True, job=_job(clock, ran, 0.01))
    assert not r.run_if_allowed(key, None, triggered=True, job=_job(clock, ran, 0.01)) and r.owed(key)
    assert r.run_if_allowed(key, None, triggered=True, force=True, job=_job(clock, ran, 0.01))
    assert not r.owed(key) and len(ran) == 2


def test_results_settle_what_a_study_is_owed_before_counting(monkeypatch, session):
    """A session whose last votes fell inside the wait (a swarm need never complete) is judged before the
    results count its votes: reading the results runs the owed re-judging."""
    from app.services.results_cache import get_results

    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    ev = make_evaluator(session, study, ip_hash="same-address")
    make_evaluator(session, study, ip_hash="same-address")
    session.commit()
    clock, runs = Clock(), []
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, cheap_s=0.0, spacing=40))
    import app.services.results_cache as results_cache

    monkeypatch.setattr(results_cache, "REJUDGING", qc.REJUDGING)

    def fake_refresh(_session, *, study_id, settings=None):
        runs.append(study_id)
        clock.now += 0.5
        return 0

    monkeypatch.setattr(qc, "refresh_cluster_flags", fake_refresh)
    state = evaluator_state(session, evaluator_id=ev.id)
    state = replace(state, qc=replace(state.qc, enabled=True, cluster_check_alpha=0.01))
    qc.refresh_cluster_flags_after_vote(session, state=state, done=3, completed=False)
    qc.refresh_cluster_flags_after_vote(session, state=state, done=6, completed=False)  # inside the wait: owed
    assert runs == [study.id]
    session.commit()
    get_results(session, study_id=study.id)
    assert runs == [study.id, study.id]
    get_results(session, study_id=study.id)  # nothing owed any more
    assert runs == [study.id, study.id]
