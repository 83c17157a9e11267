"""HTML routes for researchers and admins: studies list, new-study form, study page and its sharing, user
management, and the account page (a new password)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import func, select

from app.config import get_settings
from app.csrf import verify_csrf
from app.deps import MAX_ID, StudyForUser
from app.models import Prompt, Study, User
from app.passwords import ROLES, verify_password
from app.security import AdminUser, CurrentUser, DbSession, client_key, login, login_throttle
from app.services import storage as storage_service
from app.services import studies as study_service
from app.services.studies import DEFAULT_SETTINGS, ModelSpec, SharingNotAllowed, StudyError
from app.services.users import (
    MIN_PASSWORD_LENGTH,
    UserError,
    create_user,
    list_users,
    set_password,
    start_session,
)
from app.templating import templates
from app.web.panels import render_panels
from worker.presets import DTYPES, NATIVE_KEYS, all_presets

router = APIRouter(include_in_schema=False)

FLASH_KEY = "flash"


def flash(request: Request, text: str, kind: str = "ok") -> None:
    """A one-time message shown on the next page (kept in the signed session cookie)."""
    request.session[FLASH_KEY] = {"text": text, "kind": kind}


def render(request: Request, name: str, user: User, status_code: int = 200, **context: Any) -> Response:
    """Render an admin page: adds the user (for the top bar) and any pending flash message."""
    context.setdefault("flash", request.session.pop(FLASH_KEY, None))
    return templates.TemplateResponse(request, name, {"user": user, **context}, status_code=status_code)


# --- studies list -------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, session: DbSession, user: CurrentUser) -> Response:
    """The studies this user owns or was added to (admins: every study)."""
    visible = study_service.list_studies(session, user_id=user.id, is_admin=user.role == "admin")
    # A list shows what is stored: settling every study's QC here would re-judge them all on one page view.
    rows = [(s, study_service.study_progress(session, study_id=s.id, settle_qc=False)) for s in visible]
    return render(request, "admin/studies.html", user, rows=rows, nav="studies")


# --- new study ----------------------------------------------------------------------------------------------


@dataclass
class StudyForm:
    """What the new-study form sent, kept as typed so that a refused form comes back exactly as it was."""

    name: str = ""
    description: str = ""
    models: list[dict[str, str]] = field(default_factory=lambda: [{}, {}])
    prompt_source: str = "builtin"
    themes: list[str] = field(default_factory=list)
    votes_per_pair: str = "5"
    pairs_per_session: str = "10"
    redirect_url: str = ""
    pair_selection: str = "least_voted"
    # Optional answers (app/services/answers.py), as typed: both_bad / tags_required "yes" or "", tags comma-separated.
    answers: dict[str, str] = field(default_factory=lambda: {"both_bad": "", "reason_tags": "", "tags_required": "",
                                                              "comment": "off"})
    settings: dict[str, str] = field(default_factory=lambda: {
        k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in DEFAULT_SETTINGS.items()})

    def model_rows(self) -> list[dict[str, str]]:
        """The rows to show: what was sent (at least two) plus one blank row for adding another model."""
        rows = [m for m in self.models if any(m.values())]
        while len(rows) < 2:
            rows.append({})
        return [*rows, {}]


def _themes() -> tuple[list[tuple[str, int]], str]:
    try:
        return study_service.builtin_themes(), ""
    except ImportError:
        return [], "The built-in prompt suite is not installed; upload a prompt file instead."


def _new_study_page(request, user, form: StudyForm, errors: list[str] | None = None, status: int = 200):
    themes, themes_error = _themes()
    return render(request, "admin/study_new.html", user, status_code=status, form=form, errors=errors or [],
                  themes=themes, themes_error=themes_error, nav="new", dtypes=DTYPES,
                  presets=sorted(all_presets().values(), key=lambda p: p.name),
                  max_upload_mb=get_settings().max_upload_bytes // (1024 * 1024))


@router.get("/studies/new", response_class=HTMLResponse)
def new_study_form(request: Request, user: CurrentUser) -> Response:
    themes, _ = _themes()
    return _new_study_page(request, user, StudyForm(themes=[t for t, _ in themes]))


def _int_field(value: str, label: str, errors: list[str]) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        errors.append(f"{label} must be a whole number (got '{value}').")
        return None


def _settings(raw: dict[str, str], errors: list[str]) -> dict[str, Any]:
    """Form text -> typed generation settings; the service then checks ranges (multiples of 8, ...)."""
    out: dict[str, Any] = {"negative_prompt": raw["negative_prompt"], "base_model": raw["base_model"].strip(),
                           "dtype": raw["dtype"], "clip_format": raw.get("clip_format", "gif")}
    try:
        out["seeds"] = [int(x) for x in raw["seeds"].replace(",", " ").split()]
    except ValueError:
        errors.append(f"Seeds must be whole numbers separated by commas, e.g. 0, 1, 2 (got '{raw['seeds']}').")
    for key, label in (("frames", "Frames"), ("width", "Width"), ("height", "Height"), ("fps", "Frames per second")):
        value = _int_field(raw[key], label, errors)
        if value is not None:
            out[key] = value
    # A native setting left at the form's default follows the teacher's family (a Wan study: 81 frames at 832x480,
    # 16 fps, bfloat16); for an AnimateDiff study the family's defaults are these same values.
    for key in NATIVE_KEYS:
        if raw.get(key, "").strip() == str(DEFAULT_SETTINGS[key]):
            out.pop(key, None)
    return out


def _read_upload(upload: UploadFile | None, errors: list[str]) -> tuple[bytes, str] | None:
    if upload is None or not upload.filename:
        errors.append("Choose a prompt file (CSV or JSONL) to upload, or use the built-in suite.")
        return None
    limit = get_settings().max_upload_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        errors.append(f"The prompt file is larger than {limit // (1024 * 1024)} MB.")
        return None
    return data, upload.filename


def _prompt_specs(form: StudyForm, upload: UploadFile | None, errors: list[str]) -> list[Any]:
    try:
        from app.services.prompts import PromptFileError, parse_prompt_file
    except ImportError:
        errors.append("The prompt service is not installed, so no prompts can be loaded.")
        return []
    if form.prompt_source == "file":
        got = _read_upload(upload, errors)
        if got is None:
            return []
        try:
            return parse_prompt_file(*got)
        except PromptFileError as exc:
            errors.append(f"The prompt file {got[1]} was refused (choose it again once fixed):")
            errors.extend(exc.errors)
            return []
    if form.prompt_source != "builtin":
        errors.append("Choose where the prompts come from: the built-in suite or a file.")
        return []
    try:
        return study_service.builtin_prompts(form.themes)
    except StudyError as exc:
        errors.extend(exc.errors)
        return []


def _answers(raw: dict[str, str]) -> dict[str, Any] | None:
    """The form's optional answers for the service (which checks them); None when none is turned on."""
    answers = {"both_bad": raw["both_bad"] == "yes", "tags_required": raw["tags_required"] == "yes",
               "reason_tags": [t.strip() for t in raw["reason_tags"].split(",") if t.strip()],
               "comment": raw["comment"].strip() or "off"}
    if not (answers["both_bad"] or answers["tags_required"] or answers["reason_tags"] or answers["comment"] != "off"):
        return None
    return answers


