"""Shared by the benchmark tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from app import config, db


@pytest.fixture
def restore_environment() -> Iterator[None]:
    """Benchmarks point the process at their own database through the environment; undo that afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    config.get_settings.cache_clear()
    db.reset_engine_cache()
