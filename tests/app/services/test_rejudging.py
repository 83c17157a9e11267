"""Study-wide QC re-judgings after votes: cheap ones always run; an expensive one is spaced out, and a trigger
that comes too soon is owed to the next vote rather than dropped; they run after the vote's commit, never
holding the write lock, and never overwrite a flag stored since their snapshot."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app import db
from app.models import Evaluator, RejudgingDebt
from app.services import qc, rejudging_debts, rejudging_locks
from app.services.assignments import evaluator_state
from app.services.rejudging import Rejudging
from app.services.rejudging_locks import Busy
from tests.conftest import BACKENDS
from tests.factories import make_evaluator, make_pairs, make_study


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _job(clock: Clock, ran: list[float], seconds: float):
    def job() -> None:
        ran.append(clock.now)
        clock.now += seconds  # the re-judging itself takes this long
    return job


def test_cheap_rejudgings_run_at_every_trigger():
    clock, ran = Clock(), []
    r = Rejudging(clock=clock, cheap_s=0.01, spacing=20)
    for _ in range(5):
        assert r.run_if_allowed(("db", 1, "clusters"), triggered=True, job=_job(clock, ran, 0.002))
    assert len(ran) == 5
    assert not r.run_if_allowed(("db", 1, "clusters"), triggered=False, job=_job(clock, ran, 0.002))


def test_an_expensive_rejudging_is_spaced_and_an_early_trigger_is_owed_not_lost():
    clock, ran = Clock(), []
    r = Rejudging(clock=clock, cheap_s=0.01, spacing=20)
    key = ("db", 1, "reliability")
    assert r.run_if_allowed(key, triggered=True, job=_job(clock, ran, 0.5))  # took 0.5 s: wait 10 s
    clock.now += 3
    assert not r.run_if_allowed(key, triggered=True, job=_job(clock, ran, 0.5))
    assert r.owed(key)
    clock.now += 3  # a vote that triggers nothing, still inside the wait: nothing runs, still owed
    assert not r.run_if_allowed(key, triggered=False, job=_job(clock, ran, 0.5)) and r.owed(key)
    clock.now += 5  # the wait is over: the next vote of the study, whatever its kind, pays what was owed
    assert r.run_if_allowed(key, triggered=False, job=_job(clock, ran, 0.5))
    assert not r.owed(key) and len(ran) == 2
    # Other studies and other checks are not held back by this one.
    assert r.run_if_allowed(("db", 2, "reliability"), triggered=True, job=_job(clock, ran, 0.5))
    assert r.run_if_allowed(("db", 1, "clusters"), triggered=True, job=_job(clock, ran, 0.5))


def test_a_failed_rejudging_stays_owed():
    clock = Clock()
    r = Rejudging(clock=clock)
    key = ("db", 1, "clusters")

    def boom() -> None:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        r.run_if_allowed(key, triggered=True, job=boom)
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


def test_the_vote_path_rejudges_reliability_at_its_step_spaced_and_pays_what_it_owes(monkeypatch, session):
    """Due at a completion (every completed session here), after the vote's commit; a second one due inside
    the spacing is owed, and the study's next vote of any kind pays it once the wait is over."""
    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    ev = make_evaluator(session, study)
    session.commit()
    clock, runs = Clock(), []
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, spacing=40))

    def fake_rejudge(_engine, *, study_id, check, **_):
        runs.append((study_id, check))
        clock.now += 0.25  # took 0.25 s: the next waits 10 s

    monkeypatch.setattr(qc, "rejudge", fake_rejudge)
    monkeypatch.setattr(qc, "CLUSTER_CHECK_COMPLETIONS", 1)  # every completed session is due
    state = evaluator_state(session, evaluator_id=ev.id)
    state = replace(state, qc=replace(state.qc, enabled=True, reliability_alpha=0.01))
    make_evaluator(session, study).completed_at = ev.created_at
    session.flush()
    qc.refresh_reliability_after_vote(session, state=state, completed=True)
    assert runs == []  # not inside the vote's transaction
    session.commit()
    assert runs == [(study.id, qc.reliability_reasons)]
    qc.refresh_reliability_after_vote(session, state=state, completed=True)  # due again at once: owed
    session.commit()
    assert len(runs) == 1 and qc.REJUDGING.owed((db.database_key(session), study.id, "reliability"))
    clock.now += 11
    qc.refresh_reliability_after_vote(session, state=state, completed=False)  # any vote, after the wait
    session.commit()
    assert len(runs) == 2 and not qc.REJUDGING.owed((db.database_key(session), study.id, "reliability"))


