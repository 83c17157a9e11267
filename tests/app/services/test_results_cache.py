"""The results cache: no recomputation while nothing changed; a new vote or a QC flag triggers exactly one."""

from __future__ import annotations

from app.criteria import DEFAULT_CRITERIA
from app.models import Evaluator, Pair
from app.services.results_cache import ResultsCache
from app.services.results_data import load_vote_frame
from tests.app.services.results_factory import cast_vote, voted_study
from tests.factories import make_evaluator

KEYS = [c.key for c in DEFAULT_CRITERIA]


def test_same_object_until_a_vote_arrives(session):
    study = voted_study(session, n_prompts=3, n_evaluators=2)
    cache = ResultsCache()
    first = cache.results(session, study_id=study.id)
    again = cache.results(session, study_id=study.id)
    assert again is first and cache.computations == 1
    assert first.results["n_votes"] == 6

    pair = session.query(Pair).filter_by(study_id=study.id).first()
    cast_vote(session, pair=pair, evaluator=make_evaluator(session, study), choices=dict.fromkeys(KEYS, "right"),
              a_left=True)
    updated = cache.results(session, study_id=study.id)
    assert updated is not first and cache.computations == 2
    assert updated.results["n_votes"] == 7
    assert cache.frame_loads == {"full": 1, "incremental": 1, "reflag": 0}
    # The incrementally grown frame equals a fresh load.
    assert updated.frame.reset_index(drop=True).equals(load_vote_frame(session, study_id=study.id))
    assert cache.results(session, study_id=study.id) is updated


def test_flagging_an_evaluator_recomputes_and_the_switch_is_cached_separately(session):
    study = voted_study(session, n_prompts=3, n_evaluators=2)
    cache = ResultsCache()
    before = cache.results(session, study_id=study.id)
    ev = session.query(Evaluator).filter_by(study_id=study.id).first()
    ev.flagged = True
    session.flush()
    after = cache.results(session, study_id=study.id)
    assert after is not before
    assert after.results["n_votes"] == 3 and after.results["excluded_flagged_votes"] == 3
    assert cache.frame_loads["reflag"] == 1 and after.frame["flagged"].sum() == 3 * len(KEYS)
    with_flagged = cache.results(session, study_id=study.id, include_flagged=True)
    assert with_flagged.results["n_votes"] == 6 and with_flagged is not after
    assert cache.results(session, study_id=study.id, include_flagged=True) is with_flagged
    assert cache.computations == 3


def test_a_deleted_vote_reloads_the_frame(session):
    study = voted_study(session, n_prompts=2, n_evaluators=2)
    cache = ResultsCache()
    cache.results(session, study_id=study.id)
    from app.models import Vote

    session.delete(session.query(Vote).filter_by(study_id=study.id).order_by(Vote.id).first())
    session.flush()
    assert cache.results(session, study_id=study.id).results["n_votes"] == 3
    assert cache.frame_loads["full"] == 2


def test_a_computation_neither_blocks_other_studies_nor_holds_the_database(session, monkeypatch):
    """While study A's statistics run, study B's cached page is served and a vote can be written."""
    import threading

    from app import db
    from app.services import results_cache

    study_a = voted_study(session, n_prompts=2, n_evaluators=2)
    study_b = voted_study(session, n_prompts=2, n_evaluators=2)
    session.commit()
    cache = ResultsCache()
    hit_b = cache.results(session, study_id=study_b.id)
    session.commit()

    real = results_cache.compute
    entered, release = threading.Event(), threading.Event()

    def slow_for_a(frame, **kw):
        if len(frame) and (frame["study_id"] == study_a.id).all():
            entered.set()
            release.wait(60)
        return real(frame, **kw)

    monkeypatch.setattr(results_cache, "compute", slow_for_a)
    out = {}

    def compute_a():
        with db.session_scope() as s:
            out["a"] = cache.results(s, study_id=study_a.id)

    worker = threading.Thread(target=compute_a)
    worker.start()
    try:
        assert entered.wait(60), "study A's computation never started"
        with db.session_scope() as s:  # SQLite: would wait on the write lock if A's request still held it
            assert cache.results(s, study_id=study_b.id) is hit_b
            pair = s.query(Pair).filter_by(study_id=study_a.id).first()
            cast_vote(s, pair=pair, evaluator=make_evaluator(s, s.get(type(study_a), study_a.id)),
                      choices=dict.fromkeys(KEYS, "tie"), a_left=True)
    finally:
        release.set()
        worker.join(60)
    assert out["a"].results["n_votes"] == 4
