"""Logout and a new password end a login on the server: a cookie copied before is dead (issue 12).

The attack: copy a researcher's ``bp_session`` cookie (a shared computer, a proxy log, malware), wait for
them to log out, and replay it. The signed cookie stays valid for 14 days, so only a server-side record of
the login can end it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from app.db import session_scope
from app.main import create_app
from app.models import UserSession, utcnow
from tests.factories import make_user
from tests.support.web import csrf_token, logged_in_client

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def app(engine):
    return create_app()


@pytest.fixture
def researcher(session):
    user = make_user(session, email="r@lab.org", password=PASSWORD)
    session.commit()
    return user


def _api_login(app, email="r@lab.org", password=PASSWORD) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    assert client.post("/api/v1/login", json={"email": email, "password": password}).status_code == 200
    return client


def _replay(app, cookie: str) -> TestClient:
    """Another machine holding a copy of the cookie."""
    thief = TestClient(app, follow_redirects=False)
    thief.cookies.set("bp_session", cookie)
    return thief


def test_a_cookie_copied_before_logout_is_refused_after_it(app, researcher):
    victim = logged_in_client(app, "r@lab.org", PASSWORD)
    csrf = csrf_token(victim)
    copied = victim.cookies["bp_session"]
    assert _replay(app, copied).get("/").status_code == 200  # the copy works while the login lives
    assert victim.post("/logout", data={"csrf_token": csrf}).status_code == 303
    thief = _replay(app, copied)
    r = thief.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert thief.get("/api/v1/me").status_code == 401
    assert thief.get("/api/v1/studies").status_code == 401


def test_api_logout_revokes_the_cookie_too(app, researcher):
    victim = _api_login(app)
    copied = victim.cookies["bp_session"]
    assert victim.post("/api/v1/logout").status_code == 204
    assert _replay(app, copied).get("/api/v1/me").status_code == 401
    with session_scope() as s:
        assert s.scalars(select(UserSession)).all() == []  # nothing left that the cookie could point at


def test_logout_ends_only_that_login(app, researcher):
    laptop, desktop = _api_login(app), _api_login(app)
    assert laptop.post("/api/v1/logout").status_code == 204
    assert desktop.get("/api/v1/me").status_code == 200


def test_a_new_password_on_the_account_page_ends_every_other_login(app, researcher):
    me, elsewhere = logged_in_client(app, "r@lab.org", PASSWORD), _api_login(app)
    copied = elsewhere.cookies["bp_session"]
    r = me.post("/account/password", data={"csrf_token": csrf_token(me, "/account"), "current_password": PASSWORD,
                                           "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/account"
    assert "logged out" in me.get("/account").text  # the one who changed it stays in
    assert _replay(app, copied).get("/api/v1/me").status_code == 401
    assert TestClient(app).post("/api/v1/login", json={"email": "r@lab.org", "password": PASSWORD}).status_code == 401
    _api_login(app, password=NEW_PASSWORD)


def test_a_wrong_current_password_changes_nothing(app, researcher):
    me, elsewhere = logged_in_client(app, "r@lab.org", PASSWORD), _api_login(app)
    r = me.post("/account/password", data={"csrf_token": csrf_token(me, "/account"), "current_password": "guess guess",
                                           "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert r.status_code == 400 and "current password is wrong" in r.text
    r = me.post("/account/password", data={"csrf_token": csrf_token(me, "/account"), "current_password": PASSWORD,
                                           "new_password": NEW_PASSWORD, "confirm_password": "something else"})
    assert r.status_code == 400 and "differ" in r.text
    assert elsewhere.get("/api/v1/me").status_code == 200
    _api_login(app, password=PASSWORD)


def test_a_new_password_through_the_api_ends_other_logins(app, researcher):
    me, elsewhere = _api_login(app), _api_login(app)
    copied = elsewhere.cookies["bp_session"]
    r = me.post("/api/v1/me/password", json={"current_password": "wrong one", "new_password": NEW_PASSWORD})
    assert r.status_code == 400 and _replay(app, copied).get("/api/v1/me").status_code == 200
    r = me.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 400 and "at least 8" in r.json()["detail"]
    assert _replay(app, copied).get("/api/v1/me").status_code == 200  # a refused change ends nothing
    r = me.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 204
    assert _replay(app, copied).get("/api/v1/me").status_code == 401
    assert me.get("/api/v1/me").status_code == 200


def test_guessing_the_current_password_with_a_stolen_cookie_is_throttled(app, researcher):
    thief = _api_login(app)
    for _ in range(10):
        r = thief.post("/api/v1/me/password", json={"current_password": "guess", "new_password": NEW_PASSWORD})
        assert r.status_code == 400
    r = thief.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 429


def test_an_admin_password_reset_from_the_cli_ends_every_login(app, researcher, monkeypatch):
    from app.cli import app as cli

    # The schema comes from the models here; the CLI's migration check is tested in tests/app/cli.
    monkeypatch.setattr("app.cli.users.require_migrated", lambda: None)
    victim = _api_login(app)
    r = CliRunner().invoke(cli, ["user", "password", "r@lab.org", "--password", NEW_PASSWORD])
    assert r.exit_code == 0, r.output
    assert "logged out" in r.output
    assert victim.get("/api/v1/me").status_code == 401
    r = CliRunner().invoke(cli, ["user", "password", "nobody@lab.org", "--password", NEW_PASSWORD])
    assert r.exit_code == 1 and "No account" in r.output


def test_a_login_ends_after_its_lifetime_even_with_a_fresh_cookie(app, researcher):
    client = _api_login(app)
    with session_scope() as s:
        s.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    # Starlette re-signs the cookie on every response, so its own age never runs out while it is used.
    assert client.get("/api/v1/me").status_code == 401
