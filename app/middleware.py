"""Security headers on every response: a strict Content-Security-Policy and the usual hardening headers.

Why strict: the evaluator's page must run only our own files, so neither injected markup (a prompt with
HTML in it) nor a third-party script can read the page or phone home (blinding, issue 5). Templates
therefore have no inline ``<script>``, ``<style>``, ``style=`` or ``on...=`` attributes; JS and CSS live in
``static/``. A route that needs something else sets its own header, which is left alone.

The one exception is FastAPI's Swagger UI at the docs URL: it loads swagger-ui from cdn.jsdelivr.net and
starts it with an inline script. For that page only, the CDN is allowed and the inline script is allowed
by its sha256 hash (computed from the page itself), not by 'unsafe-inline'. It shows no user data.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join([
    "default-src 'self'",
    "img-src 'self' data:",
    "script-src 'self'",
    "style-src 'self'",
    "object-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
])
SWAGGER_CDN = "https://cdn.jsdelivr.net"
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()" for feature in ("accelerometer", "camera", "geolocation", "gyroscope", "magnetometer",
                                    "microphone", "payment", "usb", "display-capture")
)
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # invite and assignment tokens never leak through the Referer header
    "X-Frame-Options": "DENY",
    "Permissions-Policy": PERMISSIONS_POLICY,
    "Cross-Origin-Opener-Policy": "same-origin",
    # Media and pages may only be loaded by this site: no hot-linking of clips from elsewhere.
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def docs_csp(html: bytes) -> str:
    """The docs page's CSP: the CDN plus the hash of each inline script actually on the page."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return "; ".join([
        "default-src 'self'",
        "img-src 'self' data: https://fastapi.tiangolo.com",
        f"script-src 'self' {SWAGGER_CDN} {hashes}".rstrip(),
        f"style-src 'self' {SWAGGER_CDN}",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ])


class SecurityHeadersMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: that would buffer streamed media responses)."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False, docs_path: str | None = None) -> None:
        self.app = app
        self.hsts = hsts
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.docs_path and scope["path"] == self.docs_path:
            await self._docs(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._apply(MutableHeaders(scope=message), CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _apply(self, headers: MutableHeaders, csp: str) -> None:
        headers.setdefault("Content-Security-Policy", csp)
        for name, value in BASE_HEADERS.items():
            headers.setdefault(name, value)
        if self.hsts:
            headers.setdefault("Strict-Transport-Security", HSTS)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Hold back the small docs page until its body is complete, to hash its inline script.
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body"):
                    return
                assert start is not None
                self._apply(MutableHeaders(scope=start), docs_csp(bytes(body)))
                await send(start)
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            await send(message)

        await self.app(scope, receive, capture)


def install_security(app: FastAPI) -> None:
    """Add the security headers to every response of ``app`` (call once in ``create_app``)."""
    from app.config import get_settings

    settings = get_settings()
    # HSTS only when the site is served over HTTPS (secure cookies imply it); on plain-HTTP localhost it
    # would make browsers refuse the dev server for a year.
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.secure_cookies, docs_path=app.docs_url)


# --- answers for errors: what was wrong, never the input itself --------------------------------------------

RETRY_AFTER_SECONDS = 5
_MAX_ECHO = 120  # characters of a field name or message a 422 may quote


def _safe_text(value: object) -> str:
    """Text fit to quote in an answer: lone surrogates escaped (they cannot be encoded), cut to _MAX_ECHO."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO - 3] + "..."


def validation_errors(errors: object) -> list[dict[str, object]]:
    """Pydantic's errors without ``input`` (the request echoed back: a 50 MB login body came back whole),
    ``ctx`` or ``url``; locations and messages escaped and shortened, since a location can be a client's key."""
    out: list[dict[str, object]] = []
    for error in errors if isinstance(errors, list | tuple) else []:
        if not isinstance(error, dict):
            continue
        loc = [part if isinstance(part, int) else _safe_text(part) for part in error.get("loc", ())]
        out.append({"type": _safe_text(error.get("type", "")), "loc": loc, "msg": _safe_text(error.get("msg", ""))})
    return out


def _busy_answer(request: Request) -> Response:
    message = ("The database is busy with another change and this one could not wait longer; nothing was changed. "
               f"Try again in {RETRY_AFTER_SECONDS} seconds.")
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=503, headers=headers)
    return PlainTextResponse(message, status_code=503, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """422s that never echo the input, and 503 + Retry-After (not 500) when a write cannot get the lock."""
    from fastapi.exceptions import RequestValidationError
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.db import DatabaseBusy, is_busy_error

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    async def _busy(request: Request, exc: Exception) -> Response:
        if not is_busy_error(exc):
            raise exc  # a real error: the server-error handler logs it and answers 500
        return _busy_answer(request)

    for kind in (DBAPIError, PoolTimeout, DatabaseBusy):
        app.add_exception_handler(kind, _busy)
