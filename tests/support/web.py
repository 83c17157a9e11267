"""Logging in through the HTML form, as a browser does, for tests of the pages and of logins."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def csrf_of(html: str) -> str:
    """The CSRF token of the (first) form in ``html``."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def csrf_token(client: TestClient, url: str = "/") -> str:
    """The CSRF token of the form on the page at ``url``."""
    return csrf_of(client.get(url).text)


def login_form(client, email, password, next_url="/"):
    """Post the login form (redirects not followed) and return the answer."""
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "next": next_url, "csrf_token": token},
                       follow_redirects=False)


def login(client: TestClient, email: str, password: str) -> None:
    """Log ``client`` in with the login form; the form answers with a redirect."""
    r = login_form(client, email, password)
    assert r.status_code == 303, r.text[:300]


def logged_in_client(app, email: str, password: str) -> TestClient:
    """A new client of ``app`` (redirects not followed), logged in as ``email``."""
    client = TestClient(app, follow_redirects=False)
    login(client, email, password)
    return client
