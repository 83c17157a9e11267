"""Allocation properties over many simulated evaluators, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from sqlalchemy import func, select

from app import db
from app.models import Assignment, Evaluator, Pair, Study
from app.services.assignments import (
    InvalidInvite,
    StudyFull,
    StudyNotOpen,
    evaluator_state,
    join,
    next_assignment,
)
from app.services.votes import submit_vote
from tests.conftest import BACKENDS
from tests.factories import make_pairs, make_study
from tests.support.threads import run_in_threads


def _all(study, side="left"):
    return {c.key: side for c in study.criteria}


def _balance(session, study_id):
    """Per pair: (times clip_a was left, times clip_a was right), recomputed from the assignments themselves."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    rows = session.execute(
        select(Assignment.pair_id, Assignment.left_clip_id, Pair.clip_a_id).join(Pair, Pair.id == Assignment.pair_id)
        .where(Pair.study_id == study_id)
    ).all()
    for pair_id, left, clip_a in rows:
        counts[pair_id][0 if left == clip_a else 1] += 1
    return counts


def test_join_refuses_unknown_closed_and_full_studies(session):
    study = make_study(session, status="draft", sessions_per_invite=2)
    make_pairs(session, study)
    with pytest.raises(InvalidInvite):
        join(session, invite_token="nope")
    with pytest.raises(StudyNotOpen, match="not accepting"):
        join(session, invite_token=study.invite_token)
    study.status = "open"
    join(session, invite_token=study.invite_token)
    first = join(session, invite_token=study.invite_token, external_id="P1", platform_session_id="S1")
    with pytest.raises(StudyFull):
        join(session, invite_token=study.invite_token)
    # A returning participant with an unfinished session gets it back even when the study is full (proved by
    # the platform's session id beside the participant id: see tests/security/test_session_takeover.py).
    again = join(session, invite_token=study.invite_token, external_id="P1", platform_session_id="S1")
    assert again.id == first.id
    assert session.scalar(select(func.count(Evaluator.id))) == 2


def test_resume_returns_the_open_assignment_and_stops_at_quota(session):
    study = make_study(session, n_prompts=5, pairs_per_session=3)
    make_pairs(session, study)
    ev = join(session, invite_token=study.invite_token)
    first = next_assignment(session, evaluator_id=ev.id)
    assert next_assignment(session, evaluator_id=ev.id).id == first.id  # closing the browser: same pair
    seen = []
    for _ in range(3):
        a = next_assignment(session, evaluator_id=ev.id)
        assert evaluator_state(session, evaluator_id=ev.id).done == len(seen)
        seen.append(a.pair_id)
        submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=_all(study))
    assert next_assignment(session, evaluator_id=ev.id) is None
    assert ev.completed_at is not None
    assert evaluator_state(session, evaluator_id=ev.id).done == evaluator_state(session, evaluator_id=ev.id).quota == 3
    assert len(set(seen)) == 3


def test_session_ends_when_evaluator_has_seen_every_pair(session):
    study = make_study(session, n_prompts=2, pairs_per_session=10)
    make_pairs(session, study)
    ev = join(session, invite_token=study.invite_token)
    assert evaluator_state(session, evaluator_id=ev.id).quota == 2
    for _ in range(2):
        a = next_assignment(session, evaluator_id=ev.id)
        submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=_all(study, "tie"))
    assert next_assignment(session, evaluator_id=ev.id) is None


