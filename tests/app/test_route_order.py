"""The routers' order is free to serve speed: no URL could be claimed by routes of two modules.

FastAPI tries routes in order, so the modules a study's crowd calls are included first (app/api/__init__.py,
app/web/__init__.py). That is only safe while no route of one module matches a URL meant for another's,
whatever the method (the first route to match a path also decides a 405's Allow header); then reordering
modules changes how long matching takes, never which route answers.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.routing import APIRoute

import app.api
import app.web

# (prefix the including router adds, the router that includes the modules)
INCLUDERS = (("/api/v1", app.api.router), ("", app.web.router))


def _routes(includers=INCLUDERS) -> list[tuple[str, str]]:
    """(module, full path template) of every route of every module router the two routers include."""
    out = []
    for prefix, includer in includers:
        for included in includer.routes:
            module_router = getattr(included, "original_router", included)
            assert isinstance(module_router, APIRouter), f"{included!r} is not an included router"
            for route in module_router.routes:
                assert isinstance(route, APIRoute), f"{route!r} is not an APIRoute"
                out.append((route.endpoint.__module__, prefix + route.path))
    return out


_PARAM = re.compile(r"^\{[^}:]+(?::(\w+))?\}$")


def _segment_overlaps(a: str, b: str) -> bool:
    """Whether some URL segment matches both template segments (a literal, or a parameter with its converter)."""
    pa, pb = _PARAM.match(a), _PARAM.match(b)
    if pa and pb:
        return True  # two parameters: a digit fits any converter
    if pa or pb:
        converter, literal = (pa or pb).group(1), (b if pa else a)
        return {"int": literal.isdigit(), "float": bool(re.fullmatch(r"\d+(\.\d+)?", literal))}.get(converter, True)
    return a == b


def overlap(path_a: str, path_b: str) -> bool:
    """Whether some URL matches both path templates (segment by segment; a ``:path`` parameter takes the rest)."""
    a, b = path_a.strip("/").split("/"), path_b.strip("/").split("/")
    for i in range(max(len(a), len(b))):
        seg_a, seg_b = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        for seg in (seg_a, seg_b):
            if seg is not None and (m := _PARAM.match(seg)) and m.group(1) == "path":
                return all(_segment_overlaps(x, y) for x, y in zip(a[:i], b[:i], strict=True))
        if seg_a is None or seg_b is None or not _segment_overlaps(seg_a, seg_b):
            return False
    return True


def clashes(routes: list[tuple[str, str]]) -> list[str]:
    return [f"{module} {path} and {other} {other_path}"
            for i, (module, path) in enumerate(routes) for other, other_path in routes[i + 1:]
            if module != other and overlap(path, other_path)]


def test_no_url_matches_routes_of_two_modules():
    routes = _routes()
    assert {"app.api.evaluate", "app.web.evaluator", "app.web.media"} <= {m for m, _p in routes}
    found = clashes(routes)
    assert not found, "\n".join(found)


def test_the_overlap_rule():
    assert overlap("/e/pair", "/e/{anything}")
    assert overlap("/studies/{a}/x", "/studies/new/{b}")  # neither template's sample URL matches the other
    assert overlap("/m/{token}/poster", "/m/{rest:path}")
    assert not overlap("/studies/{id:int}", "/studies/new")
    assert not overlap("/e/pair", "/e/pair/extra")
    assert not overlap("/e/pair", "/e/vote")


def test_the_check_sees_a_module_added_with_a_clash():
    """A module router included later, with a catch-all that would claim the rating pages, is found."""
    extra = APIRouter()
    extra.add_api_route("/e/{anything}", lambda anything: None, methods=["POST"])
    web = APIRouter()
    for included in app.web.router.routes:
        web.include_router(included.original_router)
    web.include_router(extra)
    found = clashes(_routes(((INCLUDERS[0]), ("", web))))
    assert any("app.web.evaluator /e/pair and" in c and "/e/{anything}" in c for c in found)
