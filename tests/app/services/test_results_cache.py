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
