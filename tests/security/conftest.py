"""Rate-limit counts live in the process: start every security test from zero."""

from __future__ import annotations

import pytest

from app.ratelimit import reset_limits


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    reset_limits()
    yield
    reset_limits()
