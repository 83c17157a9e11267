"""Engine, session factory and the two session scopes: one per request, one for jobs and the CLI."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import ClassVar

from sqlalchemy import MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import get_settings

# Named constraints keep Alembic migrations stable on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


READ_ONLY_OPTION = "blindpair_read_only"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every model maps one Table (no mapping onto joins or selects), so the Core statements on
    # ``Model.__table__`` can be typed as table statements.
    __table__: ClassVar[Table]


def make_engine(url: str) -> Engine:
    """Build an engine; SQLite gets WAL, a busy timeout and write-serialising transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # pysqlite's own transaction handling is disabled so that we can BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _serialise_writers(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)


SQLITE_LOCK_TIMEOUT_S = 30  # the same patience as busy_timeout


def _serialise_writers(engine: Engine) -> None:
    """BEGIN IMMEDIATE for writing transactions, queued in-process on a lock before they reach SQLite.

    IMMEDIATE takes the write lock up front: read-then-write services (assignment, counters) cannot
    interleave, and a waiting writer retries inside busy_timeout instead of failing with "database is
    locked" at commit time. See https://sqlite.org/lang_transaction.html
    Waiting inside SQLite is slow, though: its busy handler polls with sleeps of up to 100 ms, so with a few
    dozen requests queued the benchmark saw p99 latencies of seconds while the lock was mostly free. Threads
    of this process therefore queue on a lock that wakes the next one the moment a writer commits or rolls
    back; other processes (a worker, the CLI) still meet at SQLite's own lock.
    Long reads (the results dashboard, exports) ask for a deferred BEGIN instead: under WAL a reader works
    on a snapshot and never holds up evaluators' votes.
    """
    write_lock = threading.Lock()
    holders: set[int] = set()  # id() of the DB-API connections whose transaction holds write_lock

    def release(dbapi_conn) -> None:
        # SQLAlchemy passes the pool's proxy to do_commit/do_rollback and the raw connection to do_close.
        key = id(getattr(dbapi_conn, "dbapi_connection", dbapi_conn))
        if key in holders:
            holders.discard(key)
            write_lock.release()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn):  # pragma: no cover - trivial
        if conn.get_execution_options().get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection
        if not write_lock.acquire(timeout=SQLITE_LOCK_TIMEOUT_S):
            raise sqlite3.OperationalError(
                f"database is locked: waited {SQLITE_LOCK_TIMEOUT_S} s for another request of this process "
                "to finish writing")
        holders.add(id(dbapi_conn.dbapi_connection))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            release(dbapi_conn)
            raise

    # Released after the DB-API commit or rollback has finished (SQLAlchemy's commit event fires before it),
    # and when a connection is closed, so no path out of a transaction keeps the lock.
    dialect = engine.dialect
    for name in ("do_commit", "do_rollback", "do_close"):
        original = getattr(dialect, name)

        def wrapped(dbapi_conn, _original=original) -> None:
            try:
                _original(dbapi_conn)
            finally:
                release(dbapi_conn)

        setattr(dialect, name, wrapped)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def reset_engine_cache() -> None:
    """Forget the cached engine (tests and the CLI switch databases through settings)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """Commit on success, roll back on error: the one transaction boundary for jobs and the CLI."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_session_scope() -> Iterator[Session]:
    """A session for long reads; on SQLite its transaction does not take the write lock. Never write in it."""
    session = Session(bind=get_engine().execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False)
    try:
        yield session
        session.rollback()
    finally:
        session.close()


def expire_cached(session: Session, model: type, pk: int, *attrs: str) -> None:
    """Forget ``attrs`` of the ``model`` row ``pk`` if this session holds it, after a Core UPDATE changed them.

    The rating flow writes with prebuilt Core statements (app/services/assignments.py), which do not update
    ORM objects; a caller that loaded the row earlier in the session (scripts, tests) then re-reads it.
    """
    obj = session.identity_map.get(session.identity_key(model, pk))
    if obj is not None:
        session.expire(obj, list(attrs) or None)


def get_db() -> Iterator[Session]:
    """FastAPI dependency: one session per request, committed if the handler returns normally."""
    with session_scope() as session:
        yield session
