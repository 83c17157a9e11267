"""HTML routes for evaluators: invite link -> instructions and consent -> pair pages -> thank-you page.

URLs are opaque: ``/join/{invite_token}``, ``/e/pair`` (always the current pair), ``/e/vote`` (form post with
the assignment token hidden), ``/e/done``, media at ``/m/{media_token}``. The evaluator's identity is the
signed ``bp_eval`` cookie, whose payload is only the evaluator's random public id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.concurrency import JOIN, PAGE, VOTE, in_slot
from app.config import get_settings
from app.csrf import csrf_token, verify_csrf
from app.db import retry_on_conflict, session_scope, snapshot_session_scope
from app.deps import (
    EVALUATOR_TOKEN_MAX_AGE,
    completion_redirect,
    evaluator_from_token,
    evaluator_token,
    join_rate_limit,
    state_from_token,
)
from app.models import Evaluator, Study
from app.ratelimit import check_rate, client_ip
from app.security import DbSession
from app.services.answers import answer_options
from app.services.assignments import (
    EXTERNAL_ID_MAX,
    PLATFORM_SESSION_ID_MAX,
    EvaluationError,
    PairView,
    check_can_join,
    join,
    next_assignment,
    pair_view,
    study_criteria,
    study_for_invite,
)
from app.services.votes import AssignmentReleased, InvalidChoices, UnknownAssignment, submit_vote
from app.templating import templates

router = APIRouter(include_in_schema=False)
templates.env.globals.setdefault("csrf_token", csrf_token)

COOKIE_NAME = "bp_eval"
COOKIE_MAX_AGE = EVALUATOR_TOKEN_MAX_AGE
# Query parameters crowdsourcing platforms use to pass their participant id.
EXTERNAL_ID_PARAMS = ("PROLIFIC_PID", "external_id", "workerId", "participant_id")
# ... and the id of this attempt, which a returning participant must repeat to resume by participant id:
# Prolific's SESSION_ID, MTurk's assignmentId (a placeholder while a worker only previews the task).
PLATFORM_SESSION_PARAMS = ("SESSION_ID", "assignmentId", "platform_session_id")
_NOT_A_SESSION = {"ASSIGNMENT_ID_NOT_AVAILABLE"}
REPLACED_NOTICE = ("Your previous pair stayed unanswered for a long time, so it was given to another participant. "
                   "Here is a new one.")
SIDE_LABELS = (("left", "Left is better"), ("right", "Right is better"), ("tie", "Indistinguishable"))


def _set_cookie(response: Response, evaluator: Evaluator) -> None:
    response.set_cookie(
        COOKIE_NAME, evaluator_token(evaluator), max_age=COOKIE_MAX_AGE, httponly=True, samesite="lax",
        secure=get_settings().secure_cookies, path="/",
    )


def _message(request: Request, title: str, message: str, status: int, *, action: str = "") -> Response:
    return templates.TemplateResponse(
        request, "evaluator/message.html", {"title": title, "message": message, "action": action},
        status_code=status,
    )


def _refusal(request: Request, exc: EvaluationError) -> Response:
    titles = {404: "Link not found", 403: "Not your pair", 401: "Session not found", 429: "Please wait a minute"}
    action = "/e/pair" if isinstance(exc, AssignmentReleased) else ""
    return _message(request, exc.title or titles.get(exc.status_code, "Not available"), exc.message,
                    exc.status_code, action=action)


def _no_session(request: Request) -> Response:
    return _message(request, "Session not found",
                    "We could not find your session in this browser. Open the invite link you were given again "
                    "to start or continue.", 401)


def _external_id(request: Request) -> str:
    # Cut to what is stored (join() keeps as much): echoed longer in the consent form, the form's own limit
    # refused the participant with a raw JSON error.
    for name in EXTERNAL_ID_PARAMS:
        if request.query_params.get(name):
            return request.query_params[name].strip()[:EXTERNAL_ID_MAX]
    return ""


def _platform_session_id(request: Request) -> str:
    for name in PLATFORM_SESSION_PARAMS:
        value = request.query_params.get(name, "").strip()
        if value and value not in _NOT_A_SESSION:
            return value[:PLATFORM_SESSION_ID_MAX]
    return ""


def _instructions(request: Request, study: Study, *, external_id: str, platform_session_id: str = "",
                  error: str = "", status: int = 200):
    return templates.TemplateResponse(
        request, "evaluator/instructions.html",
        {"study": study, "criteria": list(study.criteria), "external_id": external_id,
         "platform_session_id": platform_session_id, "error": error, "quota": study.pairs_per_session},
        status_code=status,
    )


# The rating routes are async and run their database work through in_slot (app/concurrency.py): one
# thread-pool hop per request, after a slot in the rating gate; the work opens its own session in that thread
# (a snapshot for a GET, a writing transaction otherwise), committed before the response is sent.


@router.get("/join/{invite_token}", response_class=HTMLResponse)
async def invite(invite_token: str, request: Request) -> Response:
    return await in_slot(JOIN, _invite, invite_token, request)


def _invite(invite_token: str, request: Request) -> Response:
    with snapshot_session_scope() as session:
        try:
            study = study_for_invite(session, invite_token=invite_token)
        except EvaluationError as exc:
            return _refusal(request, exc)
        evaluator = evaluator_from_token(session, request.cookies.get(COOKIE_NAME))
        if evaluator is not None and evaluator.study_id == study.id:
            return RedirectResponse("/e/pair", status_code=303)  # coming back: resume where they left off
        external_id, platform_session_id = _external_id(request), _platform_session_id(request)
        try:
            # A link with a participant id and its platform session id may be a participant coming back:
            # join() resumes them before it counts the address's sessions, so only then is the address limit
            # left to it.
            check_can_join(session, study, ip=None if external_id and platform_session_id else client_ip(request))
        except EvaluationError as exc:
            return _refusal(request, exc)
        return _instructions(request, study, external_id=external_id, platform_session_id=platform_session_id)


@router.post("/join/{invite_token}", response_class=HTMLResponse)
async def consent(
    invite_token: str,
    request: Request,
    csrf_token: Annotated[str, Form()] = "",
    consent: Annotated[str, Form()] = "",
    external_id: Annotated[str, Form(max_length=EXTERNAL_ID_MAX)] = "",
    platform_session_id: Annotated[str, Form(max_length=PLATFORM_SESSION_ID_MAX)] = "",
) -> Response:
    return await in_slot(JOIN, _consent, invite_token, request, csrf_token, consent, external_id,
                         platform_session_id)


def _consent(invite_token: str, request: Request, csrf_token: str, consent: str, external_id: str,
             platform_session_id: str) -> Response:
    try:
        verify_csrf(request, csrf_token)
    except HTTPException as exc:
        return _message(request, "Please reload", exc.detail, 403)
    with session_scope() as session:
        try:
            study = study_for_invite(session, invite_token=invite_token)
            evaluator = evaluator_from_token(session, request.cookies.get(COOKIE_NAME))
            if evaluator is None or evaluator.study_id != study.id:
                if consent != "yes":
                    check_can_join(session, study)
                    return _instructions(request, study, external_id=external_id,
                                         platform_session_id=platform_session_id, status=422,
                                         error="Please tick the consent box to take part.")
                check_rate("join", client_ip(request), join_rate_limit(study))
                evaluator = join(session, invite_token=invite_token, external_id=external_id or None,
                                 platform_session_id=platform_session_id or None, ip=client_ip(request),
                                 user_agent=request.headers.get("user-agent"))
        except EvaluationError as exc:
            return _refusal(request, exc)
        except HTTPException as exc:  # the join rate limit
            return _message(request, "Please wait a minute", exc.detail, exc.status_code)
        response = RedirectResponse("/e/pair", status_code=303)
        _set_cookie(response, evaluator)
    return response


def render_pair_page(request: Request, view: PairView, *, criteria: Sequence, quota: int, number: int,
                     chosen: dict[str, str] | None = None, error: str = "", missing: list[str] | None = None,
                     status: int = 200, extras: dict[str, Any] | None = None) -> Response:
    """The pair page. ``criteria``: the study's, in page order (each with key, label and description);
    ``number``: the pair's number shown to the evaluator (answered pairs + 1)."""
    options = answer_options(view.answer_options)
    context = {
        "assignment_token": view.token,
        "prompt": view.prompt,
        "left_src": f"/m/{view.left_media_token}",
        "right_src": f"/m/{view.right_media_token}",
        "width": view.width,
        "height": view.height,
        "play_ms": view.play_ms,
        "clip_format": view.clip_format,
        "media_type": {"mp4": "video/mp4", "webm": "video/webm"}.get(view.clip_format, "image/gif"),
        "fps": view.fps,
        "frames": view.frames,
        "criteria": criteria,
        "sides": SIDE_LABELS + ((("both_bad", "Both are bad"),) if options.both_bad else ()),
        "options": options,
        "extras": extras or {"comment": "", "tags": []},
        "chosen": chosen or {},
        "missing": set(missing or []),
        "error": error,
        # The pair's number in the session: answered pairs + 1 (an assignment given back to the pool after
        # abandon_after_minutes keeps its stored position, so the stored one may have skipped a number).
        "position": number,
        "total": max(quota, number),
        "notice": REPLACED_NOTICE if view.replaced else "",
    }
    return templates.TemplateResponse(request, "evaluator/pair.html", context, status_code=status)


