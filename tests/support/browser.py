"""Steps that several browser tests take."""

from __future__ import annotations


def log_in(page, live_server: str, user, password: str = "correct horse battery") -> None:
    """Log ``user`` in through the login form (factories give every user this password)."""
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", password)
    page.locator("form button[type=submit]").last.click()
