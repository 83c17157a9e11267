"""JSON API v1: login, studies (list, create, get, open/close, progress, sharing) and, for admins, users.

Authentication is the same signed session cookie as the pages: ``POST /api/v1/login`` sets it, and
``POST /api/v1/logout`` (or a new password) ends it server-side. Every write takes a JSON body, so a
cross-site form cannot forge one (browsers preflight JSON requests). A study is seen only by its owner, the
researchers it is shared with and admins; to anyone else its routes answer 404, as for a study that does
not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import func, select

from app.deps import MAX_ID, StudyForUser
from app.models import Prompt, Study, User
from app.passwords import verify_password
from app.security import (
    AdminUser,
    CurrentUser,
    DbSession,
    client_key,
    login,
    login_throttle,
    login_token,
    logout,
)
from app.services import studies as study_service
from app.services.prompts import PromptSpec
from app.services.studies import ModelSpec, SharingNotAllowed, StudyError
from app.services.users import (
    UserError,
    authenticate,
    create_user,
    end_session,
    get_user_by_email,
    list_users,
    set_password,
    start_session,
)

router = APIRouter(tags=["studies"])

# --- schemas ------------------------------------------------------------------------------------------------


class LoginIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1000)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    role: str
    created_at: datetime


class UserCreate(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(min_length=1, max_length=1000, description="At least 8 characters.")
    role: Literal["admin", "researcher"] = "researcher"


class ModelIn(BaseModel):
    name: str = Field(max_length=100)
    description: str = Field("", max_length=2000)
    preset: str = Field("", max_length=100, description="A generation preset (worker/presets.toml), e.g. animatediff.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Per-model settings, e.g. {'steps': 4}.")


class PromptIn(BaseModel):
    id: str = Field(max_length=100, description="Your id for the prompt; becomes the GIF file name on import.")
    text: str = Field(max_length=2000)
    theme: str = Field(max_length=100)
    detail: Literal["short", "medium", "long"] = "medium"
    tags: list[str] = Field(default_factory=list, max_length=50)


class CriterionIn(BaseModel):
    key: str = Field(max_length=60)
    label: str = Field(max_length=120)
    description: str = Field("", max_length=2000)


class AnswerOptionsIn(BaseModel):
    """Optional answers (all off unless set); checked again by the study service (tag count, length, repeats)."""

    model_config = ConfigDict(extra="forbid")
    both_bad: StrictBool = Field(False, description="Offer 'Both are bad' (a tie in the statistics, "
                                 "'tie (bothbad)' in clean_battle, kept apart in the answers export).")
    reason_tags: list[Annotated[str, Field(max_length=40)]] = Field(
        default_factory=list, max_length=12, description="Tags an evaluator may tick per pair.")
    tags_required: StrictBool = Field(False, description="Require at least one tag (needs reason_tags).")
    comment: Literal["off", "optional", "required"] = Field("off", description="A short comment per pair.")


class StudyCreate(BaseModel):
    name: str = Field(max_length=200)
    description: str = Field("", max_length=5000)
    models: list[ModelIn] = Field(max_length=20, description="At least two, with distinct names.")
    themes: list[str] | None = Field(
        None, max_length=100, description="Built-in suite themes to use (all of them if both this and prompts are "
        "left out)."
    )
    prompts: list[PromptIn] | None = Field(None, max_length=5000, description="Your own prompts, instead of themes.")
    criteria: list[CriterionIn] | None = Field(None, max_length=50, description="Default: the six standard ones.")
    votes_per_pair: int = Field(5, ge=1, le=10_000)
    pairs_per_session: int = Field(10, ge=1, le=10_000)
    redirect_url: str = Field("", max_length=500)
    settings: dict[str, Any] | None = Field(None, description="Overrides of the standard generation settings.")
    pair_selection: str = Field(
        "least_voted", description="How the next pair is chosen: least_voted (fewest votes first), adaptive "
        "(with 3+ models, votes go where they narrow the widest rating intervals most: sequential optimal design) "
        "or arena_eq9 (Chatbot Arena's Eq. 9, for the pairwise win rates). Changeable later with "
        "PATCH /studies/{id}/qc.")
    answers: AnswerOptionsIn | None = Field(None, description="Optional answers; none unless given.")


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str
    preset: str
    overrides: dict[str, Any]
    position: int


class CriterionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    key: str
    label: str
    description: str


class StudySummary(BaseModel):
    id: int
    slug: str
    name: str
    status: str
    models: list[str]
    created_at: datetime


class StudyOut(BaseModel):
    id: int
    slug: str
    name: str
    description: str
    status: str
    votes_per_pair: int
    pairs_per_session: int
    redirect_url: str
    invite_url: str
    settings: dict[str, Any]
    models: list[ModelOut]
    criteria: list[CriterionOut]
    prompts: int
    answers: dict[str, Any] = Field(description="The optional answers offered (empty when none).")
    created_at: datetime


class PasswordIn(BaseModel):
    current_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000, description="At least 8 characters.")


class CollaboratorIn(BaseModel):
    email: str = Field(max_length=254, description="The email of an existing BlindPair account.")


class SharingOut(BaseModel):
    owner: str | None = Field(description="The owner's email; null for a study made without one (admins only).")
    collaborators: list[UserOut]
    can_share: bool = Field(description="Whether you may add and remove collaborators (the owner and admins).")


class StatusIn(BaseModel):
    status: Literal["draft", "open", "closed"]


class ClipCounts(BaseModel):
    queued: int
    running: int
    done: int
    failed: int
    total: int


class ProgressOut(BaseModel):
    study_id: int
    status: str
    prompts: int
    models: int
    clips: ClipCounts
    pairs: int
    check_pairs: int
    votes: int
    check_votes: int
    votes_per_pair: int
    votes_target: int
    votes_needed: int
    pairs_short: int
    pairs_complete: int
    percent_complete: float
    evaluators: int
    evaluators_completed: int
    evaluators_flagged: int
    assignments_open: int


class Message(BaseModel):
    detail: str


# What FastAPI's ``responses=`` takes: status code -> the OpenAPI fields of that response ("model", "description").
Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {400: {"model": Message}, 401: {"model": Message}, 404: {"model": Message}}

# --- helpers ------------------------------------------------------------------------------------------------


def _study_out(session, study: Study) -> StudyOut:
    n_prompts = session.scalar(select(func.count()).select_from(Prompt).where(Prompt.study_id == study.id))
    return StudyOut(
        id=study.id, slug=study.slug, name=study.name, description=study.description, status=study.status,
        votes_per_pair=study.votes_per_pair, pairs_per_session=study.pairs_per_session,
        redirect_url=study.redirect_url, invite_url=study_service.invite_url(study), settings=study.settings,
        models=[ModelOut.model_validate(m) for m in study.models],
        criteria=[CriterionOut.model_validate(c) for c in study.criteria], prompts=n_prompts or 0,
        answers=study.answer_options or {}, created_at=study.created_at,
    )


# --- login --------------------------------------------------------------------------------------------------


@router.post("/login", response_model=UserOut, tags=["auth"], responses={**ERRORS, 429: {"model": Message}})
def api_login(body: LoginIn, request: Request, session: DbSession) -> UserOut:
    """Log in with email and password; sets the session cookie that every other call then sends."""
    throttle, key = login_throttle(request), client_key(request)
    wait = throttle.retry_after(key)
    if wait:
        raise HTTPException(status_code=429, detail=f"Too many failed logins. Try again in {wait} s.",
                            headers={"Retry-After": str(wait)})
    user = authenticate(session, email=body.email, password=body.password)
    if user is None:
        throttle.failed(key)
        raise HTTPException(status_code=401, detail="Email or password is wrong.")
    throttle.succeeded(key)
    login(request, start_session(session, user_id=user.id))
    return UserOut.model_validate(user)


@router.post("/logout", status_code=204, tags=["auth"])
def api_logout(request: Request, session: DbSession) -> Response:
    """End this login server-side: the cookie, and any copy of it, no longer logs in."""
    token = login_token(request)
    if token:
        end_session(session, token=token)
    logout(request)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut, tags=["auth"], responses=ERRORS)
def api_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.post("/me/password", status_code=204, tags=["auth"], responses={**ERRORS, 429: {"model": Message}})
def api_change_password(body: PasswordIn, request: Request, session: DbSession, user: CurrentUser) -> Response:
    """Set a new password. Every login of the account ends; this client gets a fresh session cookie."""
    throttle, key = login_throttle(request), client_key(request)
    wait = throttle.retry_after(key)
    if wait:
        raise HTTPException(status_code=429, detail=f"Too many wrong passwords. Try again in {wait} s.",
                            headers={"Retry-After": str(wait)})
    if not verify_password(user.password_hash, body.current_password):
        throttle.failed(key)  # a stolen cookie must not become a way to guess the password
        raise HTTPException(status_code=400, detail="current_password is wrong; nothing was changed.")
    try:
        set_password(session, user_id=user.id, password=body.new_password)
    except UserError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    login(request, start_session(session, user_id=user.id))
    return Response(status_code=204)


# --- studies ------------------------------------------------------------------------------------------------


@router.get("/studies", response_model=list[StudySummary], responses=ERRORS)
def api_list_studies(session: DbSession, user: CurrentUser) -> list[StudySummary]:
    """The studies you own or that were shared with you (admins: every study)."""
    return [
        StudySummary(id=s.id, slug=s.slug, name=s.name, status=s.status, models=[m.name for m in s.models],
                     created_at=s.created_at)
        for s in study_service.list_studies(session, user_id=user.id, is_admin=user.role == "admin")
    ]


@router.post("/studies", response_model=StudyOut, status_code=201, responses=ERRORS)
def api_create_study(body: StudyCreate, session: DbSession, user: CurrentUser) -> StudyOut:
    """Create a draft study. Prompts come from ``prompts`` or from the built-in suite's ``themes``."""
    try:
        if body.prompts is not None and body.themes is not None:
            raise StudyError("Give either prompts or themes, not both.")
        if body.prompts is not None:
            prompts = [PromptSpec(p.id, p.text, p.theme, p.detail, tuple(p.tags)) for p in body.prompts]
        else:
            prompts = study_service.builtin_prompts(body.themes)
        study = study_service.create_study(
            session, name=body.name, description=body.description,
            models=[ModelSpec(m.name, m.description, m.preset, m.overrides) for m in body.models],
            prompts=prompts,
            criteria=None if body.criteria is None else [(c.key, c.label, c.description) for c in body.criteria],
            votes_per_pair=body.votes_per_pair, pairs_per_session=body.pairs_per_session,
            redirect_url=body.redirect_url, settings=body.settings, created_by_id=user.id,
            qc={"pair_selection": body.pair_selection} if body.pair_selection != "least_voted" else None,
            answers=body.answers.model_dump() if body.answers else None,
        )
    except StudyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return _study_out(session, study)