def _current(request: Request, session: Session) -> Evaluator | None:
    return evaluator_from_token(session, request.cookies.get(COOKIE_NAME))


@router.get("/e/pair", response_class=HTMLResponse)
async def pair_page(request: Request) -> Response:
    return await in_slot(PAGE, _pair_page, request)


@retry_on_conflict
def _pair_page(request: Request) -> Response:
    with session_scope() as session:
        state = state_from_token(session, request.cookies.get(COOKIE_NAME))
        if state is None:
            return _no_session(request)
        try:
            view = next_assignment(session, evaluator_id=state.id, state=state)
        except EvaluationError as exc:
            return _refusal(request, exc)
        if view is None:
            return RedirectResponse("/e/done", status_code=303)
        response = render_pair_page(request, view, criteria=study_criteria(session, state.study_id),
                                    quota=state.quota, number=state.done + 1)
    response.headers["Cache-Control"] = "no-store"  # Back must not show an old pair as if it were current
    return response


async def read_form(request: Request) -> FormData:
    return await request.form()


def parse_extras(form: FormData) -> tuple[str | None, list[str]]:
    """The optional comment and reason tags of the pair form (where the study offers them)."""
    comment = str(form.get("comment", "") or "")[:5000]
    return (comment or None), [str(v)[:100] for k, v in form.multi_items() if k == "reason_tag"][:50]


