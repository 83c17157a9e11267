"""The vote path's second and third floors: BlindPair's HTTP layer, storing nothing or one row per request.

The bare Starlette floor (bench/floor_app.py) stores one row per request. A vote in BlindPair is two requests
through FastAPI. This app answers the same two requests a vote makes (the evaluator API's pair and vote, or the
browser's pair page and form post) through the same stack as the real server (``app.main.create_bare_app``:
uvicorn, FastAPI, the session and security-header middleware, the thread headroom), with the real request and
response models, the real credential check (the signed ``X-Evaluator-Token`` or ``bp_eval`` cookie), the real
rating gate (``in_slot``) and, for the browser, the real pair template, CSRF check and form parsing; but the
pair is a constant and the vote is validated and dropped (``create_app``). Whatever rate it reaches bounds
what any database work behind those routes could reach.

``create_storing_app`` is the same with the Starlette floor's work on each request: the pair fetch stores one
row (BlindPair's stores the reservation of the pair it shows) and the vote stores one row, each in its own
transaction through ``app.db.make_engine``, in ``BENCH_FLOOR_DATABASE_URL``. That is the cheapest vote this
stack can serve that still writes what a vote must write (the "minimal vote"), so its ratio to the floor is
the most any implementation of the vote path on this stack could reach.

Both answer ``POST /api/v1/evaluate/join`` (a signed credential for a fresh random id, nothing stored), so the
load generator runs against them unchanged. Serve with ``uvicorn --factory bench.http_floor_app:create_app``
(or ``:create_storing_app``); they need ``BLINDPAIR_SECRET_KEY`` like the app.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from app.api.evaluate import (
    ERRORS,
    CriterionOut,
    EvaluatorToken,
    JoinRequest,
    JoinResponse,
    PairOut,
    PairResponse,
    VoteRequest,
    VoteResponse,
)
from app.concurrency import PAGE, VOTE, in_slot
from app.criteria import DEFAULT_CRITERIA
from app.csrf import verify_csrf
from app.db import make_engine
from app.deps import evaluator_token, public_id_from_token
from app.main import create_bare_app
from app.models import Evaluator
from app.services.assignments import PairView
from app.web.evaluator import COOKIE_NAME, parse_vote_form, read_form, render_pair_page
from bench.floor_app import floor_table, metadata

QUOTA = 20
CRITERIA = [CriterionOut(key=c.key, label=c.label, description=c.description) for c in DEFAULT_CRITERIA]
KEYS = {c.key for c in CRITERIA}
PAGES_TABLE, VOTES_TABLE = "bench_http_floor_pages", "bench_http_floor_votes"
_pages, _votes = floor_table(PAGES_TABLE), floor_table(VOTES_TABLE)


def _check(token: str | None) -> str:
    public_id = public_id_from_token(token)
    if public_id is None:
        raise HTTPException(401, "missing or invalid evaluator credential (X-Evaluator-Token header or bp_eval cookie)")
    return public_id


def create_app() -> FastAPI:
    """The HTTP layer alone: nothing stored."""
    return _build(lambda _table, _public_id, _choice: None)


def create_storing_app() -> FastAPI:
    """The HTTP layer plus one stored row per request, each in its own transaction (the floor's work)."""
    engine = make_engine(os.environ["BENCH_FLOOR_DATABASE_URL"])
    metadata.create_all(engine, tables=[_pages, _votes])

    def store(table, public_id: str, choice: str) -> None:
        with engine.begin() as conn:
            conn.execute(table.insert().values(evaluator=public_id, choice=choice, created_at=datetime.now(UTC)))

    return _build(store)


def _build(store: Callable) -> FastAPI:
    app = create_bare_app()
    router = APIRouter(prefix="/api/v1/evaluate")

    @router.post("/join", response_model=JoinResponse, status_code=201, responses=ERRORS)
    def join(body: JoinRequest):
        return JoinResponse(evaluator_token=evaluator_token(Evaluator(public_id=secrets.token_urlsafe(16))),
                            pairs_in_session=QUOTA)

    @router.get("/pair", response_model=PairResponse, responses=ERRORS)
    async def pair(token: EvaluatorToken):
        return await in_slot(PAGE, _pair, token)

    def _pair(token: str | None) -> PairResponse:
        store(_pages, _check(token), "shown")
        view = _view()
        return PairResponse(status="pair", done=0, total=QUOTA, pair=PairOut(
            assignment_token=view.token, position=view.position, total=QUOTA, prompt=view.prompt,
            left_media_url=f"/m/{view.left_media_token}", right_media_url=f"/m/{view.right_media_token}",
            play_ms=view.play_ms, criteria=CRITERIA))

    @router.post("/votes", response_model=VoteResponse, responses=ERRORS)
    async def votes(body: VoteRequest, token: EvaluatorToken):
        return await in_slot(VOTE, _votes_in_thread, body, token)

    def _votes_in_thread(body: VoteRequest, token: str | None) -> VoteResponse:
        public_id = _check(token)
        if set(body.choices) != KEYS:  # the real route refuses an answer that misses a criterion, too
            raise HTTPException(422, "every criterion needs an answer")
        store(_votes, public_id, body.choices["overall_quality"])
        return VoteResponse(status="recorded", completed=False)

    @app.get("/e/pair")
    async def pair_page(request: Request) -> Response:
        return await in_slot(PAGE, _pair_page, request)

    def _pair_page(request: Request) -> Response:
        store(_pages, _check(request.cookies.get(COOKIE_NAME)), "shown")
        view = _view()
        response = render_pair_page(request, view, criteria=CRITERIA, quota=QUOTA, number=view.position)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/e/vote")
    async def vote_form(request: Request, form: Annotated[FormData, Depends(read_form)]) -> Response:
        return await in_slot(VOTE, _vote_form, request, form)

    def _vote_form(request: Request, form: FormData) -> Response:
        verify_csrf(request, str(form.get("csrf_token", "")))
        _token, choices, _client_ms = parse_vote_form(form)
        public_id = _check(request.cookies.get(COOKIE_NAME))
        if set(choices) != KEYS or not set(choices.values()) <= {"left", "right", "tie"}:
            raise HTTPException(422, "every criterion needs an answer")
        store(_votes, public_id, choices["overall_quality"])
        return RedirectResponse("/e/pair", status_code=303)

    app.include_router(router)
    app.add_api_route("/ping", lambda: PlainTextResponse("ok"))
    return app


def _view() -> PairView:
    return PairView(
        id=1, token=secrets.token_urlsafe(16), position=1, pair_id=1, kind="normal", clip_a_id=1, left_clip_id=1,
        right_clip_id=2, shown_at=datetime.now(UTC), prompt="A lighthouse on a cliff at dusk, waves crashing below",
        left_media_token=secrets.token_urlsafe(16), right_media_token=secrets.token_urlsafe(16), width=512,
        height=512, play_ms=2000)
