"""HTML routes: researcher and admin login and logout."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.csrf import csrf_token, verify_csrf
from app.security import DbSession, client_key, current_user, login, login_throttle, login_token, logout
from app.services.users import authenticate, count_admins, end_session, start_session
from app.templating import templates

router = APIRouter(include_in_schema=False)

# Every admin-side form embeds {{ csrf_token(request) }}; registering it once keeps templates free of plumbing.
templates.env.globals.setdefault("csrf_token", csrf_token)

LOGIN_ERROR = "Email or password is wrong."


def safe_next(url: str | None) -> str:
    """Only a path on this site: an absolute or scheme-relative URL would make login an open redirect."""
    if not url:
        return "/"
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


def _login_page(request: Request, session, *, email="", next_url="/", error="", status: int = 200) -> Response:
    return templates.TemplateResponse(
        request,
        "auth/login.html",
        # With no admin yet nobody can log in: say how to make one (the same hint `blindpair serve` prints).
        {"email": email, "next": safe_next(next_url), "error": error, "no_admin": count_admins(session) == 0},
        status_code=status,
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, session: DbSession, next: str = "/") -> Response:
    if current_user(request, session) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, session, next_url=next)


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    verify_csrf(request, csrf_token)
    throttle, key = login_throttle(request), client_key(request)
    wait = throttle.retry_after(key)
    if wait:
        minutes = max(1, round(wait / 60))
        return _login_page(request, session, email=email, next_url=next, status=429,
                           error=f"Too many failed logins from this address. Try again in about {minutes} min.")
    user = authenticate(session, email=email, password=password)
    if user is None:
        throttle.failed(key)
        return _login_page(request, session, email=email, next_url=next, error=LOGIN_ERROR, status=400)
    throttle.succeeded(key)
    login(request, start_session(session, user_id=user.id))
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout")
def logout_submit(request: Request, session: DbSession, csrf_token: Annotated[str, Form()] = "") -> Response:
    verify_csrf(request, csrf_token)
    token = login_token(request)
    if token:
        end_session(session, token=token)  # server-side: a copy of the cookie no longer logs in either
    logout(request)
    return RedirectResponse("/login", status_code=303)
