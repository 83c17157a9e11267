"""Engine, session factory and the session scopes: one per request, one for jobs and the CLI, one for long reads.

On SQLite one writer at a time holds the write lock. Requests that only read (GET, HEAD, OPTIONS: the login
page, media, dashboards) therefore read a WAL snapshot and never queue for it; a write that cannot get the lock
within ``BLINDPAIR_DB_LOCK_TIMEOUT_SECONDS`` raises an error ``is_busy_error`` recognises, which the app answers
with 503 and Retry-After (app/middleware.py) instead of a 500.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache, wraps
from typing import ClassVar, ParamSpec, TypeVar

from sqlalchemy import MetaData, Table, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import get_settings

log = logging.getLogger(__name__)

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


def make_engine(url: str, *, lock_timeout: float | None = None) -> Engine:
    """Build an engine; SQLite gets WAL, a busy timeout and write-serialising transactions.

    ``lock_timeout``: seconds a writer waits for the write lock (default BLINDPAIR_DB_LOCK_TIMEOUT_SECONDS).
    """
    if lock_timeout is None:
        lock_timeout = get_settings().db_lock_timeout_seconds
    if url.startswith("sqlite"):
        busy_ms = max(0, int(lock_timeout * 1000))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": lock_timeout})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # pysqlite's own transaction handling is disabled so that we can BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()

        _serialise_writers(engine, lock_timeout)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)


class DatabaseBusy(sqlite3.OperationalError):
    """A writer waited its whole lock timeout for another writer of this process; answered with 503."""


# How the drivers say "the lock (or a connection) was not free in time": SQLite's busy timeout ran out,
# PostgreSQL's lock_timeout / statement_timeout fired, or a deadlock or serialisation conflict was broken.
_BUSY_TEXT = ("database is locked", "database table is locked", "database schema is locked")


_BUSY_WHY = {
    "55P03": "a row or table lock was not free within PostgreSQL's lock_timeout",
    "57014": "PostgreSQL cancelled a statement (its statement_timeout, or a cancel request)",
    "40P01": "PostgreSQL broke a deadlock between two transactions by cancelling this one",
    "40001": "PostgreSQL could not serialise this transaction with a concurrent one",
}


# Two transactions that PostgreSQL had to part: a deadlock it broke, or a serialisation it could not keep. The
# cancelled one changed nothing, and running it again is what PostgreSQL's documentation asks of the client.
_CONFLICT_SQLSTATES = ("40P01", "40001")
CONFLICT_RETRIES = 2
P = ParamSpec("P")
R = TypeVar("R")


def retry_on_conflict(work: Callable[P, R]) -> Callable[P, R]:
    """Run ``work`` (a whole transaction: it opens and commits its own session) again when PostgreSQL cancelled it
    to part it from a concurrent one, up to ``CONFLICT_RETRIES`` times; anything else is raised at once.

    A vote takes its two pairs' rows (the answered pair's counter, the next pair's reservation) lower id first, so
    votes do not deadlock over them (``app.services.votes.VoteCounter``). A pair page that gives an abandoned pair
    back and reserves the next takes two rows in the order it meets them, and whatever else PostgreSQL cancels
    after its deadlock_timeout (1 s by default) would otherwise be answered 503: it is run again instead.
    """
    @wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                return work(*args, **kwargs)
            except sa_exc.DBAPIError as exc:
                if attempt == CONFLICT_RETRIES or _sqlstate(exc.orig) not in _CONFLICT_SQLSTATES:
                    raise
                log.info("%s ran again: %s", work.__name__, busy_reason(exc))
        raise AssertionError("not reached: the last attempt returns or raises")
    return run


def _sqlstate(orig: BaseException | None) -> str | None:
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_busy_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "try again in a moment" (a lock or connection was not free), not a bug."""
    return busy_reason(exc) is not None


def busy_reason(exc: BaseException) -> str | None:
    """What was not free in time, in words for the operator's log; ``None`` when ``exc`` is not a busy error."""
    if isinstance(exc, sa_exc.TimeoutError):
        return "no database connection came free in the pool's timeout (pool_size + max_overflow all in use)"
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(orig, DatabaseBusy):
        return f"SQLite's write lock: {orig}"
    if isinstance(orig, sqlite3.OperationalError):
        return f"SQLite's lock: {orig}" if str(orig).lower().startswith(_BUSY_TEXT) else None
    code = _sqlstate(orig)
    return _BUSY_WHY.get(code) if code else None