def test_a_rejudging_rolled_back_with_its_vote_never_runs(monkeypatch, session):
    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    ev = make_evaluator(session, study)
    session.commit()
    runs = []
    monkeypatch.setattr(qc, "rejudge", lambda _engine, **_: runs.append(1))
    monkeypatch.setattr(qc, "CLUSTER_CHECK_COMPLETIONS", 1)
    state = evaluator_state(session, evaluator_id=ev.id)
    state = replace(state, qc=replace(state.qc, enabled=True, reliability_alpha=0.01))
    make_evaluator(session, study).completed_at = ev.created_at
    session.flush()
    qc.refresh_reliability_after_vote(session, state=state, completed=True)
    session.rollback()
    session.commit()
    assert runs == []


def test_a_cluster_rejudging_reads_a_snapshot_and_never_holds_other_writers(session):
    """While it judges (here: another rater's vote lands in the middle), the database's write lock is free,
    and what it stores is the cluster verdict, next to flags stored since its snapshot."""
    from sqlalchemy import select, update

    from app.models import Evaluator
    from tests.app.services.results_factory import swarm_study

    study = swarm_study(session, swarm=6, honest=20)
    swarm = session.scalars(select(Evaluator).where(Evaluator.ip_hash == "swarm").order_by(Evaluator.id)).all()
    others = session.scalars(select(Evaluator).where(Evaluator.ip_hash != "swarm")).all()
    study_id = study.id
    rejudging_debts.record(session, study_id=study_id, rule="clusters")  # what a vote's trigger writes
    session.commit()  # this test's own reads end their transaction (on SQLite every session's holds the lock)
    judged = []

    def check(read, **kwargs):
        verdicts = qc.cluster_reasons(read, **kwargs)
        # A writer meanwhile: with the rule inside a write transaction, this would wait out the lock timeout.
        with db.session_scope() as other:
            other.execute(update(Evaluator).where(Evaluator.id == swarm[0].id)
                          .values(flag_reasons=["failed 3 of 4 attention checks"], flagged=True))
        judged.append(verdicts)
        return verdicts

    written = qc.rejudge(db.get_engine(), study_id=study_id, check=check, reason=qc.CLUSTER_REASON, rule="clusters")
    assert written == 6 and set(judged[0]) == {e.id for e in swarm}
    session.expire_all()
    first = session.get(Evaluator, swarm[0].id)
    assert first.flag_reasons[0] == "failed 3 of 4 attention checks"  # the snapshot's [] did not overwrite it
    assert qc.is_cluster_reason(first.flag_reasons[1])
    assert all(not session.get(Evaluator, e.id).flagged for e in others)
    session.commit()
    # Switched off, the next re-judging finds the reasons it stored (in the stored JSON) and clears only them.
    from app.models import Study

    stored = session.get(Study, study_id)
    stored.qc = {**(stored.qc or {}), "cluster_check_alpha": 0}
    rejudging_debts.record(session, study_id=study_id, rule="clusters")
    session.commit()
    assert qc.rejudge(db.get_engine(), study_id=study_id, check=qc.cluster_reasons, reason=qc.CLUSTER_REASON,
                      rule="clusters") == 6
    session.expire_all()
    assert session.get(Evaluator, swarm[0].id).flag_reasons == ["failed 3 of 4 attention checks"]
    assert not any(session.get(Evaluator, e.id).flagged for e in swarm[1:])


def test_a_forced_rejudging_runs_inside_the_wait():
    """A session completing re-judges its address cluster at once, whatever ran just before."""
    clock, ran = Clock(), []
    r = Rejudging(clock=clock, cheap_s=0.0, spacing=40)
    key = ("db", 1, "clusters")
    assert r.run_if_allowed(key, triggered=True, job=_job(clock, ran, 0.01))
    assert not r.run_if_allowed(key, triggered=True, job=_job(clock, ran, 0.01)) and r.owed(key)
    assert r.run_if_allowed(key, triggered=True, force=True, job=_job(clock, ran, 0.01))
    assert not r.owed(key) and len(ran) == 2


