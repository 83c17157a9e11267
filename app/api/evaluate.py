"""JSON API for evaluators: the same join / current pair / vote operations as the pages, for scripted clients.

Authentication is the ``evaluator_token`` returned by join, sent back in the ``X-Evaluator-Token`` header
(a header rather than a cookie, so a cross-site form cannot vote on someone's behalf).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from app.api.studies import Responses
from app.concurrency import JOIN, PAGE, VOTE, in_slot
from app.db import retry_on_conflict, session_scope
from app.deps import completion_redirect, evaluator_token, join_rate_limit, state_from_token
from app.models import utcnow
from app.ratelimit import check_rate, client_ip
from app.services.assignments import (
    EvaluationError,
    EvaluatorState,
    PairView,
    evaluator_state,
    join,
    next_assignment,
    study_criteria,
    study_for_invite,
)
from app.services.votes import InvalidChoices, submit_vote

router = APIRouter(prefix="/evaluate", tags=["evaluate"])
token_header = APIKeyHeader(name="X-Evaluator-Token", auto_error=False,
                            description="The evaluator_token returned by POST /api/v1/evaluate/join.")


class ApiError(BaseModel):
    detail: str
    missing: list[str] = []


class JoinRequest(BaseModel):
    invite_token: str = Field(min_length=1, max_length=64, description="The token at the end of the invite link.")
    external_id: str | None = Field(None, max_length=200, description="e.g. the participant's PROLIFIC_PID")
    platform_session_id: str | None = Field(
        None, max_length=200, description="The platform's id of this attempt (Prolific's SESSION_ID, MTurk's "
        "assignmentId). Joining again with the same external_id resumes the session only with the same value.")


class JoinResponse(BaseModel):
    evaluator_token: str = Field(description="Send this in the X-Evaluator-Token header from now on.")
    pairs_in_session: int


class CriterionOut(BaseModel):
    key: str
    label: str
    description: str


class PairOut(BaseModel):
    assignment_token: str
    position: int
    total: int
    prompt: str
    left_media_url: str
    right_media_url: str
    play_ms: int = Field(description="How long the longer clip takes to play once, in milliseconds.")
    media_type: str = Field("image/gif", description="image/gif, video/mp4 or video/webm: the study's clip format, "
                            "the same for both sides")
    fps: float = Field(8.0, description="Frame rate both clips play at (for stepping frame by frame)")
    criteria: list[CriterionOut]
    notice: str | None = Field(None, description="Set when the previous pair was given back to the pool "
                               "(left unanswered too long) and this is a new one.")


class PairResponse(BaseModel):
    status: Literal["pair", "done"]
    done: int
    total: int
    pair: PairOut | None = None
    completion_code: str | None = None
    redirect_url: str | None = None


class VoteRequest(BaseModel):
    assignment_token: str = Field(min_length=1, max_length=64)
    choices: dict[Annotated[str, Field(max_length=60)], Literal["left", "right", "tie", "both_bad"]] = Field(
        max_length=50, description="criterion key -> left | right | tie (| both_bad where the study offers it); "
        "every criterion of the study is required"
    )
    client_time_ms: int | None = Field(None, ge=0, le=24 * 3600 * 1000)
    comment: str | None = Field(None, max_length=1000, description="where the study asks for one")
    reason_tags: list[Annotated[str, Field(max_length=40)]] | None = Field(
        None, max_length=12, description="tags from the study's list, where it offers them")


VoteStatus = Literal["recorded", "already_recorded"]


class VoteResponse(BaseModel):
    status: VoteStatus
    completed: bool
    next: PairResponse | None = Field(None, description="With ?next=true: what GET /pair would now answer (the "
                                      "next pair, already reserved, or done), so a client needs one request per vote.")


def _vote_status(status: str) -> VoteStatus:
    """The service's outcome word (``SubmitResult.status``) as the response's literal."""
    if status == "recorded":
        return "recorded"
    if status == "already_recorded":
        return "already_recorded"
    raise ValueError(f"unexpected vote outcome {status!r}")


ERRORS: Responses = {
    401: {"model": ApiError, "description": "Missing or invalid X-Evaluator-Token"},
    403: {"model": ApiError, "description": "Not this evaluator's assignment, or this address has started as many "
          "sessions as the study allows"},
    404: {"model": ApiError, "description": "Unknown invite or assignment"},
    409: {"model": ApiError, "description": "Study not open or full; the external_id already has a session "
          "(resume it with its platform_session_id); or the pair was given back to the pool"},
    422: {"model": ApiError, "description": "Invalid or missing answers"},
    429: {"model": ApiError, "description": "Too many joins from this address"},
}


EvaluatorToken = Annotated[str | None, Depends(token_header)]


def _evaluator(session, token: str | None) -> EvaluatorState:
    # Called in the route's body rather than as a dependency: a sync dependency is one more hop through the
    # thread pool, on the two requests every vote makes.
    state = state_from_token(session, token)
    if state is None:
        raise HTTPException(401, "Send the evaluator_token from POST /api/v1/evaluate/join in the X-Evaluator-Token "
                            "header; this one is missing, invalid or expired.")
    return state


def _refused(exc: EvaluationError) -> JSONResponse:
    missing = exc.missing if isinstance(exc, InvalidChoices) else []
    return JSONResponse({"detail": exc.message, "missing": missing}, status_code=exc.status_code)


# The rating routes are async: each waits for its slot in the rating gate, then runs its database work in one
# thread-pool hop (in_slot, app/concurrency.py, says why). That work opens its own session (session_scope)
# rather than taking DbSession, whose yield dependency would cost more hops; it commits before the response is
# sent, and because one thread holds the session from BEGIN to COMMIT, a request waiting for SQLite's write lock
# can never hold the thread its holder needs.


@router.post("/join", response_model=JoinResponse, status_code=201, responses=ERRORS)
async def api_join(body: JoinRequest, request: Request):
    return await in_slot(JOIN, answer_join, body, client_ip(request), request.headers.get("user-agent"))


def answer_join(body: JoinRequest, ip: str, user_agent: str | None) -> JoinResponse | JSONResponse:
    """What POST /join answers, in its own committed session (blocking: runs in a worker thread)."""
    with session_scope() as session:
        try:
            study = study_for_invite(session, invite_token=body.invite_token)
            check_rate("join", ip, join_rate_limit(study))
            evaluator = join(session, invite_token=body.invite_token, external_id=body.external_id,
                             platform_session_id=body.platform_session_id, ip=ip, user_agent=user_agent)
        except EvaluationError as exc:
            return _refused(exc)
        state = evaluator_state(session, evaluator_id=evaluator.id)
        if state is None:  # join() has just written (or found) this row in the same transaction
            raise RuntimeError(f"evaluator {evaluator.id} vanished right after joining")
        return JoinResponse(evaluator_token=evaluator_token(evaluator), pairs_in_session=state.quota)


def _pair_out(session, view: PairView, state: EvaluatorState) -> PairOut:
    number = state.done + 1  # see app/web/evaluator.py: a released assignment leaves a gap in stored positions
    return PairOut(
        assignment_token=view.token, position=number, total=max(state.quota, number),
        prompt=view.prompt, left_media_url=f"/m/{view.left_media_token}",
        right_media_url=f"/m/{view.right_media_token}", play_ms=view.play_ms,
        media_type={"mp4": "video/mp4", "webm": "video/webm"}.get(view.clip_format, "image/gif"), fps=view.fps,
        criteria=[CriterionOut(key=c.key, label=c.label, description=c.description)
                  for c in study_criteria(session, state.study_id)],
        notice=("Your previous pair stayed unanswered too long and was given to another participant; this is a "
                "new one.") if view.replaced else None,
    )


def _current_pair(session, state: EvaluatorState,
                  before_reserving: Callable[[int], None] | None = None) -> PairResponse | JSONResponse:
    try:
        view = next_assignment(session, evaluator_id=state.id, state=state, before_reserving=before_reserving)
    except EvaluationError as exc:
        return _refused(exc)
    if view is None:
        return PairResponse(status="done", done=state.done, total=state.quota,
                            completion_code=state.completion_code,
                            redirect_url=completion_redirect(state.redirect_url, state.completion_code) or None)
    return PairResponse(status="pair", done=state.done, total=state.quota, pair=_pair_out(session, view, state))


@router.get("/pair", response_model=PairResponse, responses=ERRORS)
async def api_pair(token: EvaluatorToken):
    """The evaluator's current pair (the same one until it is answered), or ``done`` with the completion code."""
    return await in_slot(PAGE, answer_pair, token)


