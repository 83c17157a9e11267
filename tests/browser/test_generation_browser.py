"""The study page's generation panel follows a batch live in a real Chromium: counts and ETA change in place as
clips move from queued to running to done, and polling stops when nothing is left. Clip states are moved in the
database by the test (what a worker's claim/complete writes), and the poll is driven by Playwright's fake
clock, so nothing waits on wall time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from app.models import Clip
from app.services import generation as svc
from tests.factories import NO_CHECKS, make_study, make_user
from tests.support.browser import log_in

pytestmark = pytest.mark.browser
POLL_MS = 3000


def _set(session, clip_ids, **values) -> None:
    session.execute(update(Clip).where(Clip.id.in_(clip_ids)).values(**values))
    session.commit()


def test_generation_counts_update_live_and_polling_stops(page, live_server, session):
    study = make_study(session, models=("smooth", "jittery"), n_prompts=3, qc=NO_CHECKS)
    for model, preset in zip(study.models, ("demo-smooth", "demo-jittery"), strict=True):
        model.preset = preset
    study.settings = {**study.settings, "base_model": "none", "dtype": "float32"}
    researcher = make_user(session, role="researcher")
    study.created_by_id = researcher.id  # a researcher sees only their own studies
    session.commit()
    sent: list[int] = []
    svc.queue_batch(session, study_id=study.id, send=sent.extend)  # a batch of 6 demo clips, all queued
    assert len(sent) == 6
    smooth_id = study.models[0].id
    smooth = list(session.scalars(select(Clip.id).where(Clip.model_id == smooth_id).order_by(Clip.id)))
    session.commit()

    polls: list[str] = []
    page.on("request", lambda r: r.url.endswith(f"/api/v1/studies/{study.id}/generation") and polls.append(r.url))
    page.clock.install()
    log_in(page, live_server, researcher)
    page.goto(f"{live_server}/studies/{study.id}")
    row = page.locator(f'#generation tr[data-gen-model="{smooth_id}"]')
    cell = lambda field: row.locator(f'[data-gen-field="{field}"]')  # noqa: E731
    expect(cell("queued")).to_have_text("3")
    summary = page.locator("#generation [data-gen-summary]")
    expect(summary).to_contain_text("6 clip(s) to go; no worker is generating right now")
    page.evaluate("window.__samePage = true")  # gone if the page reloads

    # A worker claims one clip and finishes another, as claim_clip/complete_clip record them.
    now = datetime.now(UTC)
    _set(session, smooth[:1], status="running", claimed_by="host:1", heartbeat_at=now, started_at=now)
    _set(session, smooth[1:2], status="done", origin="generated", wall_seconds=2.0, finished_at=now)
    page.clock.run_for(POLL_MS)
    expect(cell("queued")).to_have_text("1")
    expect(cell("running")).to_have_text("1")
    expect(cell("done")).to_have_text("1")
    expect(cell("median_seconds")).to_have_text("2 s")
    expect(cell("eta_seconds")).to_have_text("4 s")  # 2 clips left x 2 s median
    expect(summary).to_contain_text("5 clip(s) to go; 1 worker(s) busy on 1 clip(s)")
    assert page.evaluate("window.__samePage") is True

    # One clip fails, the rest finish: the last poll shows it and polling stops.
    _set(session, smooth[2:3], status="failed", error="boom")
    _set(session, [c for c in sent if c not in smooth[2:3]], status="done", claimed_by=None, heartbeat_at=None,
         origin="generated", wall_seconds=2.0, finished_at=now)
    page.clock.run_for(POLL_MS)
    expect(cell("done")).to_have_text("2")
    expect(cell("failed")).to_have_text("1")
    expect(cell("failed")).to_have_class("error")
    expect(cell("eta_seconds")).to_have_text("\u2013")
    expect(summary).to_have_text("Nothing waiting.")
    expect(page.locator("#generation [data-gen-updated]")).to_contain_text("Generation finished (5 done, 1 failed)")
    assert page.evaluate("window.__samePage") is True
    seen = len(polls)
    page.clock.run_for(POLL_MS * 5)
    page.wait_for_timeout(200)  # a stray request would have been sent by now; this is not a timing assertion
    assert len(polls) == seen
    assert page.errors == []