def test_results_settle_what_a_study_is_owed_before_counting(monkeypatch, session):
    """A session whose last votes fell inside the wait (a swarm need never complete) is judged before the
    results count its votes: reading the results runs the owed re-judging."""
    from app.services.results_cache import get_results

    study, state = _swarm_study(session)
    clock = Clock()
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, cheap_s=0.0, spacing=40))
    runs = _counting_rule(monkeypatch, clock)
    qc.refresh_cluster_flags_after_vote(session, state=state, done=3, completed=False)
    session.commit()
    qc.refresh_cluster_flags_after_vote(session, state=state, done=6, completed=False)  # inside the wait: owed
    session.commit()
    assert runs == [study.id]
    get_results(session, study_id=study.id)
    assert runs == [study.id, study.id]
    get_results(session, study_id=study.id)  # nothing owed any more
    assert runs == [study.id, study.id]


def test_a_trigger_while_the_same_check_runs_is_owed_and_results_wait_for_the_running_one():
    import threading

    r = Rejudging(cheap_s=0.0, spacing=0.0)
    key = ("db", 1, "clusters")
    inside, release, ran = threading.Event(), threading.Event(), []

    def slow() -> None:
        inside.set()
        release.wait(5)
        ran.append("slow")

    t = threading.Thread(target=r.run_if_allowed, args=(key,), kwargs={"triggered": True, "job": slow})
    t.start()
    assert inside.wait(5)
    # A vote meanwhile: its snapshot may hold answers the running check did not read, so it is owed, not dropped.
    assert not r.run_if_allowed(key, triggered=True, job=lambda: ran.append("second")) and r.owed(key)
    threading.Timer(0.2, release.set).start()
    assert r.settle(("db", 1)) == 1  # waited for the running one, then ran the owed one
    t.join(5)
    assert ran == ["slow", "second"]


def test_a_study_with_no_address_to_compare_is_not_read_session_by_session(monkeypatch, session):
    """One address and fewer than MIN_OTHER_SESSIONS sessions elsewhere: nothing to test, told by counting; with
    enough others the sessions are read and judged."""
    study = make_study(session, n_prompts=2)
    for _ in range(5):
        make_evaluator(session, study, ip_hash="one-address")
    for i in range(qc.MIN_OTHER_SESSIONS - 1):
        make_evaluator(session, study, ip_hash=f"elsewhere-{i}")
    session.commit()
    reads = []
    original = qc._study_evaluators
    monkeypatch.setattr(qc, "_study_evaluators", lambda s, study_id: reads.append(study_id) or original(s, study_id))
    settings = replace(qc.qc_settings(study), enabled=True, cluster_check_alpha=0.01)
    assert qc.cluster_reasons(session, study_id=study.id, settings=settings) == {} and reads == []
    make_evaluator(session, study, ip_hash="one-more-elsewhere")
    session.commit()
    assert qc.cluster_reasons(session, study_id=study.id, settings=settings) == {} and reads == [study.id]


# ------------------------------------------------------------------ what is owed, kept in the database


def _debts(session, study_id: int) -> int:
    """The study's debts, read apart from ``session`` (whose transaction would hold SQLite's write lock)."""
    with db.read_session_scope(db.engine_of(session)) as read:
        return read.scalar(select(func.count()).select_from(RejudgingDebt).where(RejudgingDebt.study_id == study_id))


def _swarm_study(session):
    """Two sessions behind one address: every third vote of either triggers the cluster re-judging."""
    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    ev = make_evaluator(session, study, ip_hash="same-address")
    make_evaluator(session, study, ip_hash="same-address")
    session.commit()
    state = evaluator_state(session, evaluator_id=ev.id)
    return study, replace(state, qc=replace(state.qc, enabled=True, cluster_check_alpha=0.01))


def _counting_rule(monkeypatch, clock: Clock, verdicts: dict[int, str] | None = None) -> list[int]:
    """The cluster rule replaced by one that counts its runs, takes 0.5 s on ``clock`` and returns ``verdicts``;
    the real re-judging around it (snapshot, debts, flag write) is what is under test."""
    runs: list[int] = []

    def rule(_session, *, study_id, **_):
        runs.append(study_id)
        clock.now += 0.5
        return dict(verdicts or {})

    monkeypatch.setattr(qc, "cluster_reasons", rule)
    monkeypatch.setitem(qc.RULES, "clusters", (rule, qc.CLUSTER_REASON))
    return runs


