"""The results dashboard in a real Chromium: charts render without script errors, and the page refreshes
itself when a vote arrives (the live poll is driven by Playwright's fake clock, not by waiting 15 s)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app.models import Evaluator, Pair
from tests.app.services.results_factory import cast_vote, voted_study
from tests.factories import make_user
from tests.support.browser import log_in

pytestmark = pytest.mark.browser


def test_dashboard_renders_and_follows_new_votes(page, live_server, session):
    study = voted_study(session, n_prompts=3, n_evaluators=2)
    admin = make_user(session, role="admin")
    session.commit()
    page.clock.install()
    log_in(page, live_server, admin)
    page.goto(f"{live_server}/studies/{study.id}/results")
    expect(page.locator(".subhead")).to_contain_text("6 votes from 2 evaluators")
    charts = page.locator("svg.chart[role=img]:visible")  # each chart is drawn wide and narrow; one is shown
    assert charts.count() >= 5
    for name in ("Wins, ties and losses per criterion", "among non-tie votes", "by theme and criterion",
                 "Cost against preference", "Votes over time"):
        assert page.locator("svg.chart:visible > title", has_text=name).count() == 1, name

    pair = session.query(Pair).filter_by(study_id=study.id).first()
    ev = Evaluator(study_id=study.id)
    session.add(ev)
    session.flush()
    cast_vote(session, pair=pair, evaluator=ev, choices={c.key: "left" for c in study.criteria}, a_left=True)
    session.commit()
    page.clock.fast_forward(16_000)  # one poll interval: the fingerprint changed, so the page reloads
    expect(page.locator(".subhead")).to_contain_text("7 votes from 3 evaluators")
    assert page.errors == []
    assert not [r for r in page.bad_responses if not r[1].startswith("/favicon")]
