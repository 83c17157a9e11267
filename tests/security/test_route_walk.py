"""Walk every route of the real app as six people and check each answer (issues 5 and 12, security).

Routes are read from ``create_app()`` itself, so a route added later is walked automatically and must
fall into one of the rules below: public (evaluator path, login, static, API docs), admin-only (user
management, exports) or researcher (everything else). Each route is called with no login, with an
evaluator's cookie, as the researcher who owns the study, as a collaborator it is shared with, as another
researcher (an outsider) and as an admin:

- nobody ever gets a 5xx;
- without a researcher/admin login, a protected HTML page redirects to /login and the API answers 401/403;
- an evaluator's cookie opens nothing of the researchers' side;
- the owner gets 403 on admin-only routes and through on the rest; an admin gets through everywhere;
- a collaborator gets through like the owner, except that only the owner and admins change the sharing;
- the outsider gets 404 on every route of the study, page and API alike (403 where every researcher does),
  exactly as for a study that does not exist, and never sees it listed.

Also: every HTML page works under the strict CSP (no inline script, style or event handler), and an
evaluator reaches only their own pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import session_scope
from app.main import create_app
from app.models import Assignment, Clip, StudyCollaborator, Vote
from tests.factories import make_pairs, make_study, make_user

PASSWORD = "route-walk-password-123"
PUBLIC = (
    re.compile(r"^/login$"), re.compile(r"^/logout$"), re.compile(r"^/join/"), re.compile(r"^/e/"),
    re.compile(r"^/m/"), re.compile(r"^/static(/|$)"), re.compile(r"^/favicon\.ico$"),
    re.compile(r"^/api/v1/(openapi\.json|docs)$"),
    re.compile(r"^/docs/oauth2-redirect$"), re.compile(r"^/api/v1/evaluate/"),
    re.compile(r"^/api/v1/(login|logout)$"),
)
ADMIN_ONLY = (re.compile(r"/export/"), re.compile(r"^/admin(/|$)"), re.compile(r"^/api/v1/users$"))
STUDY_ROUTE = re.compile(r"/studies/\{study_id\}")
SHARING_CHANGE = re.compile(r"/studies/\{study_id\}/collaborators")
RESEARCHERS = ("researcher", "collaborator", "outsider", "admin")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route, through FastAPI's included-router wrappers."""
    found = []

    def add(route, path):
        methods = getattr(route, "methods", None) or {"GET"}
        found.extend((m, path) for m in sorted(methods - {"HEAD", "OPTIONS"}))

    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x: lazily included routers
            for ctx in route.effective_route_contexts():
                add(ctx.original_route, ctx.path)
        elif hasattr(route, "path"):
            add(route, route.path_format if hasattr(route, "path_format") else route.path)
    return sorted(set(found))


@dataclass
class World:
    app: object
    study_id: int
    invite: str
    media_token: str
    cookies: dict[str, dict[str, str]]  # identity -> cookies
    csrf: dict[str, str]
    eval_headers: dict[str, str]


def _fill(path: str, w: World) -> str:
    values = {"study_id": str(w.study_id), "invite_token": w.invite, "media_token": w.media_token, "fmt": "csv",
              "criterion": "overall_quality", "path": "css/app.css", "user_id": "1"}
    path = path.replace("{path}", values["path"])
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "1"), path)


def _client(w: World, who: str) -> TestClient:
    client = TestClient(w.app, follow_redirects=False)
    for name, value in w.cookies.get(who, {}).items():
        client.cookies.set(name, value)
    return client


def _call(w: World, who: str, method: str, path: str):
    url = _fill(path, w)
    client = _client(w, who)
    if method == "GET":
        return client.get(url)
    if path.startswith("/api/"):
        return client.request(method, url, json={})
    return client.request(method, url, data={"csrf_token": w.csrf.get(who, "")})


def _csrf_from(client: TestClient, url: str) -> str:
    match = _CSRF.search(client.get(url).text)
    return match.group(1) if match else ""