def test_a_trigger_is_owed_in_the_votes_own_transaction_and_paid_by_the_rejudging(monkeypatch, session):
    study, state = _swarm_study(session)
    clock = Clock()
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, cheap_s=0.0, spacing=40))
    runs = _counting_rule(monkeypatch, clock)
    qc.refresh_cluster_flags_after_vote(session, state=state, done=3, completed=False)
    session.rollback()  # the vote failed: no debt, nothing runs
    assert _debts(session, study.id) == 0 and runs == []
    qc.refresh_cluster_flags_after_vote(session, state=state, done=3, completed=False)
    session.commit()  # ran at once and paid its debt
    assert runs == [study.id] and _debts(session, study.id) == 0
    qc.refresh_cluster_flags_after_vote(session, state=state, done=6, completed=False)
    session.commit()  # inside the wait: owed, in the database as well as here
    assert runs == [study.id] and _debts(session, study.id) == 1


def test_a_debt_of_a_process_that_stopped_is_settled_by_any_processs_results(monkeypatch, session):
    """The process that owed a re-judging is gone (a crash, a deploy; or the results are read in another web
    process): reading the results still runs it, once, and the flag it gives is what the results count."""
    from app.services.results_cache import get_results

    study, state = _swarm_study(session)
    clock = Clock()
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, cheap_s=0.0, spacing=40))
    verdicts: dict[int, str] = {}
    runs = _counting_rule(monkeypatch, clock, verdicts)
    qc.refresh_cluster_flags_after_vote(session, state=state, done=3, completed=False)
    session.commit()
    qc.refresh_cluster_flags_after_vote(session, state=state, done=6, completed=False)
    session.commit()
    assert runs == [study.id] and _debts(session, study.id) == 1
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, cheap_s=0.0, spacing=40))  # a new process
    verdicts[state.id] = f"{qc.CLUSTER_REASON}: scripted"  # what the owed judging finds
    get_results(session, study_id=study.id)
    assert runs == [study.id, study.id] and _debts(session, study.id) == 0
    session.expire_all()
    assert session.get(Evaluator, state.id).flagged
    get_results(session, study_id=study.id)  # paid: not run again
    assert len(runs) == 2


def test_a_debt_written_while_a_rejudging_runs_stays_and_a_failed_one_pays_nothing(monkeypatch, session):
    study = make_study(session, n_prompts=2)
    engine = db.engine_of(session)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()

    def failing(_session, **_) -> dict[int, str]:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        qc.rejudge(engine, study_id=study.id, check=failing, reason=qc.CLUSTER_REASON, rule="clusters")
    assert _debts(session, study.id) == 1

    def judging_while_a_vote_lands(_session, **_) -> dict[int, str]:
        # A vote triggers the rule after the re-judging read its debts: its snapshot may miss that vote.
        with db.session_scope(engine) as vote:
            rejudging_debts.record(vote, study_id=study.id, rule="clusters")
            rejudging_debts.record(vote, study_id=study.id, rule="reliability")
        return {}

    qc.rejudge(engine, study_id=study.id, check=judging_while_a_vote_lands, reason=qc.CLUSTER_REASON,
               rule="clusters")
    assert _debts(session, study.id) == 2  # the first is paid; the two written meanwhile stay
    assert rejudging_debts.owed_rules(session, study_id=study.id) == ["clusters", "reliability"]


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_exports_settle_what_the_study_is_owed_before_marking_who_is_flagged(monkeypatch, session):
    """The raw votes export's ``flagged`` column, and the exports that leave flagged sessions out, come after
    the owed re-judgings, as the results do."""
    from app.services.exports import raw_votes_frame
    from tests.app.services.qc_votes import vote

    study = make_study(session, n_prompts=2, qc={"cluster_check_alpha": 0.01})
    pairs = make_pairs(session, study)
    scripted = make_evaluator(session, study, ip_hash="one-address")
    vote(session, pair=pairs[0], evaluator=scripted, sides="left")
    session.commit()
    runs = _counting_rule(monkeypatch, Clock(), {scripted.id: f"{qc.CLUSTER_REASON}: scripted"})
    monkeypatch.setattr(qc, "REJUDGING", Rejudging())
    assert not raw_votes_frame(session, study=study)["flagged"].any() and runs == []  # nothing owed, nothing run
    rejudging_debts.record(session, study_id=study.id, rule="clusters")  # owed by a process that stopped
    session.commit()
    assert raw_votes_frame(session, study=study)["flagged"].all() and _debts(session, study.id) == 0
    assert runs == [study.id]