@router.get("/studies/{study_id}", response_model=StudyOut, responses=ERRORS)
def api_get_study(study: StudyForUser, session: DbSession) -> StudyOut:
    return _study_out(session, study)


@router.post("/studies/{study_id}/status", response_model=StudyOut, responses=ERRORS)
def api_set_status(study: StudyForUser, body: StatusIn, session: DbSession) -> StudyOut:
    """Open a study to evaluators, close it, or reopen it (draft → open → closed → open)."""
    try:
        study = study_service.set_status(session, study_id=study.id, status=body.status)
    except StudyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return _study_out(session, study)


@router.get("/studies/{study_id}/qc", responses=ERRORS)
def api_get_qc(study: StudyForUser) -> dict[str, Any]:
    """The study's effective quality-control settings (attention checks, too-fast votes, straight-lining)."""
    from dataclasses import asdict

    from app.services.attention import qc_settings

    return asdict(qc_settings(study))


@router.patch("/studies/{study_id}/qc", responses=ERRORS)
def api_set_qc(study: StudyForUser, body: dict[str, Any], session: DbSession) -> dict[str, Any]:
    """Change some quality-control settings, e.g. {"attention_rate": 0.2, "min_seconds_per_vote": 6}.

    Evaluators are re-judged under the new settings at once; the results follow.
    """
    try:
        return study_service.set_qc(session, study_id=study.id, changes=body)
    except StudyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


