"""The serving process freezes its startup heap once it has started, so the collector's oldest generation
stops walking it (app/gc_pauses.py)."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from app import gc_pauses


def test_the_startup_heap_is_frozen_once_the_app_has_started(engine, monkeypatch):
    from app.main import create_app

    monkeypatch.setattr(gc_pauses, "_frozen", False)
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(len(gc.get_objects())))
    app = create_app()
    assert frozen == []  # building the app is not starting it
    with TestClient(app):
        assert len(frozen) == 1 and frozen[0] > 10_000  # everything imported and built so far
    with TestClient(create_app()):
        assert len(frozen) == 1  # once per process: later apps (tests) would keep earlier apps' cycles forever