@pytest.mark.postgres
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
def test_two_processes_never_rejudge_one_rule_of_a_study_at_once(monkeypatch, session, database_url):
    """The older snapshot writing last would put back what the newer one corrected: on PostgreSQL a second
    process (its own engine, its own connections) finds the rule held: its vote path owes the re-judging, and its
    results wait for the first process's, then run their own."""
    study = make_study(session, n_prompts=2)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    runs = _counting_rule(monkeypatch, Clock())
    first, second = db.engine_of(session), create_engine(database_url)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with rejudging_locks.exclusive(first, study_id=study.id, rule="clusters"):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        # Another rule, or another study, is not held.
        with rejudging_locks.exclusive(second, study_id=study.id, rule="reliability"):
            pass
        with rejudging_locks.exclusive(second, study_id=study.id + 1, rule="clusters"):
            pass
        # The second process's vote path: its after-commit job finds the rule held and owes it; nothing ran.
        r, key = Rejudging(), ("second", study.id, "clusters")
        job = qc._paying(second, study.id, "clusters", qc.cluster_reasons, qc.CLUSTER_REASON)
        assert not r.run_if_allowed(key, triggered=True, job=job) and r.owed(key) and runs == []
        # Its results wait for the first process's re-judging to end, then run theirs and pay the debt.
        monkeypatch.setattr(qc, "REJUDGING", Rejudging())
        threading.Timer(0.3, release.set).start()
        with Session(second) as results:
            assert qc.settle(results, study_id=study.id)
        assert release.is_set() and runs == [study.id] and _debts(session, study.id) == 0
    finally:
        release.set()
        t.join(10)
        second.dispose()


def test_a_caller_inside_a_write_transaction_settles_without_waiting_for_itself(monkeypatch, session):
    """``blindpair analyze`` reads the study in a write transaction (on SQLite it holds this thread's write lock)
    and then asks for results: settling the web process's debt must not wait for that lock."""
    from rich.console import Console

    from app.cli import analyze

    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")  # owed by the web process
    session.commit()
    runs = _counting_rule(monkeypatch, Clock())
    monkeypatch.setattr(qc, "REJUDGING", Rejudging())  # the CLI is another process
    monkeypatch.setattr("app.cli.serve.require_migrated", lambda: None)
    analyze._analyze_study(Console(file=None, quiet=True), study.slug, include_flagged=False, html=None,
                           json_out=None)
    assert runs == [study.id] and _debts(session, study.id) == 0


def test_a_rejudging_that_finds_its_debts_paid_does_not_judge_again(monkeypatch, session):
    """Another process (or an earlier owed run) paid them with a later snapshot: nothing is left to judge."""
    study = make_study(session, n_prompts=2)
    session.commit()
    runs = _counting_rule(monkeypatch, Clock())
    engine = db.engine_of(session)
    assert qc.rejudge(engine, study_id=study.id, check=qc.cluster_reasons, reason=qc.CLUSTER_REASON,
                      rule="clusters") == 0 and runs == []
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    qc.rejudge(engine, study_id=study.id, check=qc.cluster_reasons, reason=qc.CLUSTER_REASON, rule="clusters")
    assert runs == [study.id] and _debts(session, study.id) == 0


def test_results_wait_for_a_rejudging_a_vote_starts_while_they_settle(monkeypatch, session):
    """A vote's re-judging starts after the results waited for the running ones and before they read the debts:
    the results wait for it too, and count only once nothing is owed."""
    from app.services.results_cache import get_results

    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    _counting_rule(monkeypatch, Clock())
    r = Rejudging()
    monkeypatch.setattr(qc, "REJUDGING", r)
    key = (db.database_key(session), study.id, "clusters")
    inside, done = threading.Event(), threading.Event()

    def vote_path_job() -> None:
        inside.set()
        time.sleep(0.3)
        done.set()

    real_owed_rules, hooked = rejudging_debts.owed_rules, []

    def owed_rules_as_a_vote_lands(read, *, study_id, upto=None):
        rules = real_owed_rules(read, study_id=study_id, upto=upto)
        if not hooked:
            hooked.append(1)
            threading.Thread(target=r.run_if_allowed, args=(key,),
                             kwargs={"triggered": True, "force": True, "job": vote_path_job}).start()
            assert inside.wait(10)
        return rules

    monkeypatch.setattr(rejudging_debts, "owed_rules", owed_rules_as_a_vote_lands)
    get_results(session, study_id=study.id)
    assert hooked and done.is_set() and _debts(session, study.id) == 0


