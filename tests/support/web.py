"""Logging in through the HTML form, as a browser does, for tests of the pages and of logins."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: TestClient, url: str = "/") -> str:
    """The CSRF token of the form on the page at ``url``."""
    match = _CSRF.search(client.get(url).text)
    assert match is not None, f"no CSRF token on {url}"
    return match.group(1)


def login(client: TestClient, email: str, password: str) -> None:
    """Log ``client`` in with the login form; the form answers with a redirect."""
    token = csrf_token(client, "/login")
    r = client.post("/login", data={"email": email, "password": password, "csrf_token": token, "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:300]


def logged_in_client(app, email: str, password: str) -> TestClient:
    """A new client of ``app`` (redirects not followed), logged in as ``email``."""
    client = TestClient(app, follow_redirects=False)
    login(client, email, password)
    return client
