"""HTML routes: the results dashboard (admins and researchers) and the downloads (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from app.deps import StudyForUser
from app.models import Study
from app.security import AdminUser, CurrentUser, DbSession
from app.services import exports
from app.services.results_cache import get_results
from app.services.results_view import fmt_time, study_view
from app.templating import templates
from app.web.panels import study_panel

router = APIRouter()


@study_panel
def results_panel(session, study: Study) -> tuple[str, dict]:
    """The study page's results teaser: the headline (from the shared cache) and a link to the dashboard."""
    cached = get_results(session, study_id=study.id)
    headline = cached.results.get("headline") if cached.results.get("n_votes") else None
    return "results/_panel.html", {"headline": headline, "study_id": study.id}


def _flag(value: str | None) -> bool:
    return value not in (None, "", "0", "false", "no")


@router.get("/studies/{study_id}/results", response_class=HTMLResponse)
def dashboard(request: Request, study: StudyForUser, session: DbSession, user: CurrentUser,
              include_flagged: str | None = None):
    view, cached = study_view(session, study=study, include_flagged=_flag(include_flagged))
    return templates.TemplateResponse(request, "results/dashboard.html", {
        "v": view, "user": user, "nav": "studies", "is_admin": user.role == "admin",
        "live": study.status == "open", "fingerprint": cached.fingerprint.token(),
        "fingerprint_url": f"/api/v1/studies/{study.id}/results/fingerprint",
        "computed_at": fmt_time(cached.computed_at), "compute_seconds": cached.compute_seconds,
    })


def _send(download: exports.Download) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{download.filename}"'}
    if isinstance(download.body, bytes):
        return Response(download.body, media_type=download.media_type, headers=headers)
    return StreamingResponse(download.body, media_type=download.media_type, headers=headers)


def _export(fn, **kw) -> Response:
    try:
        return _send(fn(**kw))
    except exports.ExportError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.get("/studies/{study_id}/export/votes.{fmt}")
def export_votes(_admin: AdminUser, study: StudyForUser, fmt: str, session: DbSession):
    return _export(exports.raw_votes, session=session, study=study, fmt=fmt)


@router.get("/studies/{study_id}/export/answers.csv")
def export_answers(_admin: AdminUser, study: StudyForUser, session: DbSession):
    """Optional answers: "both are bad" criteria, reason tags and comments per vote (app/services/answers.py)."""
    return _export(exports.answers_csv, session=session, study=study)


@router.get("/studies/{study_id}/export/clips.{fmt}")
def export_clips(_admin: AdminUser, study: StudyForUser, fmt: str, session: DbSession):
    return _export(exports.clips_manifest, session=session, study=study, fmt=fmt)


@router.get("/studies/{study_id}/export/metrics.{fmt}")
def export_metrics(_admin: AdminUser, study: StudyForUser, fmt: str, session: DbSession):
    return _export(exports.clip_metrics, session=session, study=study, fmt=fmt)


@router.get("/studies/{study_id}/export/results.json")
def export_results(_admin: AdminUser, study: StudyForUser, session: DbSession, include_flagged: str | None = None):
    return _export(exports.results_json, session=session, study=study,
                   include_flagged=_flag(include_flagged))


@router.get("/studies/{study_id}/export/clean_battle/{criterion}.json")
def export_clean_battle(_admin: AdminUser, study: StudyForUser, criterion: str, session: DbSession,
                        include_flagged: str | None = None):
    return _export(exports.clean_battle, session=session, study=study, criterion=criterion,
                   include_flagged=_flag(include_flagged))


@router.get("/studies/{study_id}/export/report.html")
def export_report(_admin: AdminUser, study: StudyForUser, session: DbSession, include_flagged: str | None = None):
    return _export(exports.html_report, session=session, study=study,
                   include_flagged=_flag(include_flagged))
