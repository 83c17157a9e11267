"""Logins (the signed session cookie) and the role checks every researcher/admin route depends on.

The cookie is signed, but a signature alone cannot be taken back: it carries only the random token of a
server-side session (``UserSession``, made by ``app.services.users.start_session``). Every request looks the
token up, so logout, a new password or the end of the login's lifetime ends the session for every copy of
the cookie.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import request_session
from app.models import User, UserSession, token_digest, utcnow

# Re-exported: older callers (and tests) take them from here; new code imports app.passwords.
from app.passwords import ROLES as ROLES
from app.passwords import hash_password as hash_password
from app.passwords import verify_password as verify_password

SESSION_TOKEN_KEY = "login"


def _request_db(request: Request) -> Iterator[Session]:
    """The request's session: a snapshot that never waits for SQLite's write lock for GET/HEAD/OPTIONS, a
    writing transaction otherwise (app/db.py, ``request_session``)."""
    yield from request_session(request.method)


# scope="function": the session commits before the response leaves, so "vote recorded" is only ever said of
# a committed vote (the default "request" scope commits after the response is sent). max_concurrency bounds
# the sessions in flight below the thread pool and queues the rest without holding a thread: on SQLite a
# request waiting for the write lock must never take the thread the lock holder needs to commit.
# https://fastapi.tiangolo.com/tutorial/dependencies/dependencies-with-yield/#early-exit-and-scope
DB_SESSIONS_IN_FLIGHT = 32
DbSession = Annotated[Session, Depends(_request_db, scope="function", max_concurrency=DB_SESSIONS_IN_FLIGHT)]


class LoginRequired(Exception):
    """Raised for HTML pages without a login: the app turns it into a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def login(request: Request, token: str) -> None:
    """Put a new server-side session's token (``users.start_session``) into the cookie."""
    request.session.clear()  # a fresh session on login: no fixation of a pre-login session
    request.session[SESSION_TOKEN_KEY] = token


def login_token(request: Request) -> str | None:
    """The login token the cookie carries, for ``users.end_session`` on logout."""
    token = request.session.get(SESSION_TOKEN_KEY)
    return token if isinstance(token, str) and token else None


def logout(request: Request) -> None:
    """Empty the cookie; the route ends the server-side session first (``users.end_session``)."""
    request.session.clear()


def current_user(request: Request, session: Session) -> User | None:
    """The user of a live server-side session, else ``None``; a dead session's cookie is emptied."""
    token = login_token(request)
    if token is None:
        return None
    user = session.scalars(
        select(User).join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.token_hash == token_digest(token), UserSession.expires_at > utcnow())
    ).first()
    if user is None:
        request.session.pop(SESSION_TOKEN_KEY, None)
    return user


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def require_user(request: Request, session: DbSession) -> User:
    """A logged-in researcher or admin; HTML pages redirect to the login page, the API answers 401."""
    user = current_user(request, session)
    if user is None:
        if _wants_html(request):
            raise LoginRequired(str(request.url.path))
        raise HTTPException(
            status_code=401, detail="Log in first: POST /api/v1/login with your email and password (JSON)."
        )
    return user


def require_admin(user: Annotated[User, Depends(require_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="This needs an admin account; ask an admin for access.")
    return user


CurrentUser = Annotated[User, Depends(require_user)]
AdminUser = Annotated[User, Depends(require_admin)]


class LoginThrottle:
    """Failed logins per client address in a sliding window, kept in memory (one per app, per process).

    Enough to stop password guessing against one server process; several processes each keep their own
    count, so a lab running many workers behind a proxy should rate-limit /login at the proxy as well.
    """

    def __init__(self, max_failures: int = 10, window_s: float = 900, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        horizon = self.clock() - self.window_s
        while times and times[0] < horizon:
            times.popleft()
        return times

    def retry_after(self, key: str) -> int:
        """Seconds until this client may try again; 0 if it may try now."""
        times = self._recent(key)
        if len(times) < self.max_failures:
            return 0
        return max(1, int(times[0] + self.window_s - self.clock()) + 1)

    def failed(self, key: str) -> None:
        self._recent(key).append(self.clock())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


def login_throttle(request: Request) -> LoginThrottle:
    """The app's throttle (created on first use, so every app instance, e.g. in tests, starts clean)."""
    throttle = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = request.app.state.login_throttle = LoginThrottle()
    return throttle


def client_key(request: Request) -> str:
    """The login throttle's key: the client address as ``app.middleware.install_forwarded`` settled it."""
    return request.client.host if request.client else "unknown"