@router.post("/studies/new", response_class=HTMLResponse)
def create_study_submit(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    csrf_token: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    model_name: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults per request
    model_description: Annotated[list[str], Form()] = [],  # noqa: B006
    model_preset: Annotated[list[str], Form()] = [],  # noqa: B006
    prompt_source: Annotated[str, Form()] = "builtin",
    themes: Annotated[list[str], Form()] = [],  # noqa: B006
    prompt_file: Annotated[UploadFile | None, File()] = None,
    votes_per_pair: Annotated[str, Form()] = "5",
    pairs_per_session: Annotated[str, Form()] = "10",
    redirect_url: Annotated[str, Form()] = "",
    seeds: Annotated[str, Form()] = "0",
    frames: Annotated[str, Form()] = str(DEFAULT_SETTINGS["frames"]),
    width: Annotated[str, Form()] = str(DEFAULT_SETTINGS["width"]),
    height: Annotated[str, Form()] = str(DEFAULT_SETTINGS["height"]),
    fps: Annotated[str, Form()] = str(DEFAULT_SETTINGS["fps"]),
    negative_prompt: Annotated[str, Form()] = "",
    base_model: Annotated[str, Form()] = DEFAULT_SETTINGS["base_model"],
    dtype: Annotated[str, Form()] = DEFAULT_SETTINGS["dtype"],
    clip_format: Annotated[str, Form()] = DEFAULT_SETTINGS["clip_format"],
    pair_selection: Annotated[str, Form()] = "least_voted",
    both_bad: Annotated[str, Form()] = "",
    reason_tags: Annotated[str, Form()] = "",
    tags_required: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "off",
) -> Response:
    verify_csrf(request, csrf_token)
    raw_settings = {"seeds": seeds, "frames": frames, "width": width, "height": height, "fps": fps,
                    "negative_prompt": negative_prompt, "base_model": base_model, "dtype": dtype,
                    "clip_format": clip_format}
    n = max(len(model_name), len(model_description), len(model_preset))

    def pick(values: list[str], i: int) -> str:
        return values[i].strip() if i < len(values) else ""

    rows = [{"name": pick(model_name, i), "description": pick(model_description, i), "preset": pick(model_preset, i)}
            for i in range(n)]
    form = StudyForm(name=name, description=description, models=rows, prompt_source=prompt_source,
                     themes=themes, votes_per_pair=votes_per_pair, pairs_per_session=pairs_per_session,
                     redirect_url=redirect_url, pair_selection=pair_selection, settings=raw_settings,
                     answers={"both_bad": both_bad, "reason_tags": reason_tags, "tags_required": tags_required,
                              "comment": comment})
    errors: list[str] = []
    settings = _settings(raw_settings, errors)
    vpp = _int_field(votes_per_pair, "Votes per pair", errors)
    pps = _int_field(pairs_per_session, "Pairs per session", errors)
    prompts = _prompt_specs(form, prompt_file, errors)
    models = [ModelSpec(name=r["name"], description=r["description"], preset=r["preset"])
              for r in rows if any(r.values())]
    try:
        study = study_service.create_study(
            session, name=name, description=description, models=models, prompts=prompts,
            votes_per_pair=vpp if vpp is not None else 1, pairs_per_session=pps if pps is not None else 1,
            redirect_url=redirect_url, created_by_id=user.id, settings=settings, answers=_answers(form.answers),
            qc={"pair_selection": pair_selection} if pair_selection != "least_voted" else None,
        )
    except StudyError as exc:
        # The service repeats "no prompts" when the prompt source already failed; say each thing once.
        extra = [e for e in exc.errors if not (errors and not prompts and "at least one prompt" in e)]
        errors.extend(extra)
    if errors:
        session.rollback()
        return _new_study_page(request, user, form, errors, status=400)
    flash(request, f"Study “{study.name}” created as a draft with {len(prompts)} prompts. Open it when clips are in.")
    return RedirectResponse(f"/studies/{study.id}", status_code=303)


