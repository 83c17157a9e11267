"""JSON API v1: login, studies (list, create, get, open/close, progress) and, for admins, users.

Authentication is the same signed session cookie as the pages: ``POST /api/v1/login`` sets it. Every write
takes a JSON body, so a cross-site form cannot forge one (browsers preflight JSON requests).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from app.deps import StudyId, study_or_404
from app.models import Prompt, Study
from app.security import AdminUser, CurrentUser, DbSession, client_key, login, login_throttle, logout
from app.services import studies as study_service
from app.services.prompts import PromptSpec
from app.services.studies import ModelSpec, StudyError
from app.services.users import UserError, authenticate, create_user, get_user_by_email, list_users

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
    created_at: datetime


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
        created_at=study.created_at,
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
    login(request, user)
    return UserOut.model_validate(user)


@router.post("/logout", status_code=204, tags=["auth"])
def api_logout(request: Request) -> Response:
    logout(request)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut, tags=["auth"], responses=ERRORS)
def api_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


# --- studies ------------------------------------------------------------------------------------------------


@router.get("/studies", response_model=list[StudySummary], responses=ERRORS)
def api_list_studies(session: DbSession, user: CurrentUser) -> list[StudySummary]:
    return [
        StudySummary(id=s.id, slug=s.slug, name=s.name, status=s.status, models=[m.name for m in s.models],
                     created_at=s.created_at)
        for s in study_service.list_studies(session)
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
        )
    except StudyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return _study_out(session, study)


@router.get("/studies/{study_id}", response_model=StudyOut, responses=ERRORS)
def apistudy_or_404(study_id: StudyId, session: DbSession, user: CurrentUser) -> StudyOut:
    return _study_out(session, study_or_404(session, study_id))


@router.post("/studies/{study_id}/status", response_model=StudyOut, responses=ERRORS)
def api_set_status(study_id: StudyId, body: StatusIn, session: DbSession, user: CurrentUser) -> StudyOut:
    """Open a study to evaluators, close it, or reopen it (draft → open → closed → open)."""
    study_or_404(session, study_id)
    try:
        study = study_service.set_status(session, study_id=study_id, status=body.status)
    except StudyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return _study_out(session, study)


@router.get("/studies/{study_id}/qc", responses=ERRORS)
def api_get_qc(study_id: StudyId, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    """The study's effective quality-control settings (attention checks, too-fast votes, straight-lining)."""
    from dataclasses import asdict

    from app.services.attention import qc_settings

    return asdict(qc_settings(study_or_404(session, study_id)))


@router.patch("/studies/{study_id}/qc", responses=ERRORS)
def api_set_qc(study_id: StudyId, body: dict[str, Any], session: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Change some quality-control settings, e.g. {"attention_rate": 0.2, "min_seconds_per_vote": 6}.

    Evaluators are re-judged under the new settings at once; the results follow.
    """
    study_or_404(session, study_id)
    try:
        return study_service.set_qc(session, study_id=study_id, changes=body)
    except StudyError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


@router.get("/studies/{study_id}/progress", response_model=ProgressOut, responses=ERRORS)
def api_progress(study_id: StudyId, session: DbSession, user: CurrentUser) -> ProgressOut:
    study_or_404(session, study_id)
    return ProgressOut.model_validate(study_service.study_progress(session, study_id=study_id))


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

