"""HTML routes: the study page's metrics panel (progress counts, compute button) for the automatic clip metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.csrf import verify_csrf
from app.deps import StudyForUser
from app.models import Study
from app.security import DbSession
from app.services import metrics as svc
from app.web.admin import flash
from app.web.panels import study_panel

router = APIRouter(include_in_schema=False)


@study_panel
def metrics_panel(session: Session, study: Study) -> tuple[str, dict]:
    return "admin/_metrics.html", {"metrics_progress": svc.metrics_progress(session, study_id=study.id)}


@router.post("/studies/{study_id}/metrics/compute")
def compute_submit(request: Request, study: StudyForUser, session: DbSession,
                   force: Annotated[bool, Form()] = False, csrf_token: Annotated[str, Form()] = "") -> Response:
    """Queue the clips that lack a current metric (every clip with ``force``) for the workers."""
    verify_csrf(request, csrf_token)
    try:
        n = svc.queue_study(session, study_id=study.id, force=force)
    except svc.MetricsError as exc:
        flash(request, f"Metrics not queued: {exc}", "error")
    else:
        flash(request, f"{n} clip(s) queued for metrics; a worker computes them (`blindpair worker`)." if n
              else "Every clip already has its metrics.")
    return RedirectResponse(f"/studies/{study.id}#metrics", status_code=303)