@pytest.fixture
def world(session) -> World:
    researcher = make_user(session, role="researcher", password=PASSWORD)
    admin = make_user(session, role="admin", password=PASSWORD)
    outsider = make_user(session, role="researcher", password=PASSWORD)
    collaborator = make_user(session, role="researcher", password=PASSWORD)
    # Every evaluator of the walk joins from the test client's one address, as a lab's would: no per-address cap.
    study = make_study(session, n_prompts=3, created_by_id=researcher.id, qc={"sessions_per_address": 0})
    study.name = "Owned by the researcher"
    session.add(StudyCollaborator(study_id=study.id, user_id=collaborator.id))
    make_pairs(session, study)
    media_token = session.scalars(select(Clip.media_token)).first()
    session.commit()
    app = create_app()
    cookies: dict[str, dict[str, str]] = {"anon": {}}
    csrf: dict[str, str] = {}
    for who, user in (("researcher", researcher), ("admin", admin), ("outsider", outsider),
                      ("collaborator", collaborator)):
        with TestClient(app, follow_redirects=False) as c:
            token = _csrf_from(c, "/login")
            r = c.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token, "next": "/"})
            assert r.status_code == 303, r.text[:300]
            csrf[who] = _csrf_from(c, "/") or token
            cookies[who] = dict(c.cookies)  # after the page: the session cookie now holds the CSRF token
    with TestClient(app, follow_redirects=False) as c:
        token = _csrf_from(c, f"/join/{study.invite_token}")
        r = c.post(f"/join/{study.invite_token}", data={"csrf_token": token, "consent": "yes"})
        assert r.status_code == 303, r.text[:300]
        cookies["evaluator"] = dict(c.cookies)
        csrf["evaluator"] = token
        csrf["anon"] = token
        r = c.post("/api/v1/evaluate/join", json={"invite_token": study.invite_token})
        eval_headers = {"X-Evaluator-Token": r.json()["evaluator_token"]}
    return World(app, study.id, study.invite_token, media_token, cookies, csrf, eval_headers)


def _is_public(path: str) -> bool:
    return any(p.search(path) for p in PUBLIC)


def _is_admin_only(path: str) -> bool:
    return any(p.search(path) for p in ADMIN_ONLY)


def _refused(r, path: str) -> bool:
    if r.status_code in (401, 403):
        return True
    return not path.startswith("/api/") and r.status_code in (302, 303) and \
        r.headers.get("location", "").startswith("/login")


def test_the_walk_covers_the_app(world):
    table = routes(world.app)
    paths = {p for _, p in table}
    # The walk is only meaningful if it sees the real routes, both HTML and API, protected and public.
    assert any(not _is_public(p) for p in paths) and any(_is_public(p) for p in paths)
    assert any(p.startswith("/api/v1/") for p in paths) and any(not p.startswith("/api/") for p in paths)


def _problem(who: str, method: str, path: str, r) -> str | None:
    """What is wrong with this answer to this identity, or None."""
    if r.status_code >= 500:
        return "server error"
    if _is_public(path):
        return None
    if who in ("anon", "evaluator"):
        return None if _refused(r, path) else "protected route not refused"
    if who != "admin" and _is_admin_only(path):
        return None if r.status_code in (403, 404) else f"admin-only route not refused to a {who}"
    if who == "outsider" and STUDY_ROUTE.search(path):
        return None if r.status_code == 404 else "another researcher's study is not a 404"
    if who == "collaborator" and SHARING_CHANGE.search(path) and method != "GET":
        # 422: the walk's empty JSON body is refused before anything is looked at (tests/app/web/test_sharing.py
        # sends real ones).
        return None if r.status_code in (403, 422) else "a collaborator changed who the study is shared with"
    return f"refused to a {who}" if _refused(r, path) or r.status_code == 404 else None


LOGOUT = re.compile(r"^(/api/v1)?/logout$")


