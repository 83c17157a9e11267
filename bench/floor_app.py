"""The vote path's floor: a bare Starlette app on the same server stack that stores one row per request.

Same uvicorn, same threadpool (a sync endpoint, as BlindPair's routes are), same engine factory as the app
(``app.db.make_engine``: for SQLite the same WAL / synchronous=NORMAL / busy_timeout pragmas and BEGIN
IMMEDIATE; for PostgreSQL the same psycopg driver and pool), same database. Everything BlindPair does on top
of this — routing through FastAPI, cookies and CSRF, the ORM, choosing a pair, rendering the page, QC flags —
is what the benchmark puts beside it.

It also serves ``/media/{name}`` from ``BENCH_FLOOR_MEDIA_DIR``: the floor of the media route.

Serve with ``uvicorn --factory bench.floor_app:create_app``; the database comes from ``BENCH_FLOOR_DATABASE_URL``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

from app.db import make_engine

metadata = MetaData()


def floor_table(name: str) -> Table:
    """A one-row-per-request table (the floors' only work): who, what, when."""
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True),
        Column("evaluator", String(64)),
        Column("choice", String(10)),
        Column("created_at", DateTime(timezone=True)),
    )


floor_votes = floor_table("bench_floor_votes")


def create_app() -> Starlette:
    engine = make_engine(os.environ["BENCH_FLOOR_DATABASE_URL"])
    metadata.create_all(engine)

    def vote(request: Request) -> PlainTextResponse:
        # Sync on purpose: Starlette runs it in the same anyio threadpool that runs BlindPair's sync routes.
        with engine.begin() as conn:
            conn.execute(insert(floor_votes).values(
                evaluator=request.headers.get("x-evaluator", ""), choice="left", created_at=datetime.now(UTC)))
        return PlainTextResponse("ok")

    media_dir = os.environ.get("BENCH_FLOOR_MEDIA_DIR", "")

    def media(request: Request) -> FileResponse | PlainTextResponse:
        # The media floor: Starlette's FileResponse (ETag, Last-Modified, 304 on If-None-Match) of the same bytes.
        name = request.path_params["name"]
        if not media_dir or "/" in name or name.startswith("."):
            return PlainTextResponse("Not found", status_code=404)
        return FileResponse(os.path.join(media_dir, name), media_type="image/gif")

    return Starlette(routes=[Route("/vote", vote, methods=["POST"]), Route("/ping", lambda r: PlainTextResponse("ok")),
                             Route("/media/{name}", media)])
