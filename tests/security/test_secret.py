"""The signing secret of a default install is its own: generated on first run into the data folder, kept
across restarts, different per install, and the old public placeholder signs nothing (issue 12).

The attack these tests replay: the source held a default secret, so anyone could sign a session cookie
saying ``{"user_id": 1}`` and call the admin API. The placeholder is built from parts below, so that the
grep at the end finds it nowhere in the tree, this file included.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

import itsdangerous
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from app import config, db
from app.config import SECRET_FILE, Settings, get_settings
from tests.factories import make_user

OLD_PLACEHOLDER = "-".join(["dev", "insecure", "secret", "key"])
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def _signed_session(data: dict, secret: str) -> str:
    """A ``bp_session`` cookie exactly as Starlette's SessionMiddleware signs one."""
    payload = base64.b64encode(json.dumps(data).encode())
    return itsdangerous.TimestampSigner(secret).sign(payload).decode()


@pytest.fixture
def default_install(monkeypatch, tmp_path):
    """Settings as on a fresh laptop: no BLINDPAIR_SECRET_KEY anywhere, development, a new data folder."""
    monkeypatch.delenv("BLINDPAIR_SECRET_KEY", raising=False)
    monkeypatch.setenv("BLINDPAIR_ENVIRONMENT", "development")
    monkeypatch.chdir(tmp_path)  # no stray .env file of the checkout is read
    config.get_settings.cache_clear()
    return tmp_path / "var"


@pytest.fixture
def default_client(default_install, engine):
    from app.main import create_app

    with TestClient(create_app()) as client:
        yield client


def test_a_cookie_forged_with_the_old_placeholder_is_refused(default_client, session):
    admin = make_user(session, role="admin", password=PASSWORD)
    session.commit()
    # The reported attack: an admin's session signed with the placeholder once printed in the source.
    default_client.cookies.set("bp_session", _signed_session({"user_id": admin.id}, OLD_PLACEHOLDER))
    assert default_client.get("/api/v1/users").status_code == 401
    assert default_client.get("/api/v1/me").status_code == 401
    # And the signature itself is refused: a CSRF token planted in a forged cookie is not the page's.
    default_client.cookies.set("bp_session", _signed_session({"csrf": "planted-by-attacker"}, OLD_PLACEHOLDER))
    page = default_client.get("/login").text
    assert "planted-by-attacker" not in page
    assert get_settings().secret_key != OLD_PLACEHOLDER


def test_the_first_run_generates_a_private_secret_in_the_data_folder(default_install):
    secret = get_settings().secret_key
    path = default_install / SECRET_FILE
    assert path.read_text().strip() == secret and len(secret) >= 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # readable by the server's user only
    assert secret not in repr(get_settings())  # nor printed with the settings in a log or a traceback
    # The data folder is git-ignored, so the secret can never be committed by accident.
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/var/" in ignored and Settings.model_fields["data_dir"].default == Path("var")


def test_the_secret_survives_a_restart_and_logins_with_it(default_install, engine, session):
    from app.main import create_app

    make_user(session, email="r@lab.org", password=PASSWORD)
    session.commit()
    first = get_settings().secret_key
    with TestClient(create_app()) as client:
        assert client.post("/api/v1/login", json={"email": "r@lab.org", "password": PASSWORD}).status_code == 200
        cookie = client.cookies["bp_session"]
    config.get_settings.cache_clear()  # a restart: settings read again, a new app built
    assert get_settings().secret_key == first
    with TestClient(create_app()) as client:
        client.cookies.set("bp_session", cookie)
        assert client.get("/api/v1/me").json()["email"] == "r@lab.org"


def test_two_fresh_installs_get_different_secrets(default_install, tmp_path):
    one = Settings(data_dir=tmp_path / "one").secret_key
    two = Settings(data_dir=tmp_path / "two").secret_key
    assert one != two and len(one) >= 48 and len(two) >= 48
    assert Settings(data_dir=tmp_path / "one").secret_key == one


def test_a_broken_secret_file_is_refused_with_what_to_do(default_install, tmp_path):
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / SECRET_FILE).write_text("abc\n")
    with pytest.raises(ValidationError, match="Delete it"):
        Settings(data_dir=tmp_path / "short")


@pytest.mark.parametrize("value", ["change-me", "secret", "short-but-set"])
def test_a_placeholder_or_short_secret_is_refused_everywhere(value, default_install):
    for environment in ("development", "test", "production"):
        with pytest.raises(ValidationError, match="BLINDPAIR_SECRET_KEY"):
            Settings(environment=environment, secret_key=value)


def test_production_without_a_secret_refuses_to_start(default_install, monkeypatch):
    from app.cli import app

    with pytest.raises(ValidationError, match="BLINDPAIR_SECRET_KEY is not set"):
        Settings(environment="production")
    monkeypatch.setenv("BLINDPAIR_ENVIRONMENT", "production")
    config.get_settings.cache_clear()
    db.reset_engine_cache()
    try:
        result = CliRunner().invoke(app, ["serve"])
    finally:  # the fixtures' teardown reads the settings again
        monkeypatch.setenv("BLINDPAIR_ENVIRONMENT", "development")
        config.get_settings.cache_clear()
    assert result.exit_code == 2 and "BLINDPAIR_SECRET_KEY is not set" in result.output
    assert "Traceback" not in result.output
    assert not (default_install / SECRET_FILE).exists()  # production never falls back to a generated file


def _source_files() -> list[Path]:
    skip = {".git", ".venv", ".tools", "var", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache",
            ".mypy_cache", "build", "dist"}
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        files += [Path(dirpath) / name for name in filenames]
    return files


def test_the_placeholder_is_nowhere_in_the_source():
    files = _source_files()
    assert any(f.name == "config.py" for f in files) and len(files) > 50  # the walk sees the tree
    needle = re.compile(re.escape(OLD_PLACEHOLDER).encode(), re.I)
    found = []
    for path in files:
        try:
            if needle.search(path.read_bytes()):
                found.append(str(path.relative_to(ROOT)))
        except OSError:
            continue
    assert not found, f"the old default secret is still in: {found}"
