"""The Alembic migrations and the SQLAlchemy models describe the same schema, on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.db import Base
from app.migrate import upgrade
from tests.conftest import BACKENDS


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_migrations_match_models(database_url):
    upgrade("head", url=database_url)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_upgrade_is_repeatable_and_creates_every_table(database_url):
    upgrade("head", url=database_url)
    upgrade("head", url=database_url)  # a second run is a no-op, not an error
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_cli_db_upgrade_creates_the_sqlite_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app import config, db
    from app.cli import app

    monkeypatch.setenv("BLINDPAIR_DATABASE_URL", "")
    monkeypatch.setenv("BLINDPAIR_DATA_DIR", str(tmp_path / "fresh"))
    config.get_settings.cache_clear()
    db.reset_engine_cache()
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fresh" / "blindpair.sqlite").exists()
