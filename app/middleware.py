"""Security headers on every response (a strict Content-Security-Policy and the usual hardening headers), and
the one place that decides a request's client address (forwarding headers from named proxies only).

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
import json
import logging
import re

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

log = logging.getLogger(__name__)

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


def install_forwarded(app: FastAPI) -> None:
    """Believe X-Forwarded-For/-Proto only from the proxies in BLINDPAIR_FORWARDED_ALLOW_IPS (default: none).

    The client address feeds the login throttle, the join limit and the evaluator's address hash; a header
    any client can write must not choose it. With no proxy named, ``request.client`` stays the connection's
    peer and the headers are ignored. With proxies named, uvicorn's own proxy-headers middleware runs here,
    inside the app, with exactly that list: the client is the nearest address in X-Forwarded-For that is not
    one of the proxies, and only when the connection itself came from one of them. ``blindpair serve`` turns
    uvicorn's server-level handling off (it trusts loopback by default), so this is the only one.
    """
    from app.config import get_settings

    proxies = get_settings().forwarded_allow_list
    if proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)


# --- hostile input: body size, text that is not Unicode, NUL, and what a refusal may say --------------------

# Routes that take a file or a study's whole prompt list: max_upload_bytes plus this much for the form around it.
UPLOAD_ROUTES = frozenset({("POST", "/studies/new"), ("POST", "/api/v1/studies")})
FORM_MARGIN_BYTES = 1024 * 1024
# A JSON escape that may be a lone UTF-16 surrogate or a NUL: only then is the body parsed to look closer.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")


class InputRefused(HTTPException):
    """A request refused by its size or text; the JSON answer is ``{"detail": ...}`` with its status.

    An HTTPException, so that when the body grows past the limit while a route is parsing it, FastAPI passes
    it on as this answer instead of turning it into "There was an error parsing the body".
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)


def _json_text_problem(body: bytes) -> str | None:
    """Why the JSON ``body`` holds text no handler should see (a lone surrogate, a NUL), or None."""
    if not _SUSPECT_ESCAPE.search(body):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the app's own parser answers with its 4xx
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return ("The JSON text holds a NUL character (\\u0000), which no field accepts. Remove it and send "
                        "again.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return ("The JSON text holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair), "
                        "which is not a character. Send valid Unicode (UTF-8) and try again.")
    return None


class InputGuardMiddleware:
    """Refuses, before any route parses it: a body over the size limit (413), NUL in the URL or a form, and
    JSON whose strings are not Unicode (lone surrogates) or hold NUL (400). Pure ASGI, so streamed responses
    stay streamed; request bodies are counted as they arrive and never read past the limit.

    Why here and not per route: a 50 MB login body was parsed and echoed back whole, and a lone surrogate in
    any JSON field crashed the response that tried to quote it (a 500 and a reset connection). PostgreSQL
    refuses NUL in text columns, so a NUL anywhere would be a 500 there.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_bytes = upload_bytes

    def limit_for(self, method: str, path: str) -> int:
        return self.upload_bytes if (method, path.rstrip("/") or "/") in UPLOAD_ROUTES else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._checked(scope, receive)
        except InputRefused as refusal:
            await _refuse(send, refusal)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except InputRefused as refusal:  # the body grew past the limit while the app was reading it
            if started:
                raise
            await _refuse(send, refusal)

    async def _checked(self, scope: Scope, receive: Receive) -> Receive:
        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b""):
            raise InputRefused(400, "The address holds a NUL character (%00), which no page or field accepts.")
        headers = dict(scope.get("headers") or [])
        limit = self.limit_for(scope.get("method", "GET"), scope.get("path", ""))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise InputRefused(413, _too_large(limit))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        is_json = content_type == b"application/json" or content_type.endswith(b"+json")
        is_form = content_type == b"application/x-www-form-urlencoded"
        if not (is_json or is_form):
            return _counting(receive, limit)
        # Text bodies (at most ``limit``) are read whole here, checked, and handed on unchanged.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return _replay(bytes(body), receive, then=message)
            body += message.get("body", b"")
            if len(body) > limit:
                raise InputRefused(413, _too_large(limit))
            more = message.get("more_body", False)
        problem = _json_text_problem(bytes(body)) if is_json else (
            "The form holds a NUL character (%00), which no field accepts." if b"%00" in body else None)
        if problem:
            raise InputRefused(400, problem)
        return _replay(bytes(body), receive)


def _too_large(limit: int) -> str:
    return (f"The request body is larger than this address accepts ({limit:,} bytes). Send less; nothing was "
            "read or changed.")


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise InputRefused(413, _too_large(limit))
        return message

    return counted


def _replay(body: bytes, receive: Receive, *, then: Message | None = None) -> Receive:
    """The body already read, as one message; later calls wait on the client as before (for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if then is not None:
            return then
        return await receive()

    return replay


async def _refuse(send: Send, refusal: InputRefused) -> None:
    body = json.dumps({"detail": refusal.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status_code == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": refusal.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_input_guards(app: FastAPI) -> None:
    """Body limits and the text checks above (call once in ``create_app``, inside the security headers)."""
    from app.config import get_settings

    settings = get_settings()
    app.add_middleware(InputGuardMiddleware, max_body_bytes=settings.max_body_bytes,
                       upload_bytes=settings.max_upload_bytes + FORM_MARGIN_BYTES)


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

    from app.db import DatabaseBusy, busy_reason

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    async def _busy(request: Request, exc: Exception) -> Response:
        why = busy_reason(exc)
        if why is None:
            raise exc  # a real error: the server-error handler logs it and answers 500
        # The path with its parameters named, not their values: an invite or media URL carries a token. Segment by
        # segment (a parameter's value may also occur inside another segment); the matched route's own template
        # would do, but an included router's leaves out its prefix.
        named = {str(value): "{" + name + "}" for name, value in request.path_params.items()}
        route = "/".join(named.get(segment, segment) for segment in request.url.path.split("/"))
        log.warning("%s %s answered 503 (nothing stored; the client may retry): %s. Seen often, writes are "
                    "waiting on each other: see 'Monitor 503s' in docs/operations.md", request.method, route, why)
        return _busy_answer(request)

    for kind in (DBAPIError, PoolTimeout, DatabaseBusy):
        app.add_exception_handler(kind, _busy)