@retry_on_conflict
def answer_pair(token: str | None) -> PairResponse | JSONResponse:
    """What GET /pair answers, in its own committed session (blocking: runs in a worker thread)."""
    with session_scope() as session:
        return _current_pair(session, _evaluator(session, token))


@router.post("/votes", response_model=VoteResponse, responses=ERRORS)
async def api_vote(body: VoteRequest, token: EvaluatorToken,
                   next: Annotated[bool, Query(description="Also answer with the next pair (see ``next``)")] = False):
    """Answer one assignment; resubmitting the same assignment answers ``already_recorded`` and stores nothing."""
    return await in_slot(VOTE, answer_vote, body, token, next)


@retry_on_conflict
def answer_vote(body: VoteRequest, token: str | None, next: bool) -> VoteResponse | JSONResponse:
    """What POST /votes answers, in its own committed session (blocking: runs in a worker thread)."""
    with session_scope() as session:
        state = _evaluator(session, token)
        try:
            result = submit_vote(session, assignment_token=body.assignment_token, evaluator_id=state.id,
                                 choices=dict(body.choices), client_time_ms=body.client_time_ms, state=state,
                                 comment=body.comment, reason_tags=body.reason_tags, defer_count=next)
        except EvaluationError as exc:
            return _refused(exc)
        following: PairResponse | None = None
        if next:
            # In the vote's transaction: the vote and the next reservation commit together, so a crash leaves
            # either both or neither. The state after the vote is the one read under the evaluator's lock plus
            # what this vote changed (one answered, none open, maybe completed): no second read. The answered
            # pair's counter and the next pair's reservation take their rows lower id first (VoteCounter).
            counter = result.counter
            fresh = state if result.status != "recorded" else replace(
                state, done=state.done + 1, open=max(0, state.open - 1),
                completed_at=state.completed_at or (utcnow() if result.completed else None))
            current = _current_pair(session, fresh, None if counter is None else partial(
                counter.before_reserving, session))
            if counter is not None:  # counted after the reservation, or with none (the session done, a refusal)
                counter.count(session)
            # A refusal (e.g. the study closed right after this vote, which is stored) leaves it to GET /pair.
            following = current if isinstance(current, PairResponse) else None
    return VoteResponse(status=_vote_status(result.status), completed=result.completed, next=following)
