"""The vote path's framework floor (issue 16): a bare FastAPI app storing one row per request.

The question it answers: how much of the gap between BlindPair and bench/floor_app.py (bare Starlette) is the
framework BlindPair chose, and how much is BlindPair. So it is FastAPI as its tutorial writes it and nothing
more: a ``def`` endpoint (run in the same anyio thread pool as BlindPair's sync routes), a pydantic response
model, and SQLAlchemy Core inserting one row through the app's own engine factory (``app.db.make_engine``:
the same SQLite pragmas and BEGIN IMMEDIATE, the same psycopg pool). No middleware, no credential, no CSRF,
no template, no pair choice: bench/http_costs.py prices those one by one.

Serve with ``uvicorn --factory bench.fastapi_floor_app:create_app``; the database comes from
``BENCH_FLOOR_DATABASE_URL``. Driven by bench/loadgen.py like the Starlette floor (``kind`` "fastapi").
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Header
from pydantic import BaseModel
from sqlalchemy import insert

from app.db import make_engine
from bench.floor_app import floor_table, metadata

fastapi_floor_votes = floor_table("bench_fastapi_floor_votes")


class Stored(BaseModel):
    status: str


def create_app() -> FastAPI:
    engine = make_engine(os.environ["BENCH_FLOOR_DATABASE_URL"])
    metadata.create_all(engine)
    app = FastAPI(openapi_url=None)

    @app.post("/vote", response_model=Stored)
    def vote(x_evaluator: Annotated[str, Header()] = "") -> Stored:
        with engine.begin() as conn:
            conn.execute(insert(fastapi_floor_votes).values(evaluator=x_evaluator, choice="left",
                                                            created_at=datetime.now(UTC)))
        return Stored(status="recorded")

    @app.get("/ping")
    def ping() -> Stored:
        return Stored(status="ok")

    return app
