"""The study-wide QC re-judgings that votes triggered and that have not run yet, kept in the database.

``app.services.rejudging`` spaces the re-judgings of a busy study and owes a trigger that comes too soon to the
study's next vote, and results settle what is owed before they count. Owed in one web process's memory only, that
promise broke twice: with several web processes (PostgreSQL's recommended deployment) one process's results
counted votes that another process owed a judging, and a process that stopped (a crash, a deploy) took its debts
with it, so a swarm voting just after one re-judging went uncounted by the next until some later trigger.

So a vote that triggers a re-judging writes a debt row in its own transaction (``record``): no trigger commits
without its debt. A re-judging reads the debts of its rule before it takes its snapshot, so the snapshot holds
every vote behind them, and deletes exactly those rows once it has written its verdicts (``pay``): a debt
written meanwhile stays for the next one. Results in any process run every rule the study owes
(``app.services.qc.settle``). The process memory still decides when the vote path runs one (the spacing); the
database only keeps the promise.

Two processes must not re-judge the same rule of a study at once: the one with the older snapshot could write
last and put back verdicts the newer one had corrected. On PostgreSQL ``pay`` holds an advisory lock for the
whole re-judging and refuses (``Busy``) if another process holds it; the debt is then still owed. On SQLite one
web process is the deployment (docs/performance.md) and ``app.services.rejudging`` already runs one re-judging of
a rule at a time in it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.db import read_session_scope, session_scope
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


def pay(engine: Engine, *, study_id: int, rule: str, judge: Callable[[], object], wait_s: float = 0.0) -> object:
    """Run ``judge()`` (the re-judging, which takes its own snapshot) and delete the debts of ``rule`` that were
    written before it began; return what ``judge`` returns. Raises ``Busy`` if another process still runs the same
    re-judging after ``wait_s`` seconds; if ``judge`` fails, every debt stays."""
    with _exclusive(engine, study_id=study_id, rule=rule, wait_s=wait_s):
        with read_session_scope(engine) as read:
            seen = list(read.scalars(_OWED_IDS, {"study_id": study_id, "rule": rule}))
        result = judge()
        if seen:
            with session_scope(engine) as write:
                for at in range(0, len(seen), _DELETE_CHUNK):
                    write.execute(delete(_DEBTS).where(_DEBTS.c.id.in_(seen[at:at + _DELETE_CHUNK])))
        return result


def _lock_keys(study_id: int, rule: str) -> tuple[int, int]:
    """PostgreSQL's two-integer advisory lock key: the rule (a stable 31-bit hash of its name) and the study."""
    return zlib.crc32(f"blindpair-rejudging:{rule}".encode()) & 0x7FFFFFFF, study_id


@contextmanager
def _exclusive(engine: Engine, *, study_id: int, rule: str, wait_s: float) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield
        return
    rule_key, study_key = _lock_keys(study_id, rule)
    # A connection of its own, outside any transaction the re-judging opens: a session-level advisory lock lasts
    # until unlocked or until the connection closes (a process that dies releases it).
    with engine.connect() as conn:
        deadline = time.monotonic() + wait_s
        while not conn.scalar(select(func.pg_try_advisory_lock(rule_key, study_key))):
            if time.monotonic() >= deadline:
                conn.rollback()
                raise Busy(f"the {rule} re-judging of study {study_id} is running in another process")
            time.sleep(_LOCK_POLL_S)
        conn.commit()  # end the transaction the lock query began: the lock is the session's, not its
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(rule_key, study_key)))
            conn.commit()