def test_closed_study_gives_no_new_pair(session):
    study = make_study(session)
    make_pairs(session, study)
    ev = join(session, invite_token=study.invite_token)
    resumed = join(session, invite_token=study.invite_token)
    next_assignment(session, evaluator_id=resumed.id)
    study.status = "closed"
    with pytest.raises(StudyNotOpen):
        next_assignment(session, evaluator_id=ev.id)
    with pytest.raises(StudyNotOpen):  # also for a pair that was already on screen
        next_assignment(session, evaluator_id=resumed.id)


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_many_evaluators_counterbalanced_no_repeats_fewest_first(session, db_backend):
    rng = random.Random(7)
    study = make_study(session, n_prompts=7, pairs_per_session=4, votes_per_pair=50)
    pairs = make_pairs(session, study)
    session.commit()
    pair_ids = [p.id for p in pairs]
    first_pairs = Counter()
    n_evaluators = 200 if db_backend == "sqlite" else 60
    held = []  # assignments left open for a while, so allocations interleave as with real people
    for i in range(n_evaluators):
        ev = join(session, invite_token=study.invite_token)
        seen = set()
        while True:
            # Fewest-first: the load of every pair this evaluator may still get, just before allocation.
            votes = dict(session.execute(select(Pair.id, Pair.votes_count).where(Pair.study_id == study.id)).all())
            open_by_pair = Counter(session.scalars(select(Assignment.pair_id).where(Assignment.status == "open")))
            load = {pid: votes[pid] + open_by_pair[pid] for pid in pair_ids if pid not in seen}
            a = next_assignment(session, evaluator_id=ev.id)
            if a is None:
                break
            assert a.pair_id not in seen, "an evaluator got the same pair twice"
            assert load[a.pair_id] == min(load.values()), "a pair with more votes was served before a lighter one"
            if not seen:
                first_pairs[a.pair_id] += 1
            seen.add(a.pair_id)
            if rng.random() < 0.3:
                held.append((a.token, ev.id))
                break  # comes back later, as if the tab stayed open
            submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=_all(study))
        if held and rng.random() < 0.5:
            token, ev_id = held.pop(rng.randrange(len(held)))
            submit_vote(session, assignment_token=token, evaluator_id=ev_id, choices=_all(study, "right"))
        if i % 20 == 0:
            session.commit()
    session.commit()
    balance = _balance(session, study.id)
    assert sum(sum(v) for v in balance.values()) > n_evaluators
    for pair in session.scalars(select(Pair).where(Pair.study_id == study.id)):
        a_left, a_right = balance[pair.id]
        assert abs(a_left - a_right) <= 1, f"pair {pair.id}: clip_a left {a_left} times, right {a_right} times"
        assert (pair.assigned_count, pair.a_left_count) == (a_left + a_right, a_left)
        done = session.scalar(select(func.count(Assignment.id)).where(Assignment.pair_id == pair.id,
                                                                     Assignment.status == "done"))
        assert pair.votes_count == done
    # Pair order is random per evaluator: the first pair is not the same for everyone.
    assert len(first_pairs) >= 3
    dupes = session.execute(
        select(Assignment.evaluator_id, Assignment.pair_id, func.count()).group_by(
            Assignment.evaluator_id, Assignment.pair_id).having(func.count() > 1)
    ).all()
    assert dupes == []


def test_side_is_random_when_balanced(session):
    """The first assignment of each pair picks its side by coin flip, not always clip_a on the left."""
    study = make_study(session, n_prompts=40, pairs_per_session=1)
    make_pairs(session, study)
    firsts = []
    for _ in range(40):
        ev = join(session, invite_token=study.invite_token)
        a = next_assignment(session, evaluator_id=ev.id)
        firsts.append(a.left_clip_id == a.clip_a_id)
    # 40 fair coin flips all equal has probability 2**-39.
    assert 0 < sum(firsts) < 40


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_concurrent_evaluators_keep_counterbalance(engine, db_backend):
    """Threads with their own sessions allocate at once: the pair lock keeps sides balanced."""
    maker = db.get_sessionmaker()
    with maker() as s:
        study = make_study(s, n_prompts=2, pairs_per_session=2, votes_per_pair=100)
        make_pairs(s, study)
        s.commit()
        token, study_id = study.invite_token, study.id

    def evaluator() -> None:
        for _ in range(3):
            with maker() as s:
                ev = join(s, invite_token=token)
                s.commit()
                while (a := next_assignment(s, evaluator_id=ev.id)) is not None:
                    s.commit()
                    crit = s.get(Study, study_id).criteria
                    submit_vote(s, assignment_token=a.token, evaluator_id=ev.id,
                                choices={c.key: "tie" for c in crit})
                    s.commit()

    errors = run_in_threads(evaluator, 8)
    assert errors == []
    with maker() as s:
        balance = _balance(s, study_id)
        assert sum(sum(v) for v in balance.values()) == 8 * 3 * 2
        for a_left, a_right in balance.values():
            assert abs(a_left - a_right) <= 1
        for pair in s.scalars(select(Pair).where(Pair.study_id == study_id)):
            assert pair.votes_count == 24


def test_attention_checks_take_slots_of_the_quota_without_repeats(session):
    """With checks due on every pair after the first, sessions mix checks in and keep their length."""
    from app.services.attention import CHECK_KINDS, ensure_attention_pairs

    study = make_study(session, n_prompts=6, pairs_per_session=4, qc={"attention_rate": 0.5})
    make_pairs(session, study)
    assert ensure_attention_pairs(session, study_id=study.id, n_sources=4, rng=random.Random(3)) == 8
    kinds = Counter()
    for _ in range(30):
        ev = join(session, invite_token=study.invite_token)
        assert evaluator_state(session, evaluator_id=ev.id).quota == 4
        sources = []
        for position in range(1, 5):
            a = next_assignment(session, evaluator_id=ev.id)
            assert a.position == position
            kinds[a.kind] += 1
            if a.kind in CHECK_KINDS:
                assert position > 1, "a session starts with a real pair"
                sources.append(a.clip_a_id)
            submit_vote(session, assignment_token=a.token, evaluator_id=ev.id, choices=_all(study, "tie"))
        assert next_assignment(session, evaluator_id=ev.id) is None
        assert len(sources) == len(set(sources)), "the same clip came back in a second check"
    assert kinds["normal"] > 0 and kinds["check_same"] + kinds["check_degraded"] > 0
    for a_left, a_right in _balance(session, study.id).values():
        assert abs(a_left - a_right) <= 1