def parse_vote_form(form: FormData) -> tuple[str, dict[str, str], int | None]:
    """The pair form's assignment token, its answers (``c_<criterion key>`` fields) and the time on page."""
    choices = {k[2:]: str(v) for k, v in form.multi_items() if k.startswith("c_")}
    raw_ms = str(form.get("client_time_ms", ""))
    client_ms = int(raw_ms) if raw_ms.isdigit() and len(raw_ms) < 10 else None
    return str(form.get("assignment", "")), choices, client_ms


@router.post("/e/vote", response_class=HTMLResponse)
async def vote(request: Request, form: Annotated[FormData, Depends(read_form)]) -> Response:
    # The blocking database work runs in the thread pool (in_slot), never on the event loop: an async handler
    # doing it here stalled every other request behind one vote waiting for SQLite's write lock.
    return await in_slot(VOTE, _vote, request, form)


@retry_on_conflict
def _vote(request: Request, form: FormData) -> Response:
    try:
        verify_csrf(request, str(form.get("csrf_token", "")))
    except HTTPException as exc:
        return _message(request, "Please reload", exc.detail, 403, action="/e/pair")
    token, choices, client_ms = parse_vote_form(form)
    comment, tags = parse_extras(form)
    with session_scope() as session:
        state = state_from_token(session, request.cookies.get(COOKIE_NAME))
        if state is None:
            return _no_session(request)
        try:
            submit_vote(session, assignment_token=token, evaluator_id=state.id, choices=choices,
                        client_time_ms=client_ms, state=state, comment=comment, reason_tags=tags)
        except InvalidChoices as exc:
            # submit_vote found this assignment (in this transaction) before it checked the answers.
            view = pair_view(session, token=token)
            if view is None:
                return _refusal(request, UnknownAssignment("This pair was not found. Reload the page to get your "
                                                           "current pair."))
            return render_pair_page(request, view, criteria=study_criteria(session, state.study_id),
                                    quota=state.quota, number=state.done + 1, chosen=choices, error=exc.message,
                                    missing=exc.missing + exc.invalid, status=422,
                                    extras={"comment": comment or "", "tags": tags})
        except EvaluationError as exc:
            return _refusal(request, exc)
    # Recorded or already recorded: either way the evaluator moves on (Post/Redirect/Get).
    return RedirectResponse("/e/pair", status_code=303)


@router.get("/e/done", response_class=HTMLResponse)
def done(request: Request, session: DbSession) -> Response:
    evaluator = _current(request, session)
    if evaluator is None:
        return _no_session(request)
    if evaluator.completed_at is None:
        return RedirectResponse("/e/pair", status_code=303)
    study = session.get_one(Study, evaluator.study_id)  # the evaluator's foreign key: it exists
    return templates.TemplateResponse(
        request, "evaluator/done.html",
        {"code": evaluator.completion_code,
         "redirect": completion_redirect(study.redirect_url, evaluator.completion_code)},
    )
