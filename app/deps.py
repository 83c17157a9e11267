"""Request dependencies shared by the HTML pages and the JSON API.

Both routers import from here and never from each other (the import-linter contract in pyproject.toml):
the study path parameter and who may see the study behind it (``StudyForUser``), and the evaluator's signed
credential (the ``bp_eval`` cookie on pages, ``X-Evaluator-Token`` on the API).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import Depends, HTTPException, Path
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Evaluator, Study, User
from app.security import CurrentUser, DbSession
from app.services import studies as study_service
from app.services.assignments import EvaluatorState, evaluator_state
from app.services.attention import qc_settings

# Ids are 32-bit integer columns: a larger number in a URL must be a 422, not an overflow inside the driver.
MAX_ID = 2_147_483_647
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="The study's numeric id.")]

EVALUATOR_TOKEN_MAX_AGE = 30 * 24 * 3600  # long enough to come back to an unfinished session days later


def study_for_user_or_404(session: Session, study_id: int, user: User) -> Study:
    """The study if this user may see it (its owner, a collaborator, an admin), else a 404.

    The same 404 whether the study does not exist or belongs to someone else, so that ids reveal nothing.
    """
    study = study_service.get_study_for_user(session, study_id, user_id=user.id, is_admin=user.role == "admin")
    if study is None:
        raise HTTPException(status_code=404, detail=f"There is no study with id {study_id}.")
    return study


def _study_for_user(study_id: StudyId, session: DbSession, user: CurrentUser) -> Study:
    return study_for_user_or_404(session, study_id, user)


# The one authorisation check of every page and API route under /studies/{study_id}: declare the parameter
# ``study: StudyForUser`` and the route only ever runs for someone allowed to see that study.
StudyForUser = Annotated[Study, Depends(_study_for_user)]


def join_rate_limit(study: Study) -> int:
    """New sessions per minute one address may start in this study (0: no limit), for ``check_rate("join", ...)``.

    The study's QC setting; unset (``None``), the deployment's BLINDPAIR_JOIN_RATE_LIMIT_PER_MINUTE.
    """
    limit = qc_settings(study).join_rate_limit_per_minute
    return get_settings().join_rate_limit_per_minute if limit is None else limit


@lru_cache(maxsize=8)
def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="bp-evaluator")


def evaluator_token(evaluator: Evaluator) -> str:
    """The signed credential of an evaluator session (cookie value, or X-Evaluator-Token for the API)."""
    return _serializer(get_settings().secret_key).dumps(evaluator.public_id)


@lru_cache(maxsize=16_384)
def _verified(secret_key: str, token: str) -> tuple[object, float]:
    """What a genuine token signs and when it was signed; raises ``BadData`` for any other (never cached).

    Kept because every rating request checks its credential and the check (key derivation, HMAC, JSON) was a
    twentieth of a vote's CPU (py-spy, in-process); a token's content and signing time never change, so only
    its age is checked on each request (``public_id_from_token``). A forged token is never kept: it raises."""
    value, signed_at = _serializer(secret_key).loads(token, return_timestamp=True)
    return value, signed_at.timestamp()


def public_id_from_token(token: str | None) -> str | None:
    """The evaluator's public id inside a signed credential; ``None`` if missing, forged or expired."""
    if not token:
        return None
    try:
        public_id, signed_at = _verified(get_settings().secret_key, token)
    except BadData:
        return None
    # itsdangerous's own rule for max_age: older than it, or signed in the future, is refused.
    if not 0 <= int(time.time()) - int(signed_at) <= EVALUATOR_TOKEN_MAX_AGE:
        return None
    return public_id if isinstance(public_id, str) else None


def evaluator_from_token(session: Session, token: str | None) -> Evaluator | None:
    public_id = public_id_from_token(token)
    return session.scalar(select(Evaluator).where(Evaluator.public_id == public_id)) if public_id else None


def state_from_token(session: Session, token: str | None) -> EvaluatorState | None:
    """The evaluator behind a credential, for the rating routes: locked for this request (see lock_evaluator)."""
    public_id = public_id_from_token(token)
    return evaluator_state(session, public_id=public_id, lock=True) if public_id else None


def completion_redirect(redirect_url: str, code: str) -> str:
    """The study's redirect URL with the completion code: ``{code}`` is replaced, else ``cc=`` is appended."""
    if not redirect_url:
        return ""
    if "{code}" in redirect_url:
        return redirect_url.replace("{code}", code)
    parts = urlsplit(redirect_url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("cc", code)])
    return urlunsplit(parts._replace(query=query))
