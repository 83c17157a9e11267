"""HTML routes: the study page's plan panel (the pre-registered question) and its form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.csrf import verify_csrf
from app.deps import StudyForUser
from app.models import Study
from app.security import DbSession
from app.services import plans as svc
from app.web.admin import flash
from app.web.panels import study_panel

router = APIRouter(include_in_schema=False)


@study_panel
def plan_panel(session: Session, study: Study) -> tuple[str, dict]:
    history = svc.plan_history(session, study_id=study.id)
    current = history[-1].spec if history else svc.default_spec(study)
    return "admin/_plan.html", {"plan_history": history, "plan_form": current,
                                "plan_verified": [svc.verify(p, study.id) for p in history],
                                "plan_models": [m.name for m in study.models],
                                "plan_criteria": [(c.key, c.label) for c in study.criteria]}


@router.post("/studies/{study_id}/plan")
def plan_submit(request: Request, study: StudyForUser, session: DbSession,
                kind: Annotated[str, Form()] = "non_inferiority", model: Annotated[str, Form()] = "",
                reference: Annotated[str, Form()] = "", margin: Annotated[str, Form()] = "0.45",
                assumed: Annotated[str, Form()] = "", alpha: Annotated[str, Form()] = "0.05",
                power: Annotated[str, Form()] = "0.8", budget: Annotated[str, Form()] = "",
                ties: Annotated[str, Form()] = "drop", criteria: Annotated[list[str] | None, Form()] = None,
                close_when_done: Annotated[bool, Form()] = False, reason: Annotated[str, Form()] = "",
                csrf_token: Annotated[str, Form()] = "") -> Response:
    verify_csrf(request, csrf_token)
    raw = {"kind": kind, "model": model, "reference": reference, "margin": margin, "assumed": assumed,
           "alpha": alpha, "power": power, "budget": budget, "ties": ties, "criteria": criteria or [],
           "close_when_done": close_when_done}
    try:
        saved = svc.save_plan(session, study_id=study.id, raw=raw, reason=reason)
    except svc.PlanError as exc:
        flash(request, f"Plan not saved: {exc}", "error")
    else:
        flash(request, f"Plan version {saved.version} frozen (sha256 {(saved.sha256 or '')[:12]}…)."
              if saved.frozen else "Draft plan saved; it is frozen when the study opens.")
    return RedirectResponse(f"/studies/{study.id}#plan", status_code=303)