def test_choosing_a_pair_counts_live_reservations_from_the_index_alone(session):
    # Every new page counts each pair's open assignments shown since the abandon limit. Reading each open row
    # for its shown_at made the choice 3.4x slower with 2,000 raters on screen (docs/performance.md).
    from app.services.assignments import _PICK, abandoned_before
    from app.services.attention import QCSettings

    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("the plan is SQLite's")
    study = make_study(session)
    make_pairs(session, study)
    compiled = _PICK.statement.compile(dialect=session.get_bind().dialect)
    params = compiled.construct_params({"study_id": study.id, "evaluator_id": 1,
                                        "since": abandoned_before(QCSettings())})
    plan = session.connection().exec_driver_sql(
        f"EXPLAIN QUERY PLAN {compiled.string}", tuple(params[k] for k in compiled.positiontup)).all()
    reservations = [row[-1] for row in plan if "ix_assignments_pair_id_status" in row[-1]]
    assert reservations == ["SEARCH assignments USING COVERING INDEX ix_assignments_pair_id_status_shown_at "
                            "(pair_id=? AND status=? AND shown_at>?)"], plan


def test_a_studys_criteria_are_read_once_per_process_and_never_across_databases(session, tmp_path):
    # Every vote needs the study's criteria twice (to check the answers, to show the next pair); they never change,
    # so after the first read no vote asks the database again. A fresh database (a new engine) whose study has
    # the same id but other criteria must get its own.
    from sqlalchemy import create_engine, event
    from sqlalchemy.orm import Session as OrmSession

    from app.models import Criterion
    from app.services.assignments import study_criteria

    study = make_study(session)
    make_pairs(session, study)
    session.commit()
    answers, keys = _all(study), [c.key for c in study.criteria]
    asked: list[str] = []
    engine = session.get_bind().engine
    listener = lambda *args: asked.append(args[2]) if "FROM criteria" in args[2] else None  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        first = study_criteria(session, study.id)
        for _ in range(3):
            evaluator = join(session, invite_token=study.invite_token)
            view = next_assignment(session, evaluator_id=evaluator.id)
            submit_vote(session, assignment_token=view.token, evaluator_id=evaluator.id, choices=answers)
            session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(asked) == 1 and [c.key for c in first] == keys

    other = create_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    db.Base.metadata.create_all(other)
    with OrmSession(other) as s2:
        again = make_study(s2)
        assert again.id == study.id  # the same id in another database
        s2.query(Criterion).filter(Criterion.study_id == again.id, Criterion.position > 0).delete()
        s2.flush()
        assert [c.key for c in study_criteria(s2, again.id)] == [first[0].key]
    other.dispose()


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_a_new_assignments_view_is_what_reading_it_back_gives(session):
    """The view next_assignment returns for a pair it has just reserved is built from the pair's row and the
    values inserted, not read back: it must equal the stored assignment's view, side by side, for both sides
    and for clips whose frames and rates differ (the page plays the longer one's duration)."""
    from dataclasses import replace

    from app.models import Clip
    from app.services.assignments import pair_view

    study = make_study(session, n_prompts=3, pairs_per_session=3,
                       answer_options={"both_bad": True, "reason_tags": ["blurry"], "comment": True})
    make_pairs(session, study)
    for i, clip in enumerate(session.scalars(select(Clip).where(Clip.study_id == study.id).order_by(Clip.id))):
        clip.frames, clip.fps, clip.width, clip.height = 8 + 7 * (i % 2), 8.0 + 8 * (i % 3), 32 + i, 24 + i
    session.commit()
    sides = set()
    for _ in range(4):
        ev = join(session, invite_token=study.invite_token)
        while (view := next_assignment(session, evaluator_id=ev.id)) is not None:
            stored = pair_view(session, token=view.token)
            assert stored is not None
            assert view.shown_at.replace(tzinfo=None) == stored.shown_at.replace(tzinfo=None)
            assert replace(view, shown_at=stored.shown_at) == stored
            sides.add(view.left_clip_id == view.clip_a_id)
            submit_vote(session, assignment_token=view.token, evaluator_id=ev.id, choices=_all(study))
            session.commit()
    assert sides == {True, False}  # both orientations were built