def test_on_sqlite_a_second_process_finds_the_rule_held(session, database_url, tmp_path):
    """The web process and a CLI on one SQLite file: a file lock beside the database holds the rule."""
    first = db.engine_of(session)
    second = create_engine(database_url)
    try:
        with rejudging_locks.exclusive(first, study_id=1, rule="clusters"):
            with pytest.raises(Busy, match="clusters re-judging of study 1"), \
                    rejudging_locks.exclusive(second, study_id=1, rule="clusters", wait_s=0.1):
                pass
            with rejudging_locks.exclusive(second, study_id=1, rule="reliability"):
                pass
        with rejudging_locks.exclusive(second, study_id=1, rule="clusters"):
            pass
    finally:
        second.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
def test_results_wait_for_a_row_a_voting_session_holds_and_write_its_flag(monkeypatch, session, database_url):
    """PostgreSQL: a re-judging waits for an evaluator row a vote in flight holds (a short transaction), then
    writes the flag and pays the debt; it does not skip the row and pay for a verdict it never wrote."""
    from app.services.results_cache import get_results

    study = make_study(session, n_prompts=2, qc={"cluster_check_alpha": 0.01})
    make_pairs(session, study)
    held = make_evaluator(session, study, ip_hash="one-address")
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    runs = _counting_rule(monkeypatch, Clock(), {held.id: f"{qc.CLUSTER_REASON}: scripted"})
    monkeypatch.setattr(qc, "REJUDGING", Rejudging())
    other = create_engine(database_url)
    try:
        voting = other.connect()
        voting.execute(select(Evaluator.id).where(Evaluator.id == held.id).with_for_update(key_share=True))
        threading.Timer(0.5, voting.commit).start()  # the vote ends half a second later
        get_results(session, study_id=study.id)
        voting.close()
    finally:
        other.dispose()
    session.expire_all()
    assert session.get(Evaluator, held.id).flagged and _debts(session, study.id) == 0 and runs == [study.id]


def test_the_study_progress_counts_flagged_sessions_after_what_is_owed_as_the_spacing_allows(monkeypatch, session):
    """Pages poll the progress every few seconds: it runs what is owed once the spacing allows, never forces it
    (that would undo the spacing's bound on the re-judgings' cost); results force it."""
    from app.services.results_cache import get_results
    from app.services.studies import study_progress

    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    ev = make_evaluator(session, study, ip_hash="one-address")
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    clock = Clock()
    runs = _counting_rule(monkeypatch, clock, {ev.id: f"{qc.CLUSTER_REASON}: scripted"})
    r = Rejudging(clock=clock, cheap_s=0.0, spacing=40)
    monkeypatch.setattr(qc, "REJUDGING", r)
    key = (db.database_key(session), study.id, "clusters")
    assert r.run_if_allowed(key, triggered=True, job=lambda: setattr(clock, "now", clock.now + 0.5))  # 0.5 s: 20 s
    assert study_progress(session, study_id=study.id)["evaluators_flagged"] == 0 and runs == []  # inside the wait
    clock.now += 21
    assert study_progress(session, study_id=study.id)["evaluators_flagged"] == 1 and runs == [study.id]
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    get_results(session, study_id=study.id)  # inside the wait again, but results force it
    assert runs == [study.id, study.id] and _debts(session, study.id) == 0


def test_results_settle_what_was_owed_when_asked_not_what_votes_owe_meanwhile(monkeypatch, session):
    """Under steady voting a busy study always owes something: results run what was owed when they were asked
    for, once, and leave the triggers of votes landing meanwhile to the vote path (chasing them forced one
    re-judging after another for the whole wait)."""
    from app.services.results_cache import get_results

    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    engine = db.engine_of(session)
    runs: list[int] = []

    def rule_while_votes_land(_session, *, study_id, **_):
        runs.append(study_id)
        with db.session_scope(engine) as vote:  # a vote triggers the rule during every re-judging
            rejudging_debts.record(vote, study_id=study_id, rule="clusters")
        return {}

    monkeypatch.setattr(qc, "cluster_reasons", rule_while_votes_land)
    monkeypatch.setitem(qc.RULES, "clusters", (rule_while_votes_land, qc.CLUSTER_REASON))
    monkeypatch.setattr(qc, "REJUDGING", Rejudging())
    started = time.monotonic()
    get_results(session, study_id=study.id)
    assert runs == [study.id] and _debts(session, study.id) == 1  # the one written meanwhile waits its turn
    assert time.monotonic() - started < qc.SETTLE_WAIT_S / 2