def _serialise_writers(engine: Engine, lock_timeout: float) -> None:
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
        # The same patience as busy_timeout: a writer gives up after lock_timeout, whoever holds the lock.
        if not write_lock.acquire(timeout=lock_timeout):
            raise DatabaseBusy(
                f"database is locked: waited {lock_timeout:g} s for another request of this process to finish "
                "writing")
        holders.add(id(dbapi_conn.dbapi_connection))
        try:
            # On the DB-API connection, not exec_driver_sql: SQLAlchemy's execution cost four times the
            # statement, on every rating request (py-spy).
            dbapi_conn.dbapi_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            release(dbapi_conn)
            # As SQLAlchemy would raise it (an OperationalError wrapping sqlite3's), for the 503 handler.
            raise sa_exc.DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
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
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """Commit on success, roll back on error: the one transaction boundary for jobs and the CLI.

    ``engine``: the database of a session at hand (``engine_of``) rather than the configured one, for work
    scheduled from a session (``after_commit``) in a process that may hold several databases (tests, the CLI)."""
    yield from _committing(get_sessionmaker()() if engine is None else Session(bind=engine, expire_on_commit=False))


def _committing(session: Session) -> Iterator[Session]:
    """Yield ``session``, commit if the body returns, roll back if it raises, and close it either way."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _deferred_session(engine: Engine | None = None) -> Session:
    """A session whose SQLite transaction begins deferred (``READ_ONLY_OPTION``): it reads without the lock."""
    return Session(bind=(engine or get_engine()).execution_options(**{READ_ONLY_OPTION: True}),
                   expire_on_commit=False)


@contextmanager
def read_session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session for long reads; on SQLite its transaction does not take the write lock. Never write in it.
    ``engine`` as in ``session_scope``."""
    session = _deferred_session(engine)
    try:
        yield session
        session.rollback()
    finally:
        session.close()


def release_read(session: Session) -> bool:
    """End ``session``'s transaction if it has nothing pending; return whether it is now outside a transaction.

    Before seconds of CPU-bound statistics, or work that opens sessions of its own: on SQLite a transaction that
    began with BEGIN IMMEDIATE (app/db.py) holds the write lock, so a dashboard computing inside its request's
    transaction would make evaluators' votes wait, and a write of its own on another session would wait for
    this thread's own lock. A session with changes not yet flushed keeps its transaction (False)."""
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        session.commit()
    return not session.in_transaction()


_AFTER_COMMIT = "blindpair_after_commit"


def after_commit(session: Session, job: Callable[[], object]) -> None:
    """Run ``job`` once ``session``'s transaction has committed, outside it; forgotten if it rolls back.

    For slow work a change implies that must not hold the write lock (on SQLite, every other writer waits for
    it): decoding and encoding files for attention checks, say. The job opens its own sessions. It runs
    before ``commit()`` returns, so the caller still sees it done; if it fails, the commit stands and the
    failure is logged (the work is of the kind that is made again on the next occasion).
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(job)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for job in session.info.pop(_AFTER_COMMIT, []):
        try:
            job()
        except Exception:
            log.exception("work scheduled after a commit failed; the committed change stands")


@event.listens_for(Session, "after_rollback")
def _forget_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def engine_of(session: Session) -> Engine:
    """The engine ``session`` works on, for sessions of its own on the same database (``session_scope(engine)``)."""
    return session.get_bind().engine


def database_key(session: Session) -> str:
    """Which database a session works on (its URL, password hidden): in-process caches keyed by a study id key
    by this too, since tests and the CLI may hold several databases in one process and ids repeat across them."""
    return session.get_bind().engine.url.render_as_string(hide_password=True)


def expire_cached(session: Session, model: type, pk: int, *attrs: str) -> None:
    """Forget ``attrs`` of the ``model`` row ``pk`` if this session holds it, after a Core UPDATE changed them.

    The rating flow writes with prebuilt Core statements (app/services/assignments.py), which do not update
    ORM objects; a caller that loaded the row earlier in the session (scripts, tests) then re-reads it.
    """
    obj = session.identity_map.get(session.identity_key(model, pk))
    if obj is not None:
        session.expire(obj, list(attrs) or None)


# Methods that must not change anything (RFC 9110, section 9.2.1): their requests read a snapshot.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@contextmanager
def snapshot_session_scope() -> Iterator[Session]:
    """Like ``session_scope`` (commit on success), but on SQLite the transaction begins deferred.

    It reads a WAL snapshot without taking the write lock, so it never waits behind a writer. A write in it is
    still committed: SQLite then takes the lock at that write (and a conflict surfaces as a busy error).
    """
    yield from _committing(_deferred_session())


def request_session(method: str) -> Iterator[Session]:
    """One session per request (the request dependency in app/security.py), committed if the handler returns.

    GET, HEAD and OPTIONS requests (pages, media, exports) read a snapshot and never queue for SQLite's write
    lock; every other method writes in a ``BEGIN IMMEDIATE`` transaction (see ``_serialise_writers``).
    """
    scope = snapshot_session_scope if method in SAFE_METHODS else session_scope
    with scope() as session:
        yield session


def get_db() -> Iterator[Session]:
    """A writing request session (``request_session`` picks by the request's method)."""
    yield from request_session("POST")