# --- study page ---------------------------------------------------------------------------------------------


def _render_panels(request: Request, session, study, user) -> list[Markup]:
    """Each registered panel's template rendered with its own context (plus request, study and user)."""
    out = []
    for template_name, context in render_panels(session, study):
        template = templates.get_template(template_name)
        out.append(Markup(template.render({"request": request, "study": study, "user": user, **context})))
    return out


def _sharing(session, study: Study, user: User) -> dict[str, Any]:
    owner = session.get(User, study.created_by_id) if study.created_by_id else None
    return {"owner": owner, "collaborators": study_service.list_collaborators(session, study_id=study.id),
            "can_share": study_service.can_share(study, user_id=user.id, is_admin=user.role == "admin")}


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study: StudyForUser, session: DbSession, user: CurrentUser) -> Response:
    themes = session.execute(
        select(Prompt.theme, func.count()).where(Prompt.study_id == study.id).group_by(Prompt.theme)
        .order_by(Prompt.theme)
    ).all()
    panels = _render_panels(request, session, study, user)  # first: the results panel settles what QC owes
    return render(
        request, "admin/study.html", user, nav="studies", study=study,
        progress=study_service.study_progress(session, study_id=study.id),
        invite_url=study_service.invite_url(study), prompt_themes=themes, sharing=_sharing(session, study, user),
        panels=panels, storage=storage_service.storage_status(session, study_id=study.id),
    )


