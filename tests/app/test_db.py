"""SQLite transaction modes: writers serialise up front, long reads never hold up a writer."""

import sqlite3

import pytest
from sqlalchemy import select, text

from app.db import read_session_scope, session_scope
from app.models import Study
from tests.factories import make_study


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
