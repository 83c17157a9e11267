"""JSON API v1: a study's results (the same cached ``compute_results`` dict the dashboard draws)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import StudyForUser
from app.security import DbSession
from app.services.metric_results import metric_results
from app.services.plans import plan_json, sequential_view
from app.services.results_cache import get_results
from app.services.results_data import criterion_labels, vote_fingerprint
from app.services.trust import cluster_sensitivity

router = APIRouter(tags=["results"])


@router.get("/studies/{study_id}/results")
def study_results(study: StudyForUser, session: DbSession, include_flagged: bool = False) -> dict:
    """All statistics of the study (keys documented in ``app.stats.results``), computed once per vote change."""
    cached = get_results(session, study_id=study.id, include_flagged=include_flagged)
    return {"study": {"id": study.id, "slug": study.slug, "name": study.name, "status": study.status},
            "computed_at": cached.computed_at.isoformat(), "fingerprint": cached.fingerprint.token(),
            "results": cached.results,
            # Does one address decide a verdict? The dashboard's "Does one address decide a result?" table.
            "sensitivity": cluster_sensitivity(session, study_id=study.id, cached=cached,
                                               labels=criterion_labels(session, study_id=study.id)),
            # Automatic clip metrics beside the votes, as in results.json (app/services/metric_results.py).
            "metrics": metric_results(session, study_id=study.id, cached=cached),
            # The pre-registered plan and its anytime-valid decisions, as in results.json (app/services/plans.py).
            "plan": plan_json(sequential_view(session, study=study, cached=cached))}


@router.get("/studies/{study_id}/results/fingerprint")
def results_fingerprint(study: StudyForUser, session: DbSession) -> dict:
    """Cheap change detector for the live dashboard: changes whenever a vote or a QC flag does."""
    fp = vote_fingerprint(session, study_id=study.id)
    return {"fingerprint": fp.token(), "votes": fp.votes}
