"""app/raw_sql.py: the rating flow's statements on the bare DB-API cursor read and write exactly as SQLAlchemy's
execution would, inside the session's own transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, event, exc, insert, select, update

from app.models import Assignment, Clip, Evaluator, Pair
from app.raw_sql import RawStatement
from tests.conftest import BACKENDS
from tests.factories import make_evaluator, make_pairs, make_study

_ev, _clip, _as = Evaluator.__table__, Clip.__table__, Assignment.__table__
# Typed columns of every kind the flow reads: a timestamp, a boolean, JSON, a float (PostgreSQL's numeric
# converters depend on the type code the driver reports), nullable text.
_READ = (select(_ev.c.id, _ev.c.completed_at, _ev.c.flagged, _ev.c.flag_reasons, _ev.c.completion_code,
                _clip.c.fps, _clip.c.id.label("clip_id"))
         .join(_clip, _clip.c.study_id == _ev.c.study_id)
         .where(_ev.c.study_id == bindparam("study_id"), _ev.c.flagged == bindparam("flagged"))
         .order_by(_ev.c.id, _clip.c.id))
_FLAG = update(_ev).where(_ev.c.id == bindparam("evaluator_id")).values(flagged=True, flag_reasons=bindparam("r"))
_INSERT_ASSIGNMENT = RawStatement(insert(_as), columns=(
    "token", "evaluator_id", "pair_id", "position", "left_clip_id", "right_clip_id", "status", "shown_at"))


def _study_with_evaluators(session):
    study = make_study(session)
    pairs = make_pairs(session, study)
    done = make_evaluator(session, study, flagged=True, flag_reasons=["too fast", "ünïcode"],
                          completed_at=datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=UTC), completion_code="C0DE")
    make_evaluator(session, study)
    session.commit()
    return study, pairs, done


def _assignment(evaluator_id: int, pair: Pair, token: str, position: int = 1) -> dict:
    return {"token": token, "evaluator_id": evaluator_id, "pair_id": pair.id, "position": position,
            "left_clip_id": pair.clip_a_id, "right_clip_id": pair.clip_b_id, "status": "open",
            "shown_at": datetime.now(UTC)}


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_rows_read_exactly_as_sqlalchemy_reads_them(session):
    study, _pairs, done = _study_with_evaluators(session)
    for flagged in (True, False):
        params = {"study_id": study.id, "flagged": flagged}
        expected = [tuple(r) for r in session.execute(_READ, params)]
        rows = RawStatement(_READ).all(session, params)
        assert rows == expected and len(rows) > 0
        # The same Python types, not merely equal values (a timestamp string would not compare equal anyway).
        assert [tuple(map(type, r)) for r in rows] == [tuple(map(type, r)) for r in expected]
        # Plain tuples for bulk reads: the same values, converted alike.
        assert RawStatement(_READ).all(session, params, named=False) == expected
    row = RawStatement(_READ).all(session, {"study_id": study.id, "flagged": True})[0]
    assert (row.id, row.flag_reasons, row.clip_id) == (done.id, ["too fast", "ünïcode"], row[6])
    assert row.completed_at.replace(tzinfo=UTC) == datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_writes_belong_to_the_sessions_transaction(session, engine):
    from sqlalchemy.orm import Session

    _study, _pairs, done = _study_with_evaluators(session)
    done_id = done.id  # read once: after a rollback the ORM object would reload, opening a transaction
    flag, read = RawStatement(_FLAG), RawStatement(select(_ev.c.flag_reasons).where(_ev.c.id == bindparam("i")))
    assert flag.run(session, {"evaluator_id": done_id, "r": ["rolled back"]}) == 1
    assert read.scalar(session, {"i": done_id}) == ["rolled back"]  # seen inside the transaction
    session.rollback()
    assert read.scalar(session, {"i": done_id}) == ["too fast", "ünïcode"]
    flag.run(session, {"evaluator_id": done_id, "r": ["kept"]})
    session.commit()
    # A new transaction after the commit: its write is its own, and a rollback takes back only that one (and
    # ends it: on SQLite another session could not write while it held the write lock).
    flag.run(session, {"evaluator_id": done_id, "r": ["second"]})
    session.rollback()
    with Session(engine) as other:
        assert other.scalar(select(Evaluator.flag_reasons).where(Evaluator.id == done_id)) == ["kept"]
        other.execute(_FLAG, {"evaluator_id": done_id, "r": ["other"]})
        other.commit()
    assert read.scalar(session, {"i": done_id}) == ["other"]
    # Pending ORM changes are not sent by a raw statement (as with any Core statement): flushed, they are seen.
    session.get(Evaluator, done_id).completion_code = "NEW"
    session.flush()
    assert RawStatement(select(_ev.c.completion_code).where(_ev.c.id == bindparam("i"))).scalar(
        session, {"i": done_id}) == "NEW"


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_a_constraint_violation_is_sqlalchemys_error_and_the_session_recovers(session):
    _study, pairs, done = _study_with_evaluators(session)
    _INSERT_ASSIGNMENT.run(session, _assignment(done.id, pairs[0], "same-token"))
    with pytest.raises(exc.IntegrityError, match="token"):  # the unique token, at another position
        _INSERT_ASSIGNMENT.run(session, _assignment(done.id, pairs[1], "same-token", position=2))
    session.rollback()
    assert _INSERT_ASSIGNMENT.run(session, _assignment(done.id, pairs[1], "same-token", position=2)) == 1
    session.commit()
    assert session.scalar(select(Assignment.pair_id).where(Assignment.token == "same-token")) == pairs[1].id


def test_listeners_see_each_statement_and_a_list_of_rows_is_one_executemany(session):
    study, pairs, done = _study_with_evaluators(session)
    seen: list[tuple[str, bool]] = []

    def listener(_conn, _cursor, statement, _params, _context, executemany):
        seen.append((statement.split()[0], executemany))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", listener)
    try:
        RawStatement(_READ).all(session, {"study_id": study.id, "flagged": True})
        rows = [_assignment(done.id, p, f"t{i}", position=i + 1) for i, p in enumerate(pairs[:3])]
        assert _INSERT_ASSIGNMENT.run(session, rows) == 3
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert [s for s in seen if s[0] != "BEGIN"] == [("SELECT", False), ("INSERT", True)]  # BEGIN: SQLite's
    assert session.scalar(select(Assignment.id).where(Assignment.token == "t2")) is not None


def test_statements_it_cannot_run_faithfully_are_refused_when_first_run(session):
    _study, pairs, done = _study_with_evaluators(session)
    # An IN list is rendered per run by SQLAlchemy; the cursor would get the placeholder.
    with pytest.raises(ValueError, match="expanding IN"):
        RawStatement(select(_ev.c.id).where(_ev.c.id.in_(bindparam("ids", expanding=True)))).all(
            session, {"ids": [done.id]})
    # A column left out whose default is computed in Python (the token) would be stored NULL.
    no_token = RawStatement(insert(_as), columns=("evaluator_id", "pair_id", "position", "left_clip_id",
                                                  "right_clip_id", "status", "shown_at"))
    row = _assignment(done.id, pairs[0], "unused")
    del row["token"]
    with pytest.raises(ValueError, match="Python-side defaults"):
        no_token.run(session, row)


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_none_is_stored_as_sqlalchemy_stores_it(session):
    """A vote without reason tags: SQLAlchemy stores None in a JSON column as JSON null, not SQL NULL; rows
    written by either path must look alike to a query in SQL (helper review of the first version)."""
    from sqlalchemy import func, text

    _study, _pairs, done = _study_with_evaluators(session)
    evaluator_id = done.id
    session.execute(_FLAG, {"evaluator_id": evaluator_id, "r": None})
    by_sqlalchemy = session.scalar(text("SELECT flag_reasons IS NULL FROM evaluators WHERE id = :i"),
                                   {"i": evaluator_id})
    RawStatement(_FLAG).run(session, {"evaluator_id": evaluator_id, "r": None})
    by_cursor = session.scalar(text("SELECT flag_reasons IS NULL FROM evaluators WHERE id = :i"),
                               {"i": evaluator_id})
    assert bool(by_cursor) == bool(by_sqlalchemy) is False
    assert session.scalar(select(func.count()).select_from(_ev).where(_ev.c.flag_reasons.is_(None))) == 0


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_a_savepoint_rolled_back_takes_back_a_raw_write_inside_it(session):
    """The connection kept for the transaction must not bypass ``begin_nested``: its SAVEPOINT is sent when the
    nested transaction first asks for a connection (helper review of the first version)."""
    _study, _pairs, done = _study_with_evaluators(session)
    evaluator_id = done.id
    flag = RawStatement(_FLAG)
    read = RawStatement(select(_ev.c.flag_reasons).where(_ev.c.id == bindparam("i")))
    flag.run(session, {"evaluator_id": evaluator_id, "r": ["outer"]})  # the transaction's connection is kept
    with pytest.raises(RuntimeError), session.begin_nested():
        flag.run(session, {"evaluator_id": evaluator_id, "r": ["inner"]})
        raise RuntimeError("the nested block fails")
    assert read.scalar(session, {"i": evaluator_id}) == ["outer"]
    session.commit()
    assert read.scalar(session, {"i": evaluator_id}) == ["outer"]


def test_a_missing_parameter_is_an_error_not_null(session):
    """``WHERE id = NULL`` would update nothing and say nothing: a misspelt key must raise, as in SQLAlchemy."""
    _study, _pairs, done = _study_with_evaluators(session)
    with pytest.raises(exc.InvalidRequestError, match="evaluator_id"):
        RawStatement(_FLAG).run(session, {"evaluator": done.id, "r": ["x"]})
    with pytest.raises(exc.NoResultFound):
        RawStatement(select(_ev.c.id).where(_ev.c.id == bindparam("i"))).one(session, {"i": -1})


def test_a_cursor_that_cannot_be_had_is_sqlalchemys_error(session, monkeypatch):
    """An error from the driver before the statement runs (a dropped connection when the cursor is opened)
    goes through SQLAlchemy's handler as well, so callers see its error types (the 503 handler reads them)."""
    import sqlite3

    from app import raw_sql

    _study, _pairs, done = _study_with_evaluators(session)
    conn = raw_sql._connection(session)

    class Broken:
        def cursor(self):
            raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr(type(conn), "connection", property(lambda self: Broken()))
        with pytest.raises(exc.OperationalError, match="disk I/O error"):
            RawStatement(_FLAG).run(session, {"evaluator_id": done.id, "r": ["x"]})
    session.rollback()
