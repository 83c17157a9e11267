"""The FastAPI application factory: middleware, static files and the routers."""

from __future__ import annotations

import os
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import Response
from starlette.types import Scope

from app.concurrency import install_thread_headroom
from app.config import get_settings
from app.gc_pauses import install_gc_freeze
from app.middleware import install_error_handlers, install_forwarded, install_input_guards, install_security
from app.security import LoginRequired
from app.templating import STATIC_DIR

STATIC_IMMUTABLE = "public, max-age=31536000, immutable"
FAVICON_CACHE = "public, max-age=86400"


class CachedStaticFiles(StaticFiles):
    """Static files a browser keeps: a URL with ``?v=<content digest>`` (every page links them so, see
    app.templating.url_for) never changes content, so it is cached for a year without revalidation; a bare URL
    is revalidated every time (``no-cache`` with the ETag and Last-Modified Starlette already sends)."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        versioned = any(part.startswith(b"v=") for part in scope.get("query_string", b"").split(b"&"))
        response.headers["Cache-Control"] = STATIC_IMMUTABLE if versioned else "no-cache"
        return response


def create_app() -> FastAPI:
    app = create_bare_app()
    from app.api import router as api_router
    from app.web import router as web_router

    app.include_router(api_router)
    app.include_router(web_router)
    install_gc_freeze(app)  # last: once the routes (and everything they import) exist
    return app


def create_bare_app() -> FastAPI:
    """The application without its routes: middleware, static files, error handlers.

    Separate so the vote-path benchmark can measure this HTTP layer with routes that touch no database
    (bench/http_floor_app.py) on exactly the stack the real routes run on.
    """
    settings = get_settings()
    app = FastAPI(
        title="BlindPair",
        version="0.1.0",
        description="Blind pairwise evaluation of text-to-video models.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,  # unused, and its inline script would need the CSP loosened
    )
    # Researchers' login lives in this signed cookie, as the token of a server-side session (app/security.py);
    # evaluators get their own (see app/web/evaluator.py). The secret is never a default in the source: it is
    # BLINDPAIR_SECRET_KEY or, outside production, generated into the data folder (app/config.py).
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="bp_session",
        max_age=settings.login_max_age_hours * 3600,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    # Body size limits and text checks before anything parses a request (inside the security headers).
    install_input_guards(app)
    install_error_handlers(app)
    # Added last so it wraps everything: every response, errors included, carries the CSP and friends.
    install_security(app)
    install_thread_headroom(app)
    # Outermost: the client address is settled before anything reads it.
    install_forwarded(app)
    app.mount("/static", CachedStaticFiles(directory=str(STATIC_DIR)), name="static")

    # Browsers ask for /favicon.ico on every site whatever the page links; it was a 404 on every page.
    @app.get("/favicon.ico", include_in_schema=False)
    def _favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": FAVICON_CACHE})

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)

    return app
