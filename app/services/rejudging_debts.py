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
fails pays nothing. Results and exports in any process first run what the study owed when they were asked for
(``app.services.qc.settle``). The process memory still decides when the vote path runs one (the spacing); the
database only keeps the promise.

Two processes never re-judge the same rule of a study at once: ``app.services.rejudging_locks``.
"""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from app.models import RejudgingDebt, utcnow
from app.raw_sql import RawStatement

_DEBTS = RejudgingDebt.__table__
# Built once: a triggered vote (every third vote of a session sharing its address) runs it.
_RECORD = insert(_DEBTS).values(study_id=bindparam("study_id"), rule=bindparam("rule"),
                                created_at=bindparam("created_at"))
_OWED_IDS = RawStatement(select(_DEBTS.c.id).where(_DEBTS.c.study_id == bindparam("study_id"),
                                                    _DEBTS.c.rule == bindparam("rule")))
# One id a run, the ids of one re-judging in one executemany: an IN list's SQL is built per run (per length).
_FORGET = RawStatement(delete(_DEBTS).where(_DEBTS.c.id == bindparam("id")))


def record(session: Session, *, study_id: int, rule: str) -> None:
    """Owe one re-judging of ``rule`` for the study, in ``session``'s transaction (the triggering vote's)."""
    session.execute(_RECORD, {"study_id": study_id, "rule": rule, "created_at": utcnow()})


def latest(session: Session, *, study_id: int) -> int:
    """The id of the study's newest debt (0 if none): what a caller must see settled is what was owed before it."""
    return session.scalar(select(func.max(_DEBTS.c.id)).where(_DEBTS.c.study_id == study_id)) or 0


def owed_rules(session: Session, *, study_id: int, upto: int | None = None) -> list[str]:
    """The rules the study is owed a re-judging of, by any process (``upto``: by debts with ids up to it)."""
    query = select(_DEBTS.c.rule).where(_DEBTS.c.study_id == study_id)
    if upto is not None:
        query = query.where(_DEBTS.c.id <= upto)
    return list(session.scalars(query.group_by(_DEBTS.c.rule).order_by(_DEBTS.c.rule)))


def owed_ids(session: Session, *, study_id: int, rule: str) -> list[int]:
    """The debts of ``rule`` the study holds now. A re-judging reads them first in its snapshot, so the snapshot
    holds every vote behind them (on SQLite the first read fixes the snapshot; on PostgreSQL each later statement
    sees at least as much), and ``forget``s exactly these once its verdicts are written."""
    return _OWED_IDS.scalars(session, {"study_id": study_id, "rule": rule})


def forget(session: Session, ids: list[int]) -> None:
    """Delete the debts ``ids`` (paid), in ``session``'s transaction (the re-judging's write)."""
    if ids:
        _FORGET.run(session, [{"id": i} for i in ids])
