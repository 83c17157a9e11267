"""SQLite transaction modes: writers serialise up front, long reads never hold up a writer."""

import sqlite3

import pytest
from sqlalchemy import select, text

from app.db import get_sessionmaker, read_session_scope, session_scope
from app.models import Study
from tests.factories import make_study
from tests.support.threads import run_in_threads


def _try_write(db_path) -> None:
    conn = sqlite3.connect(db_path, timeout=0.3, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE studies SET name = 'renamed'")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_read_session_does_not_block_a_writer(session, engine):
    make_study(session)
    session.commit()
    with read_session_scope() as reader:
        assert reader.scalars(select(Study.name)).all()  # the read transaction is open now
        _try_write(engine.url.database)  # would raise "database is locked" under BEGIN IMMEDIATE
        # The reader still sees its snapshot, not the concurrent rename.
        assert reader.scalars(select(Study.name)).one() != "renamed"


def test_a_write_session_takes_the_write_lock_at_begin(session, engine):
    make_study(session)
    session.commit()
    with session_scope() as writer:
        writer.execute(text("SELECT 1"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _try_write(engine.url.database)


def test_writers_of_one_process_queue_and_none_is_lost(session, engine):
    """Threads that write at once each get the lock in turn (the in-process queue in front of SQLite)."""
    study = make_study(session)
    session.commit()
    before = study.votes_per_pair

    def bump() -> None:
        for _ in range(20):
            with session_scope() as s:
                s.execute(text("UPDATE studies SET votes_per_pair = votes_per_pair + 1 WHERE id = :i"),
                          {"i": study.id})

    errors = run_in_threads(bump, 8)
    assert errors == []
    session.expire_all()
    assert session.get(Study, study.id).votes_per_pair == before + 8 * 20


def test_every_way_out_of_a_write_releases_the_lock(session, engine):
    """Commit, rollback, an error inside the transaction and a closed session all let the next writer in."""
    make_study(session)
    session.commit()
    with session_scope() as s:
        s.execute(text("UPDATE studies SET name = 'committed'"))
    with pytest.raises(RuntimeError), session_scope() as s:
        s.execute(text("UPDATE studies SET name = 'rolled back'"))
        raise RuntimeError("the request failed")
    s = get_sessionmaker()()
    s.execute(text("UPDATE studies SET name = 'abandoned'"))
    s.close()  # no commit: the pool rolls back on return
    with session_scope() as s:  # would wait 30 s if any of the above had kept the lock
        s.execute(text("UPDATE studies SET name = 'last'"))
    assert session.scalars(select(Study.name)).one() == "last"


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        self.sqlstate = sqlstate


def test_a_transaction_postgresql_cancelled_to_part_it_from_another_runs_again_and_nothing_else_does():
    from sqlalchemy.exc import OperationalError

    from app.db import CONFLICT_RETRIES, retry_on_conflict

    runs: list[str] = []

    def work(fail_with: list[str]) -> str:
        runs.append("run")
        if fail_with:
            raise OperationalError("UPDATE pairs", {}, _PgError(fail_with.pop(0)))
        return "stored"

    # A deadlock, then a serialisation failure: run again each time, and the third run is stored.
    assert retry_on_conflict(work)(["40P01", "40001"]) == "stored" and len(runs) == 3
    runs.clear()
    # Past the retries, the conflict reaches the caller (answered 503 and logged).
    with pytest.raises(OperationalError):
        retry_on_conflict(work)(["40P01"] * (CONFLICT_RETRIES + 1))
    assert len(runs) == CONFLICT_RETRIES + 1
    runs.clear()
    # A lock timeout or a bug is not run again: the first raise is the answer.
    for code in ("55P03", "23505"):
        with pytest.raises(OperationalError):
            retry_on_conflict(work)([code])
        assert runs == ["run"]
        runs.clear()