def test_a_rejudging_owed_before_an_admin_changed_the_rules_judges_by_the_new_ones(monkeypatch, session):
    """A re-judging owed under the old QC settings runs after the admin switched the cluster check off: it reads
    the study's settings, not the trigger's, and does not flag again what the change cleared."""
    from app.services.results_cache import get_results
    from app.services.studies import set_qc

    study, state = _swarm_study(session)
    clock = Clock()
    monkeypatch.setattr(qc, "REJUDGING", Rejudging(clock=clock, cheap_s=0.0, spacing=40))

    def rule(_session, *, study_id, settings, **_):
        clock.now += 0.5
        on = settings.enabled and settings.cluster_check_alpha
        return {state.id: f"{qc.CLUSTER_REASON}: scripted"} if on else {}

    monkeypatch.setattr(qc, "cluster_reasons", rule)
    monkeypatch.setitem(qc.RULES, "clusters", (rule, qc.CLUSTER_REASON))
    qc.refresh_cluster_flags_after_vote(session, state=state, done=3, completed=False)
    session.commit()
    qc.refresh_cluster_flags_after_vote(session, state=state, done=6, completed=False)  # owed, under the old rules
    session.commit()
    session.expire_all()
    assert session.get(Evaluator, state.id).flagged
    set_qc(session, study_id=study.id, changes={"cluster_check_alpha": 0.0})
    session.commit()
    get_results(session, study_id=study.id)
    session.expire_all()
    assert not session.get(Evaluator, state.id).flagged and _debts(session, study.id) == 0


def test_results_are_served_when_a_rejudging_fails_and_the_log_says_so(monkeypatch, session, caplog):
    """A lock file that cannot be made (a read-only data folder, another user's file), a database error: the
    results page shows what is stored rather than an error, the debt stays, and the log names the study."""
    from app.services.results_cache import get_results

    study = make_study(session, n_prompts=2)
    make_pairs(session, study)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    _counting_rule(monkeypatch, Clock())
    monkeypatch.setattr(qc, "REJUDGING", Rejudging())

    def unwritable(*_a, **_k):
        raise PermissionError(13, "Permission denied", "/data/blindpair.db.rejudging-locks")

    monkeypatch.setattr(rejudging_locks.os, "open", unwritable)
    with caplog.at_level("ERROR", logger="app.services.qc"):
        assert get_results(session, study_id=study.id).results is not None
    assert _debts(session, study.id) == 1
    assert any(f"study {study.id}" in r.getMessage() and "lag" in r.getMessage() for r in caplog.records)


def test_a_list_of_studies_shows_what_is_stored_and_runs_no_rejudging(monkeypatch, session):
    from app.services.studies import study_progress

    study = make_study(session, n_prompts=2)
    rejudging_debts.record(session, study_id=study.id, rule="clusters")
    session.commit()
    runs = _counting_rule(monkeypatch, Clock())
    monkeypatch.setattr(qc, "REJUDGING", Rejudging())
    study_progress(session, study_id=study.id, settle_qc=False)
    assert runs == [] and _debts(session, study.id) == 1


def test_the_sqlite_lock_file_can_be_taken_by_another_user_of_the_database(session, tmp_path):
    """A CLI run by another user than the server's (an admin's `blindpair analyze`) takes the same lock: the folder
    and the file are readable by others (the umask permitting), and the lock needs no write access to the file."""
    import os
    import stat

    engine = db.engine_of(session)
    old_umask = os.umask(0o022)
    try:
        with rejudging_locks.exclusive(engine, study_id=7, rule="clusters"):
            pass
    finally:
        os.umask(old_umask)
    folder = Path(os.path.realpath(f"{engine.url.database}.rejudging-locks"))
    lock = folder / "study-7-clusters.lock"
    assert stat.S_IMODE(folder.stat().st_mode) & 0o055 == 0o055
    assert stat.S_IMODE(lock.stat().st_mode) & 0o044 == 0o044
    lock.chmod(0o444)  # as another user sees a file it does not own: read-only
    with rejudging_locks.exclusive(engine, study_id=7, rule="clusters"):
        pass
