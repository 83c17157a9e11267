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


def _add_vote(session, study) -> None:
    pair = session.query(Pair).filter_by(study_id=study.id).first()
    ev = Evaluator(study_id=study.id)
    session.add(ev)
    session.flush()
    cast_vote(session, pair=pair, evaluator=ev, choices={c.key: "left" for c in study.criteria}, a_left=True)
    session.commit()


def _open_dashboard(page, live_server, session):
    study = voted_study(session, n_prompts=3, n_evaluators=2)
    admin = make_user(session, role="admin")
    session.commit()
    page.clock.install()
    log_in(page, live_server, admin)
    page.goto(f"{live_server}/studies/{study.id}/results")
    expect(page.locator(".subhead")).to_contain_text("6 votes from 2 evaluators")
    page.evaluate("window.__samePage = true")  # gone if the page reloads
    return study


def test_live_updates_can_be_paused_and_resumed(page, live_server, session):
    polls: list[str] = []
    page.on("request", lambda r: "/fingerprint" in r.url and polls.append(r.url))
    study = _open_dashboard(page, live_server, session)
    toggle = page.get_by_role("button", name="Pause live updates")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    resume = page.get_by_role("button", name="Resume live updates")
    expect(resume).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-live-note]")).to_contain_text("paused")
    page.reload()  # the choice is remembered by this browser
    expect(page.get_by_role("button", name="Resume live updates")).to_be_visible()
    page.evaluate("window.__samePage = true")

    _add_vote(session, study)
    seen = len(polls)
    page.clock.run_for(60_000)  # four poll intervals: paused means no request and no reload
    page.wait_for_timeout(200)  # a stray request would have been sent by now; this is not a timing assertion
    assert len(polls) == seen
    assert page.evaluate("window.__samePage") is True
    expect(page.locator(".subhead")).to_contain_text("6 votes from 2 evaluators")

    page.get_by_role("button", name="Resume live updates").click()  # polls at once; new votes: the page updates
    expect(page.locator(".subhead")).to_contain_text("7 votes from 3 evaluators")
    expect(page.get_by_role("button", name="Pause live updates")).to_be_visible()
    assert page.errors == []


def test_new_votes_wait_for_the_reader_while_a_control_has_focus(page, live_server, session):
    study = _open_dashboard(page, live_server, session)
    region = page.get_by_role("region", name="Votes per criterion")
    region.focus()  # reading a table with the keyboard: a reload would throw the reader back to the top
    _add_vote(session, study)
    page.clock.run_for(16_000)
    show = page.get_by_role("button", name="Show the new results")
    expect(show).to_be_visible()
    expect(page.locator("[data-live-note]")).to_contain_text("New votes are in")
    assert page.evaluate("window.__samePage") is True
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Votes per criterion"
    show.click()
    expect(page.locator(".subhead")).to_contain_text("7 votes from 3 evaluators")


@pytest.mark.parametrize("reduced", ["reduce"])
def test_reduced_motion_never_reloads_by_itself(browser, live_server, session, reduced):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, reduced_motion=reduced)
    page = context.new_page()
    page.errors, page.bad_responses = [], []
    study = _open_dashboard(page, live_server, session)
    expect(page.locator("[data-live-note]")).to_contain_text("does not update by itself")
    _add_vote(session, study)
    page.clock.run_for(16_000)
    expect(page.get_by_role("button", name="Show the new results")).to_be_visible()
    page.clock.run_for(60_000)
    assert page.evaluate("window.__samePage") is True
    expect(page.locator(".subhead")).to_contain_text("6 votes from 2 evaluators")
    context.close()
