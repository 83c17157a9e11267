"""The study-wide QC re-judgings that votes triggered and that have not run yet, kept in the database.

``app.services.rejudging`` spaces the re-judgings of a busy study and owes a trigger that comes too soon to the
study's next vote, and results settle what is owed before they count. Owed in one web process's memory only, that
promise broke twice: with several web processes (PostgreSQL's recommended deployment) one process's results
counted votes that another process owed a judging, and a process that stopped (a crash, a deploy) took its debts
with it, so a swarm voting just after one re-judging went uncounted by the next until some later trigger.

So a vote that triggers a re-judging writes a debt row in its own transaction (``record``): no trigger commits
without its debt. A re-judging (``app.services.qc.rejudge``) reads the debts of its rule first in its snapshot,
so the snapshot holds every vote behind them, and deletes exactly those rows in the transaction that writes its
verdicts (``owed_ids``, ``forget``): a debt written meanwhile stays for the next one, and a re-judging that
fails pays nothing. Results in any process run every rule the study owes
(``app.services.qc.settle``). The process memory still decides when the vote path runs one (the spacing); the
database only keeps the promise.

Two processes must not re-judge the same rule of a study at once: the one with the older snapshot could write
last and put back verdicts the newer one had corrected. On PostgreSQL ``exclusive`` holds an advisory lock for
the whole re-judging and refuses (``Busy``) if another process holds it; the debt is then still owed. On SQLite, where
one web process is the deployment (docs/performance.md) but a CLI (``blindpair analyze``) may settle beside it,
a file lock beside the database file does the same on one machine.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.models import RejudgingDebt, utcnow
from app.services.rejudging import Busy

_DEBTS = RejudgingDebt.__table__
# Built once: a triggered vote (every third vote of a session sharing its address) runs it.
_RECORD = insert(_DEBTS).values(study_id=bindparam("study_id"), rule=bindparam("rule"),
                                created_at=bindparam("created_at"))
_OWED_IDS = select(_DEBTS.c.id).where(_DEBTS.c.study_id == bindparam("study_id"), _DEBTS.c.rule == bindparam("rule"))
_DELETE_CHUNK = 500  # ids per DELETE: SQLite caps the parameters of one statement
_LOCK_POLL_S = 0.05


def record(session: Session, *, study_id: int, rule: str) -> None:
    """Owe one re-judging of ``rule`` for the study, in ``session``'s transaction (the triggering vote's)."""
    session.execute(_RECORD, {"study_id": study_id, "rule": rule, "created_at": utcnow()})


def owed_rules(session: Session, *, study_id: int) -> list[str]:
    """The rules the study is owed a re-judging of, by any process."""
    return list(session.scalars(select(_DEBTS.c.rule).where(_DEBTS.c.study_id == study_id)
                                .group_by(_DEBTS.c.rule).order_by(_DEBTS.c.rule)))


def owed_ids(session: Session, *, study_id: int, rule: str) -> list[int]:
    """The debts of ``rule`` the study holds now. A re-judging reads them first in its snapshot, so the snapshot
    holds every vote behind them (on SQLite the first read fixes the snapshot; on PostgreSQL each later statement
    sees at least as much), and ``forget``s exactly these once its verdicts are written."""
    return list(session.scalars(_OWED_IDS, {"study_id": study_id, "rule": rule}))


def forget(session: Session, ids: list[int]) -> None:
    """Delete the debts ``ids`` (paid), in ``session``'s transaction (the re-judging's write)."""
    for at in range(0, len(ids), _DELETE_CHUNK):
        session.execute(delete(_DEBTS).where(_DEBTS.c.id.in_(ids[at:at + _DELETE_CHUNK])))


def _lock_keys(study_id: int, rule: str) -> tuple[int, int]:
    """PostgreSQL's two-integer advisory lock key: the rule (a stable 31-bit hash of its name) and the study."""
    return zlib.crc32(f"blindpair-rejudging:{rule}".encode()) & 0x7FFFFFFF, study_id


@contextmanager
def exclusive(engine: Engine, *, study_id: int, rule: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the re-judging of ``rule`` for the study against other processes. Raises ``Busy`` if another process
    still holds it after ``wait_s`` seconds. PostgreSQL: an advisory lock; SQLite: a file lock beside the
    database file (the web process and a CLI on one machine); an in-memory database has no other process."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, study_id=study_id, rule=rule, wait_s=wait_s):
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock_dir = Path(f"{engine.url.database}.rejudging-locks")
        with _file_lock(lock_dir / f"study-{study_id}-{rule}.lock", what=f"the {rule} re-judging of study "
                        f"{study_id}", wait_s=wait_s):
            yield
    else:
        yield


def _busy(what: str) -> Busy:
    return Busy(f"{what} is running in another process")


@contextmanager
def _file_lock(path: Path, *, what: str, wait_s: float) -> Iterator[None]:
    # flock, not lockf: a POSIX record lock is the process's, and closing any descriptor of the file drops it.
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(what) from None
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _advisory_lock(engine: Engine, *, study_id: int, rule: str, wait_s: float) -> Iterator[None]:
    rule_key, study_key = _lock_keys(study_id, rule)
    # A connection of its own, outside any transaction the re-judging opens: a session-level advisory lock lasts
    # until unlocked or until the connection closes (a process that dies releases it). Behind pgbouncer this
    # needs session pooling: in transaction pooling the unlock may reach another server connection.
    with engine.connect() as conn:
        deadline = time.monotonic() + wait_s
        while not conn.scalar(select(func.pg_try_advisory_lock(rule_key, study_key))):
            if time.monotonic() >= deadline:
                conn.rollback()
                raise _busy(f"the {rule} re-judging of study {study_id}")
            conn.rollback()
            time.sleep(_LOCK_POLL_S)
        conn.commit()  # end the transaction the lock query began: the lock is the session's, not its
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(rule_key, study_key)))
            conn.commit()