@router.get("/studies/{study_id}/progress", response_model=ProgressOut, responses=ERRORS)
def api_progress(study: StudyForUser, session: DbSession) -> ProgressOut:
    return ProgressOut.model_validate(study_service.study_progress(session, study_id=study.id))


# --- sharing ------------------------------------------------------------------------------------------------

SHARING_ERRORS: Responses = {**ERRORS, 403: {"model": Message}}


def _sharing_out(session, study: Study, user: User) -> SharingOut:
    owner = session.get(User, study.created_by_id) if study.created_by_id else None
    return SharingOut(
        owner=owner.email if owner else None,
        collaborators=[UserOut.model_validate(u) for u in study_service.list_collaborators(session, study_id=study.id)],
        can_share=study_service.can_share(study, user_id=user.id, is_admin=user.role == "admin"),
    )


def _sharing_error(exc: StudyError) -> HTTPException:
    return HTTPException(status_code=403 if isinstance(exc, SharingNotAllowed) else 400, detail=str(exc))


@router.get("/studies/{study_id}/collaborators", response_model=SharingOut, responses=ERRORS)
def api_sharing(study: StudyForUser, session: DbSession, user: CurrentUser) -> SharingOut:
    """Who sees the study: its owner and the researchers it is shared with (admins see every study)."""
    return _sharing_out(session, study, user)