def test_every_route_answers_each_identity_correctly(world):
    problems = []
    # Logout ends the session on the server (issue 12), so it is walked last: the identities stay logged in.
    table = sorted(routes(world.app), key=lambda route: bool(LOGOUT.match(route[1])))
    for method, path in table:
        for who in ("anon", "evaluator", *RESEARCHERS):
            r = _call(world, who, method, path)
            problem = _problem(who, method, path, r)
            if problem:
                problems.append(f"{who:12} {method:6} {path} -> {r.status_code}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_walk_reaches_the_study_routes_it_must_refuse(world):
    """The outsider rule is only meaningful if the walk meets study routes of each router and method."""
    table = routes(world.app)
    study_routes = [(m, p) for m, p in table if STUDY_ROUTE.search(p)]
    assert {m for m, _ in study_routes} >= {"GET", "POST", "PATCH", "DELETE"}
    assert any(p.startswith("/api/") for _, p in study_routes) and any(not p.startswith("/api/")
                                                                      for _, p in study_routes)
    for needed in ("/results", "/export/", "/generation/queue", "/status", "/qc", "/collaborators"):
        assert any(needed in p for _, p in study_routes), needed


def test_an_outsider_is_answered_as_for_a_study_that_does_not_exist(world):
    """Same status and same message for someone else's study and for an id nobody has: ids reveal nothing."""
    outsider = _client(world, "outsider")
    missing = world.study_id + 1000
    for url in ("/api/v1/studies/{}", "/api/v1/studies/{}/results", "/api/v1/studies/{}/qc"):
        theirs, nobodys = outsider.get(url.format(world.study_id)), outsider.get(url.format(missing))
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json()["detail"].replace(str(world.study_id), "N") == \
            nobodys.json()["detail"].replace(str(missing), "N")


def test_only_the_studies_a_researcher_may_see_are_listed(world):
    def listed(who: str) -> tuple[list[int], str]:
        client = _client(world, who)
        return [s["id"] for s in client.get("/api/v1/studies").json()], client.get("/").text

    for who in ("researcher", "collaborator", "admin"):
        ids, page = listed(who)
        assert ids == [world.study_id] and "Owned by the researcher" in page, who
    ids, page = listed("outsider")
    assert ids == [] and "Owned by the researcher" not in page and f"/studies/{world.study_id}" not in page


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>\s*\S", re.I), "inline <script>"),
    (re.compile(r"<style[\s>]", re.I), "<style> block"),
    (re.compile(r"\sstyle\s*=", re.I), "style= attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "inline event handler"),
    (re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.I), "javascript: URL"),
]


def test_every_html_page_works_under_the_strict_csp(world):
    """The CSP forbids inline code and styles, so a page that has them would be broken for real users."""
    problems = []
    for method, path in routes(world.app):
        # FastAPI's Swagger UI: its page gets its own CSP (app/middleware.py); the OAuth2 redirect helper is
        # unused here (no OAuth) and should be switched off with swagger_ui_oauth2_redirect_url=None.
        if method != "GET" or path in ("/api/v1/docs", "/docs/oauth2-redirect"):
            continue
        for who in ("anon", "evaluator", *RESEARCHERS):
            r = _call(world, who, method, path)
            if r.status_code != 200 or "text/html" not in r.headers.get("content-type", ""):
                continue
            # A downloadable file (e.g. a self-contained report) is opened from disk, not under our CSP.
            if "attachment" in r.headers.get("content-disposition", ""):
                continue
            problems += [f"{who} GET {path}: {what}" for rx, what in INLINE if rx.search(r.text)]
    assert not problems, "\n".join(sorted(set(problems)))


def _pair_token(client: TestClient) -> str:
    page = client.get("/e/pair")
    assert page.status_code == 200, page.text[:300]
    return re.search(r'name="assignment" value="([^"]+)"', page.text).group(1)


def test_an_evaluator_reaches_only_their_own_pair(world):
    other = TestClient(world.app, follow_redirects=False)
    token = _csrf_from(other, f"/join/{world.invite}")
    assert other.post(f"/join/{world.invite}", data={"csrf_token": token, "consent": "yes"}).status_code == 303
    theirs = _pair_token(other)

    me = _client(world, "evaluator")
    mine = _pair_token(me)
    assert mine != theirs and theirs not in me.get("/e/pair").text

    # Voting on someone else's assignment through the page or the API is refused and stores nothing.
    choices = {f"c_{k}": "left" for k in ("text_relevance", "appearance_distortion", "appearance_aesthetics",
                                         "motion_naturalness", "motion_amplitude", "overall_quality")}
    r = me.post("/e/vote", data={"csrf_token": world.csrf["evaluator"], "assignment": theirs, **choices})
    assert r.status_code == 403
    api = TestClient(world.app).post("/api/v1/evaluate/votes", headers=world.eval_headers, json={
        "assignment_token": theirs, "choices": {k[2:]: v for k, v in choices.items()}})
    assert api.status_code == 403 and api.json()["detail"]
    with session_scope() as fresh:
        assignment = fresh.scalars(select(Assignment).where(Assignment.token == theirs)).one()
        assert assignment.status == "open"
        assert fresh.scalars(select(Vote).where(Vote.assignment_id == assignment.id)).first() is None

    # A tampered cookie is no session at all; unknown or path-like media tokens are plain 404s.
    forged = TestClient(world.app, follow_redirects=False)
    forged.cookies.set("bp_eval", world.cookies["evaluator"]["bp_eval"][:-4] + "AAAA")
    assert forged.get("/e/pair").status_code == 401
    for bad in ("not-a-token", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fblindpair.sqlite"):
        assert TestClient(world.app).get(f"/m/{bad}").status_code == 404
