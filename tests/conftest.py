"""Shared fixtures: a clean database per test (SQLite by default, PostgreSQL for storage tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

os.environ.setdefault("BLINDPAIR_ENVIRONMENT", "test")
os.environ.setdefault("BLINDPAIR_SECRET_KEY", "test-secret-key-that-is-long-enough-0123456789")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights in tests

from app import config, db  # noqa: E402
from app.db import Base  # noqa: E402
from tests.support.seaweed_fixtures import own_seaweed, s3_env, seaweed  # noqa: E402, F401 - the S3 server's fixtures
from tests.support.servers import postgres_server, postgres_unavailable_reason  # noqa: E402

IN_CI = bool(os.environ.get("CI"))


def _configure(monkeypatch: pytest.MonkeyPatch, tmp_path, database_url: str) -> None:
    monkeypatch.setenv("BLINDPAIR_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BLINDPAIR_DATABASE_URL", database_url)
    config.get_settings.cache_clear()
    db.reset_engine_cache()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One PostgreSQL server for the whole run; each test gets a fresh schema (see ``pg_db``)."""
    reason = postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite"])
def db_backend(request) -> str:
    """Override with ``@pytest.mark.parametrize('db_backend', BACKENDS, indirect=True)`` for both."""
    return request.param


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def database_url(db_backend, tmp_path, request) -> str:
    if db_backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        from sqlalchemy import create_engine

        eng = create_engine(url)
        with eng.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        eng.dispose()
        return url
    return f"sqlite:///{tmp_path / 'test.sqlite'}"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path) -> Iterator[None]:
    """Every test gets its own data folder and a SQLite URL; ``engine`` may switch it."""
    _configure(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'test.sqlite'}")
    from app.ratelimit import reset_limits

    reset_limits()  # in-process rate-limit counts must not leak from one test into the next
    yield
    reset_limits()
    db.reset_engine_cache()
    config.get_settings.cache_clear()


@pytest.fixture
def fresh_results_cache() -> Iterator[None]:
    """An empty in-process results cache before and after the test."""
    from app.services.results_cache import get_cache

    get_cache().clear()
    yield
    get_cache().clear()


@pytest.fixture
def engine(database_url, monkeypatch, tmp_path):
    """A database with the schema created from the models (migrations are tested on their own)."""
    _configure(monkeypatch, tmp_path, database_url)
    eng = db.get_engine()
    Base.metadata.create_all(eng)
    yield eng
    db.reset_engine_cache()


@pytest.fixture
def session(engine) -> Iterator[Session]:
    s = db.get_sessionmaker()()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def client(engine):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as c:
        yield c
