"""CSRF protection for HTML forms: a per-browser token kept in the signed session cookie."""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request

SESSION_KEY = "csrf"


def csrf_token(request: Request) -> str:
    """The token to embed in a form as ``<input type=hidden name=csrf_token>``; created on first use."""
    token = request.session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return token


def verify_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a form post whose token does not match this browser's session."""
    expected = request.session.get(SESSION_KEY)
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise HTTPException(
            status_code=403,
            detail="This form has expired or was not sent from this site. Reload the page and try again.",
        )
