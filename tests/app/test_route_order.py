"""The routers' order is free to serve speed: no request could be claimed by routes of two modules.

FastAPI tries routes in order, so the modules a study's crowd calls are included first (app/api/__init__.py,
app/web/__init__.py). That is only safe while no route of one module matches a request meant for another's;
then reordering modules changes how long matching takes, never which route answers.
"""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.routing import compile_path

from app.api import evaluate, generation, results, studies
from app.web import admin, auth, evaluator, media, metrics, plans
from app.web import generation as web_generation
from app.web import results as web_results

MODULES = {
    **{f"api.{m.__name__.rsplit('.', 1)[-1]}": ("/api/v1", m) for m in (evaluate, studies, results, generation)},
    **{f"web.{m.__name__.rsplit('.', 1)[-1]}": ("", m)
       for m in (evaluator, media, auth, admin, web_results, plans, web_generation, metrics)},
}


def _routes() -> list[tuple[str, str, set[str]]]:
    """(module, full path, methods) of every route the routers include."""
    out = []
    for name, (prefix, module) in MODULES.items():
        for route in module.router.routes:
            assert isinstance(route, APIRoute), f"{name}: {route!r} is not an APIRoute"
            out.append((name, prefix + route.path, set(route.methods)))
    return out


def _a_request_for(path: str) -> str:
    """A concrete URL the path template matches (each parameter filled in)."""
    return re.sub(r"\{[^}]+\}", "1", path)


def _clashes() -> list[str]:
    routes = _routes()
    assert {n for n, _p, _m in routes} == set(MODULES), "a module has no routes: is the list above current?"
    clashes = []
    for name, path, methods in routes:
        url = _a_request_for(path)
        for other, other_path, other_methods in routes:
            regex, _format, _convertors = compile_path(other_path)
            if other != name and methods & other_methods and regex.match(url):
                clashes.append(f"{sorted(methods & other_methods)} {url}: {name} ({path}) and {other} ({other_path})")
    return clashes


def test_no_request_matches_routes_of_two_modules():
    clashes = _clashes()
    assert not clashes, "\n".join(clashes)


def test_the_check_sees_a_clash(monkeypatch):
    """The check itself: a catch-all added to one module claims another module's pair page."""
    routes = [*media.router.routes, APIRoute("/e/{anything}", lambda anything: None, methods=["GET"])]
    monkeypatch.setattr(media.router, "routes", routes)
    assert any("/e/pair: web.evaluator" in c and "web.media (/e/{anything})" in c for c in _clashes())