@router.post("/studies/{study_id}/status")
def study_status_submit(
    request: Request,
    study: StudyForUser,
    session: DbSession,
    status: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    verify_csrf(request, csrf_token)
    try:
        study = study_service.set_status(session, study_id=study.id, status=status)
    except StudyError as exc:
        flash(request, str(exc), "error")
    else:
        verb = {"open": "open: evaluators can join", "closed": "closed: the invite link no longer admits anyone"}
        flash(request, f"The study is now {verb.get(study.status, study.status)}.")
    return RedirectResponse(f"/studies/{study.id}", status_code=303)


# --- sharing: the owner (or an admin) adds and removes collaborators ----------------------------------------


def _sharing_back(study: Study) -> RedirectResponse:
    return RedirectResponse(f"/studies/{study.id}#sharing", status_code=303)


def _sharing_refused(exc: StudyError) -> None:
    if isinstance(exc, SharingNotAllowed):
        raise HTTPException(status_code=403, detail=str(exc)) from exc


@router.post("/studies/{study_id}/collaborators")
def add_collaborator_submit(
    request: Request,
    study: StudyForUser,
    session: DbSession,
    user: CurrentUser,
    email: Annotated[str, Form(max_length=254)] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    verify_csrf(request, csrf_token)
    try:
        added = study_service.add_collaborator(session, study_id=study.id, email=email, by_user_id=user.id,
                                               by_admin=user.role == "admin")
    except StudyError as exc:
        _sharing_refused(exc)
        flash(request, "Not shared: " + str(exc), "error")
    else:
        flash(request, f"Shared with {added.email}: they see and run this study from their studies list.")
    return _sharing_back(study)


@router.post("/studies/{study_id}/collaborators/{user_id}/remove")
def remove_collaborator_submit(
    request: Request,
    study: StudyForUser,
    session: DbSession,
    user: CurrentUser,
    user_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    verify_csrf(request, csrf_token)
    try:
        study_service.remove_collaborator(session, study_id=study.id, user_id=user_id, by_user_id=user.id,
                                          by_admin=user.role == "admin")
    except StudyError as exc:
        _sharing_refused(exc)
        flash(request, "Nothing was changed: " + str(exc), "error")
    else:
        flash(request, "No longer shared with that account.")
    return _sharing_back(study)


# --- users (admins only) ------------------------------------------------------------------------------------


def _users_page(request, session, user, *, email="", role="researcher", errors=None, status=200):
    return render(request, "admin/users.html", user, status_code=status, users=list_users(session), roles=ROLES,
                  email=email, role=role, errors=errors or [], nav="users", min_password=MIN_PASSWORD_LENGTH)


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, session: DbSession, user: AdminUser) -> Response:
    return _users_page(request, session, user)


@router.post("/admin/users", response_class=HTMLResponse)
def add_user_submit(
    request: Request,
    session: DbSession,
    user: AdminUser,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "researcher",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    verify_csrf(request, csrf_token)
    try:
        created = create_user(session, email=email, password=password, role=role)
    except UserError as exc:
        return _users_page(request, session, user, email=email, role=role, errors=[str(exc)], status=400)
    flash(request, f"Added {created.email} as {created.role}. Give them their password in person or by a safe channel.")
    return RedirectResponse("/admin/users", status_code=303)


# --- account: a new password ends every other login -------------------------------------------------------


def _account_page(request: Request, user: User, *, errors: list[str] | None = None, status: int = 200) -> Response:
    return render(request, "admin/account.html", user, status_code=status, errors=errors or [], nav="account",
                  min_password=MIN_PASSWORD_LENGTH)


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, user: CurrentUser) -> Response:
    return _account_page(request, user)


@router.post("/account/password", response_class=HTMLResponse)
def change_password_submit(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    current_password: Annotated[str, Form(max_length=1000)] = "",
    new_password: Annotated[str, Form(max_length=1000)] = "",
    confirm_password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """A new password; every session of the account ends (a copied cookie too) and this browser gets a new one."""
    verify_csrf(request, csrf_token)
    throttle, key = login_throttle(request), client_key(request)
    if throttle.retry_after(key):
        return _account_page(request, user, errors=["Too many wrong passwords from this address; try again "
                                                     "later."], status=429)
    if not verify_password(user.password_hash, current_password):
        throttle.failed(key)  # a stolen cookie must not become a way to guess the password
        return _account_page(request, user, errors=["Your current password is wrong."], status=400)
    if new_password != confirm_password:
        return _account_page(request, user, errors=["The two new passwords differ: type the same one twice."],
                             status=400)
    try:
        set_password(session, user_id=user.id, password=new_password)
    except UserError as exc:
        return _account_page(request, user, errors=[str(exc)], status=400)
    login(request, start_session(session, user_id=user.id))
    flash(request, "Password changed. Every other login of this account has been logged out.")
    return RedirectResponse("/account", status_code=303)
