"""An evaluator in a real Chromium: join, consent, a missing answer, keyboard-only pair, completion code;
then the stored votes must match what was clicked, read in model space through the clips shown on each side."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.db import get_sessionmaker
from app.models import Assignment, Clip, Criterion, Evaluator, StudyModel, Vote, VoteChoice
from tests.factories import make_pairs, make_study

pytestmark = pytest.mark.browser

SIDE_LABEL = {"left": "Left is better", "right": "Right is better", "tie": "Indistinguishable"}


def _media_token(src: str) -> str:
    return src.split("/m/", 1)[1].split("?", 1)[0]


def _shown(page) -> dict:
    """What this pair page shows: assignment token and the media token on each side."""
    return {
        "assignment": page.locator("input[name=assignment]").input_value(),
        "left": _media_token(page.locator("#clip-left").get_attribute("src")),
        "right": _media_token(page.locator("#clip-right").get_attribute("src")),
    }


def _wait_until_played(page) -> None:
    expect(page.locator("#submit-vote")).to_be_enabled(timeout=15_000)


def _click(page, key: str, side: str) -> None:
    page.locator(f"#q-{key}").get_by_label(SIDE_LABEL[side]).check()


def _keyboard_pair(page, keys: list[str], answers: dict[str, str]) -> None:
    """Answer with Tab, arrow keys and Space only, then send with Enter."""
    page.locator("body").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "replay"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "pause-gif"
    for key in keys:
        page.keyboard.press("Tab")  # into the next radio group (its first radio when none is chosen)
        assert page.evaluate("document.activeElement.name") == f"c_{key}"
        if answers[key] == "left":
            page.keyboard.press("Space")
        elif answers[key] == "right":
            page.keyboard.press("ArrowRight")
        else:
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
        assert page.locator(f"#c_{key}_{answers[key]}").is_checked()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "submit-vote"
    page.keyboard.press("Enter")


def test_evaluator_session_in_a_real_browser(session, live_server, page):
    study = make_study(session, models=("zz-model-alpha", "zz-model-beta"), n_prompts=4, pairs_per_session=3)
    make_pairs(session, study)
    keys = [c.key for c in study.criteria]
    invite = study.invite_token
    session.commit()

    page.goto(f"{live_server}/join/{invite}?PROLIFIC_PID=browser-pid-1")
    expect(page.get_by_role("heading", name="Compare short videos")).to_be_visible()
    expect(page.get_by_text("Which video moves more plausibly")).to_be_visible()
    page.get_by_label("I have read the above and agree to take part.").check()
    page.get_by_role("button", name="Start").click()

    clicked: dict[str, dict] = {}

    # Pair 1: one criterion left out -> the page names it and keeps the other answers.
    expect(page.get_by_text("Pair 1 of 3")).to_be_visible()
    shown = _shown(page)
    _wait_until_played(page)
    answers = dict(zip(keys, ["left", "right", "tie", "left", "right", "left"], strict=True))
    for key in keys:
        if key != "motion_amplitude":
            _click(page, key, answers[key])
    page.locator("#submit-vote").click()
    error = page.locator("#vote-error")
    expect(error).to_contain_text("Missing: Motion amplitude.")
    for key in keys:
        if key != "motion_amplitude":
            assert page.locator(f"#c_{key}_{answers[key]}").is_checked(), f"{key} was not kept"
    assert _shown(page) == shown  # same pair, same sides
    _click(page, "motion_amplitude", answers["motion_amplitude"])
    _wait_until_played(page)
    page.locator("#submit-vote").click()
    clicked[shown["assignment"]] = {**shown, "answers": answers}

    # Pair 2: keyboard only.
    expect(page.get_by_text("Pair 2 of 3")).to_be_visible()
    shown = _shown(page)
    _wait_until_played(page)
    answers = dict(zip(keys, ["right", "tie", "left", "right", "tie", "right"], strict=True))
    _keyboard_pair(page, keys, answers)
    clicked[shown["assignment"]] = {**shown, "answers": answers}

    # Pair 3: "Replay both" reloads both clips together; then a double click sends one vote.
    expect(page.get_by_text("Pair 3 of 3")).to_be_visible()
    shown = _shown(page)
    _wait_until_played(page)
    page.get_by_role("button", name="Replay both").click()
    for side in ("left", "right"):  # both swapped to the same fresh query, i.e. restarted together
        fresh = re.compile(re.escape(f"/m/{shown[side]}?r=1") + "$")
        expect(page.locator(f"#clip-{side}")).to_have_attribute("src", fresh)
    answers = dict(zip(keys, ["tie", "left", "left", "tie", "right", "left"], strict=True))
    for key in keys:
        _click(page, key, answers[key])
    page.locator("#submit-vote").dblclick()
    clicked[shown["assignment"]] = {**shown, "answers": answers}

    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    code = page.locator("#completion-code").inner_text().strip()
    assert page.errors == [], f"browser console errors (CSP or script): {page.errors}"
    assert [b for b in page.bad_responses if b[1] != "/favicon.ico"] == [(422, "/e/vote")]

    with get_sessionmaker()() as s:
        evaluator = s.scalar(select(Evaluator).where(Evaluator.external_id == "browser-pid-1"))
        assert evaluator.completion_code == code and evaluator.completed_at is not None
        assert len(s.scalars(select(Vote).where(Vote.evaluator_id == evaluator.id)).all()) == 3
        models = {m.id: m.name for m in s.scalars(select(StudyModel))}
        criteria = {c.id: c.key for c in s.scalars(select(Criterion))}
        model_of_token = {c.media_token: models[c.model_id] for c in s.scalars(select(Clip))}
        for token, seen in clicked.items():
            assignment = s.scalar(select(Assignment).where(Assignment.token == token))
            assert assignment.evaluator_id == evaluator.id and assignment.status == "done"
            vote = s.scalar(select(Vote).where(Vote.assignment_id == assignment.id))
            stored = {criteria[c.criterion_id]: c for c in s.scalars(select(VoteChoice).where(
                VoteChoice.vote_id == vote.id))}
            assert set(stored) == set(keys)
            for key, side in seen["answers"].items():
                choice = stored[key]
                assert choice.side == side
                # Model space: the winner is the model whose clip was on the clicked side of the screen.
                expected = None if side == "tie" else model_of_token[seen[side]]
                assert models.get(choice.winner_model_id) == expected, (key, side)
