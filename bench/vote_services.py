"""The vote path without HTTP: the services' CPU per vote, their statements, and what one statement costs.

Part of bench/vote_path.py (run after the servers, in the benchmark's own process, on the same database):
votes are cast by calling what the evaluator API's routes run in their worker thread (``answer_pair`` then
``answer_vote``), so what is timed is the services, their sessions and transactions, with no HTTP, no thread
hand-off and no load generator. Statements are counted by the engine's ``before_cursor_execute`` listeners,
which app/raw_sql.py calls too; SQLite's ``BEGIN IMMEDIATE``, sent on the DB-API connection since 2026-12-07,
is not counted (before, it was: about two per vote).

Then one of the rating flow's prebuilt statements (the study's criteria, run on every pair page and every vote)
is timed three ways: through the ORM session as the services run it, through the session's
connection, and as its compiled SQL on the bare DB-API cursor — how much a rewrite below SQLAlchemy could save.
"""

from __future__ import annotations

import random
import time
from typing import Any

SIDES = ("left", "right", "tie")


def _new_token(invite: str) -> str:
    from app.db import session_scope
    from app.deps import evaluator_token
    from app.services.assignments import join

    with session_scope() as s:
        return evaluator_token(join(s, invite_token=invite, external_id=None, ip="127.0.0.1", user_agent="bench"))


def _cast(invite: str, n_votes: int, rng: random.Random) -> None:
    """``n_votes`` votes, each a pair fetch then an answer, by as many evaluators as their quotas need."""
    from app.api.evaluate import VoteRequest, answer_pair, answer_vote

    token, cast = _new_token(invite), 0
    while cast < n_votes:
        page = answer_pair(token)
        if page.status == "done":
            token = _new_token(invite)
            continue
        body = VoteRequest(assignment_token=page.pair.assignment_token, client_time_ms=9000,
                           choices={c.key: rng.choice(SIDES) for c in page.pair.criteria})
        if answer_vote(body, token, False).status != "recorded":
            raise RuntimeError("an in-process vote was not recorded")
        cast += 1


def _per_call_us(fn, n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def statement_costs(study_id: int, n: int) -> dict[str, float]:
    """CPU µs for one run of the criteria query: ORM session, its connection, the bare DB-API cursor."""
    from app.db import get_engine, session_scope
    from app.services.assignments import _CRITERIA

    params = {"study_id": study_id}
    compiled = _CRITERIA.compile(get_engine())
    bound = compiled.construct_params(params)
    dbapi_params = tuple(bound[k] for k in compiled.positiontup) if compiled.positional else bound
    sql = str(compiled)
    with session_scope() as s:
        conn = s.connection()
        cursor = conn.connection.dbapi_connection.cursor()

        def dbapi() -> list:
            cursor.execute(sql, dbapi_params)
            return cursor.fetchall()

        try:
            rows = len(s.execute(_CRITERIA, params).all())
            if len(dbapi()) != rows:  # the three ways must read the same rows, or the comparison means nothing
                raise RuntimeError("the DB-API statement read other rows than the session's")
            return {"session_us": _per_call_us(lambda: s.execute(_CRITERIA, params).all(), n),
                    "connection_us": _per_call_us(lambda: conn.execute(_CRITERIA, params).all(), n),
                    "dbapi_us": _per_call_us(dbapi, n)}
        finally:
            cursor.close()


def measure(study_id: int, invite: str, *, n_votes: int, n_statement_runs: int) -> dict[str, Any]:
    from sqlalchemy import event

    from app.db import get_engine

    rng = random.Random(0)
    _cast(invite, max(5, n_votes // 10), rng)  # warm the statement caches and the connection pool
    statements = 0

    def count(*_args, **_kwargs) -> None:
        nonlocal statements
        statements += 1

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        t0 = time.process_time()
        _cast(invite, n_votes, rng)
        cpu = time.process_time() - t0
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # A new evaluator joins whenever one's quota runs out: one join per session's quota of votes is in both figures.
    return {"votes": n_votes, "cpu_ms_per_vote": cpu * 1000 / n_votes, "statements_per_vote": statements / n_votes,
            **statement_costs(study_id, n_statement_runs)}