@router.post("/studies/{study_id}/collaborators", response_model=SharingOut, responses=SHARING_ERRORS)
def api_add_collaborator(study: StudyForUser, body: CollaboratorIn, session: DbSession,
                         user: CurrentUser) -> SharingOut:
    """Share the study with an existing account (owner or admin only); sharing twice changes nothing."""
    try:
        study_service.add_collaborator(session, study_id=study.id, email=body.email, by_user_id=user.id,
                                       by_admin=user.role == "admin")
    except StudyError as exc:
        raise _sharing_error(exc) from exc
    return _sharing_out(session, study, user)


@router.delete("/studies/{study_id}/collaborators/{user_id}", response_model=SharingOut,
               responses=SHARING_ERRORS)
def api_remove_collaborator(study: StudyForUser, user_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
                            session: DbSession, user: CurrentUser) -> SharingOut:
    """Stop sharing the study with this account (owner or admin only)."""
    try:
        study_service.remove_collaborator(session, study_id=study.id, user_id=user_id, by_user_id=user.id,
                                          by_admin=user.role == "admin")
    except StudyError as exc:
        raise _sharing_error(exc) from exc
    return _sharing_out(session, study, user)


# --- users (admins) -----------------------------------------------------------------------------------------


@router.get("/users", response_model=list[UserOut], tags=["auth"], responses={**ERRORS, 403: {"model": Message}})
def api_list_users(session: DbSession, user: AdminUser) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in list_users(session)]


@router.post("/users", response_model=UserOut, status_code=201, tags=["auth"],
             responses={**ERRORS, 403: {"model": Message}, 409: {"model": Message}})
def api_create_user(body: UserCreate, session: DbSession, user: AdminUser) -> UserOut:
    if get_user_by_email(session, body.email) is not None:
        email = body.email.strip().lower()
        raise HTTPException(status_code=409, detail=f"A user with the email {email} already exists.")
    try:
        created = create_user(session, email=body.email, password=body.password, role=body.role)
    except UserError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return UserOut.model_validate(created)

