"""Every page of the evaluator's and the researcher's paths in a real Chromium, at a desktop (1280x800) and a
phone (390x844) size: no axe-core violation (WCAG 2.0/2.1/2.2 A and AA, best practice), no sideways scrolling,
chart text at least 11 px on screen, and a focus ring that stands out (3:1) on the first Tab stop.

One test per size walks every page and collects all problems before failing, so a failure lists everything
that is wrong at that size, page by page (docs/accessibility.md says how to read and fix them).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from app.models import Clip
from tests.app.services.results_factory import voted_study
from tests.browser.audit import (
    MIN_NON_TEXT_CONTRAST,
    axe_violations,
    focus_ring_contrast,
    sideways_scroll,
    small_chart_text,
)
from tests.factories import make_pairs, make_study, make_user
from tests.support.browser import log_in

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
LONG_NAME = "Lightning vs AnimateDiff, 100 prompts, second round with the longer negative prompt"


class Audit:
    """Runs every check on the page it is given and keeps what failed, by page name."""

    def __init__(self) -> None:
        self.problems: dict[str, list[str]] = {}
        self.visited: list[str] = []

    def check(self, page, name: str, *, charts: bool = False) -> None:
        page.wait_for_load_state("load")
        found = axe_violations(page) + sideways_scroll(page)
        if charts:
            drawn = page.locator("svg.chart").count()
            assert drawn, f"{name}: no chart on the page"
            found += small_chart_text(page)
        ratio, desc = focus_ring_contrast(page)
        if ratio < MIN_NON_TEXT_CONTRAST:
            found.append(f"focus ring contrast {ratio:.2f}:1 < 3:1 ({desc})")
        self.visited.append(name)
        if found:
            self.problems[name] = found

    def report(self) -> str:
        return "\n".join(f"{name}:\n  " + "\n  ".join(items) for name, items in self.problems.items())


@pytest.fixture
def studies(session):
    admin = make_user(session, role="admin")
    rated = make_study(session, models=("zz-model-alpha", "zz-model-beta"), n_prompts=4, pairs_per_session=2)
    rated.name = LONG_NAME  # a long name must wrap, not widen the studies list
    make_pairs(session, rated)
    results = voted_study(session, n_prompts=6, n_evaluators=4)
    many = voted_study(session, n_prompts=3, n_evaluators=3, models=("alpha", "beta", "gamma"))
    # Timings, so the cost chart and table have points to draw.
    for study, seconds in ((results, (2.0, 9.0)), (many, (1.0, 3.0, 8.0))):
        for model, s in zip(study.models, seconds, strict=True):
            session.execute(update(Clip).where(Clip.model_id == model.id).values(
                wall_seconds=s + 0.5, denoise_seconds=s * 0.8, decode_seconds=s * 0.2, origin="generated"))
    session.commit()
    return {"admin": admin, "rated": rated, "results": results, "many": many}


def _evaluator_path(browser, base: str, study, viewport: dict, audit: Audit) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(f"{base}/join/{study.invite_token}")
    audit.check(page, "instructions and consent")
    page.get_by_label("I have read the above and agree to take part.").check()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("Pair 1 of 2")).to_be_visible()
    expect(page.locator("#submit-vote")).to_be_enabled(timeout=15_000)
    audit.check(page, "pair page")
    for fieldset in page.locator("fieldset.criterion").all()[:-1]:  # leave the last one out
        fieldset.get_by_label("Left is better").check()
    page.locator("#submit-vote").click()
    expect(page.locator("#vote-error")).to_be_visible()
    expect(page.locator("#submit-vote")).to_be_enabled(timeout=15_000)
    audit.check(page, "pair page, an answer missing")
    for _ in range(2):
        for fieldset in page.locator("fieldset.criterion").all():
            fieldset.get_by_label("Indistinguishable").check()
        expect(page.locator("#submit-vote")).to_be_enabled(timeout=15_000)
        page.locator("#submit-vote").click()
        page.wait_for_load_state("load")
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    audit.check(page, "thank-you page")
    page.goto(f"{base}/join/no-such-invite")
    audit.check(page, "error: unknown invite link")
    context.clear_cookies()
    page.goto(f"{base}/e/pair")
    audit.check(page, "error: session not found")
    context.close()


def _admin_path(browser, base: str, data: dict, viewport: dict, audit: Audit) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(f"{base}/login")
    audit.check(page, "login")
    page.fill("input[name=email]", data["admin"].email)
    page.fill("input[name=password]", "wrong password")
    page.locator("form button[type=submit]").last.click()
    expect(page.locator(".flash.error, .errors").first).to_be_visible()
    audit.check(page, "login, wrong password")
    log_in(page, base, data["admin"])
    rated, results, many = data["rated"], data["results"], data["many"]
    pages = [
        ("/", "studies list", False),
        ("/studies/new", "new study form", False),
        (f"/studies/{rated.id}", "study page (no votes)", False),
        (f"/studies/{results.id}", "study page (votes, costs, generation, sharing)", False),
        (f"/studies/{results.id}/results", "results dashboard (two models)", True),
        (f"/studies/{many.id}/results", "results dashboard (three models, ratings)", True),
        (f"/studies/{rated.id}/results", "results dashboard (only flagged votes)", False),
        ("/admin/users", "users", False),
        ("/account", "account", False),
    ]
    for path, name, charts in pages:
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, (path, response and response.status)
        audit.check(page, name, charts=charts)
    # The report is a download (an attachment): open its HTML as the file a reader would open.
    report = page.request.get(f"{base}/studies/{results.id}/export/report.html")
    assert report.ok
    page.goto("about:blank")  # a page without the app's CSP, which would block the report's own <style>
    page.set_content(report.text())
    audit.check(page, "self-contained HTML report", charts=True)
    context.close()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_every_page_passes_axe_and_fits_the_screen(size, browser, live_server, studies):
    audit = Audit()
    _evaluator_path(browser, live_server, studies["rated"], VIEWPORTS[size], audit)
    _admin_path(browser, live_server, studies, VIEWPORTS[size], audit)
    assert len(audit.visited) == 18
    assert not audit.problems, f"at {size} size ({VIEWPORTS[size]}):\n{audit.report()}"


def test_charts_stay_readable_between_phone_and_desktop(browser, live_server, studies):
    """The widths where a chart sits in a half-width column or just under its wide drawing's size: each chart
    chooses its drawing by its own box (a container query), so no width in between shrinks its text."""
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    log_in(page, live_server, studies["admin"])
    problems = {}
    for width in (600, 768, 900, 1024, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        for study in (studies["results"], studies["many"]):
            page.goto(f"{live_server}/studies/{study.id}/results")
            found = small_chart_text(page) + sideways_scroll(page)
            shown = page.locator("svg.chart:visible").count()
            assert shown == page.locator(".chart-switch").count(), "one drawing of each chart is shown"
            if found:
                problems[f"{width} px, study {study.id}"] = found
    context.close()
    assert not problems, problems
