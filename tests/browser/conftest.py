"""Fixtures for real-browser tests: the real app under uvicorn (``live_server``) and Chromium (``browser``).

``live_server`` runs ``uvicorn --factory app.main:create_app`` in a subprocess on a free port against this
test's database (the ``engine`` fixture: a fresh SQLite file with the schema, or Postgres when the test is
parametrised with ``db_backend``), so a test seeds rows with ``session``, commits, and drives the browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port, stop_process

IN_CI = bool(os.environ.get("CI"))
CHROMIUM = "/usr/bin/chromium"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(reason)


def start_server(log_path: Path, *, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """Start uvicorn on a free port with this process's environment; return the process and its base URL."""
    port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - closed by stop_server via the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}; see {log_path}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/static/css/app.css", timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"uvicorn did not answer within {timeout}s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    stop_process(proc, timeout=10)


@pytest.fixture
def live_server(engine, tmp_path) -> Iterator[str]:
    """Base URL of the real app served by uvicorn against this test's database and media folder."""
    proc, base = start_server(tmp_path / "uvicorn.log")
    try:
        yield base
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(_playwright):
    """Headless Chromium from the system package (never a downloaded build)."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (own cookies) and page.

    Script errors and console errors (a CSP violation shows up there) collect in ``page.errors``; HTTP answers
    of 400 and above in ``page.bad_responses`` as (status, path), since some are expected (a 422 re-render).
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors, page.bad_responses = [], []
    page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
            and page.errors.append(msg.text))
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and page.bad_responses.append(
        (r.status, "/" + r.url.split("/", 3)[-1])))
    yield page
    context.close()

