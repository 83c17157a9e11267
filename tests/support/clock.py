"""A clock the tests move by hand: the rating flow's ``utcnow`` replaced, so minutes pass without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

# Every module of the rating flow that stamps or compares times (shown_at, submitted_at, abandonment).
RATING_FLOW_MODULES = ("app.services.assignments", "app.services.votes")


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0) -> None:
        self.now += timedelta(seconds=seconds, minutes=minutes)


def install(monkeypatch: pytest.MonkeyPatch, start: datetime | None = None) -> FakeClock:
    """Make the rating flow read ``FakeClock`` instead of the wall clock; returns it."""
    clock = FakeClock(start)
    for module in RATING_FLOW_MODULES:
        monkeypatch.setattr(f"{module}.utcnow", clock)
    return clock
