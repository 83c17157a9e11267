"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest

from app import db
from app.migrate import upgrade


@pytest.fixture
def migrated():
    """A database migrated with Alembic, as the CLI finds it; its engines dropped afterwards."""
    upgrade()
    yield
    db.reset_engine_cache()
