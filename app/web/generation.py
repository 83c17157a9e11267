"""HTML routes: the study page's generation panel (progress, queue form, retry, cost table)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select

from app.csrf import verify_csrf
from app.deps import MAX_ID, StudyForUser
from app.models import Prompt, Study
from app.security import DbSession
from app.services import generation as svc
from app.web.admin import flash
from app.web.panels import study_panel

router = APIRouter(include_in_schema=False)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


@study_panel
def generation_panel(session, study: Study) -> tuple[str, dict]:
    progress = svc.generation_progress(session, study_id=study.id)
    themes = session.execute(
        select(Prompt.theme, func.count()).where(Prompt.study_id == study.id).group_by(Prompt.theme)
        .order_by(Prompt.theme)
    ).all()
    return "admin/_generation.html", {
        "gen": progress, "costs": svc.cost_summary(session, study_id=study.id), "gen_themes": themes,
        "fmt_duration": _duration, "fmt_bytes": _bytes,
        "generatable": any(m.preset for m in study.models),
        **svc.memory_check(session, study),
    }


def _back(study_id: int) -> RedirectResponse:
    return RedirectResponse(f"/studies/{study_id}#generation", status_code=303)


@router.post("/studies/{study_id}/generation/queue")
def queue_submit(request: Request, study: StudyForUser, session: DbSession,
                 theme: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = "") -> Response:
    verify_csrf(request, csrf_token)
    try:
        result = svc.queue_batch(session, study_id=study.id, theme=theme or None)
    except svc.BrokerUnavailable as exc:
        flash(request, f"Not queued: {exc}", "error")
    except svc.GenerationError as exc:
        flash(request, "Not queued, nothing was changed: " + " ".join(exc.errors), "error")
    else:
        flash(request, f"Batch {result.batch_id}: {result.describe()}")
    return _back(study.id)


@router.post("/studies/{study_id}/generation/retry")
def retry_submit(request: Request, study: StudyForUser, session: DbSession,
                 clip_id: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
                 csrf_token: Annotated[str, Form()] = "") -> Response:
    verify_csrf(request, csrf_token)
    try:
        # "is not None": a clip_id of 0 must not mean "every failed clip".
        n = svc.retry_failed(session, study_id=study.id, clip_ids=[clip_id] if clip_id is not None else None)
    except svc.BrokerUnavailable as exc:
        flash(request, f"Not retried: {exc}", "error")
    except svc.GenerationError as exc:
        flash(request, "Not retried, nothing was changed: " + " ".join(exc.errors), "error")
    else:
        flash(request, f"{n} failed clip(s) queued again." if n else "There were no failed clips to retry.")
    return _back(study.id)
