"""The Jinja2 templates of every HTML router, on the one environment in app.jinja_env."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from starlette.datastructures import URL

from app.jinja_env import STATIC_DIR as STATIC_DIR
from app.jinja_env import TEMPLATES_DIR as TEMPLATES_DIR
from app.jinja_env import env


@lru_cache(maxsize=256)
def _static_digest(path: str, mtime_ns: int) -> str:
    return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:12]


def static_version(path: str) -> str:
    """A short digest of a static file's content (recomputed when the file changes), for its URL's ``v``."""
    try:
        return _static_digest(path, (STATIC_DIR / path).stat().st_mtime_ns)
    except OSError:
        return "missing"  # the static route answers 404 for it; the page still renders


@pass_context
def url_for(context: dict[str, Any], name: str, /, **path_params: Any) -> URL:
    """Starlette's ``url_for``, plus ``?v=<content digest>`` on static files: a browser may then keep them for a
    year (app.main.CachedStaticFiles) and still fetches a changed file at once, since its URL changed."""
    url = context["request"].url_for(name, **path_params)
    if name == "static":
        return url.include_query_params(v=static_version(str(path_params["path"])))
    return url


env.globals["url_for"] = url_for  # Jinja2Templates only sets its own when none is there
templates = Jinja2Templates(env=env)
