"""Optional answers: "both are bad" (a tie in the statistics, told apart in the answers export), reason tags
and a comment per pair; all off unless the study asks, never required unless it says so."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import VoteChoice
from app.services import exports
from app.services.answers import AnswerOptionsError, validate_answer_options
from app.services.assignments import join, next_assignment
from app.services.results_cache import get_results
from app.services.votes import InvalidChoices, submit_vote
from tests.factories import NO_CHECKS, make_pairs, make_study

OPTIONS = {"both_bad": True, "reason_tags": ["blurry", "flicker"], "comment": "optional"}


def _study(session, **options):
    study = make_study(session, n_prompts=4, pairs_per_session=4, votes_per_pair=3, qc=NO_CHECKS,
                       answer_options=validate_answer_options(options).as_json() if options else None)
    make_pairs(session, study)
    session.commit()
    return study


def _vote(session, study, ev, answer, **kw):
    a = next_assignment(session, evaluator_id=ev.id)
    result = submit_vote(session, assignment_token=a.token, evaluator_id=ev.id,
                         choices={c.key: answer for c in study.criteria}, **kw)
    session.commit()
    return result


def test_both_bad_is_a_tie_in_the_statistics_and_apart_in_the_answers_export(session):
    study = _study(session, **OPTIONS)
    for i in range(3):
        ev = join(session, invite_token=study.invite_token)
        session.commit()
        _vote(session, study, ev, "both_bad", reason_tags=["flicker"], comment=f"both smeared {i}")
        _vote(session, study, ev, "left")
        _vote(session, study, ev, "tie")
    stored = session.scalars(select(VoteChoice).where(VoteChoice.side == "both_bad")).all()
    assert stored and all(c.outcome == "tie" and c.winner_model_id is None for c in stored)
    results = get_results(session, study_id=study.id)  # the statistics run on it
    assert results is not None
    raw = exports.raw_votes_frame(session, study=study)
    assert set(raw["side"]) <= {"left", "right", "tie"}  # the statistics' input says tie
    answers = exports.answers_frame(session, study=study)
    assert len(answers) == 3
    assert set(answers["both_bad_criteria"]) == {";".join(c.key for c in study.criteria)}
    assert set(answers["reason_tags"]) == {"flicker"} and answers["comment"].str.startswith("both smeared").all()
    n_ties = int((raw["winner"] == "tie").sum())
    assert n_ties == 2 * 3 * len(study.criteria)  # both-bad votes and ties alike


def test_nothing_is_required_unless_the_study_says_so(session):
    study = _study(session, **OPTIONS)
    ev = join(session, invite_token=study.invite_token)
    session.commit()
    assert _vote(session, study, ev, "right").status == "recorded"  # no tags, no comment
    strict = _study(session, both_bad=False, reason_tags=["blurry"], tags_required=True, comment="required")
    ev2 = join(session, invite_token=strict.invite_token)
    session.commit()
    with pytest.raises(InvalidChoices, match="comment"):
        _vote(session, strict, ev2, "left", reason_tags=["blurry"])
    session.rollback()
    with pytest.raises(InvalidChoices, match="reason"):
        _vote(session, strict, ev2, "left", comment="fine")
    session.rollback()
    with pytest.raises(InvalidChoices, match="left, right or tie"):  # both_bad not offered here
        _vote(session, strict, ev2, "both_bad", comment="x", reason_tags=["blurry"])
    session.rollback()
    assert _vote(session, strict, ev2, "left", comment="fine", reason_tags=["blurry"]).status == "recorded"


def test_a_study_without_options_refuses_extras(session):
    study = _study(session)
    ev = join(session, invite_token=study.invite_token)
    session.commit()
    with pytest.raises(InvalidChoices, match="left, right or tie"):
        _vote(session, study, ev, "both_bad")
    session.rollback()
    with pytest.raises(InvalidChoices, match="does not take comments"):
        _vote(session, study, ev, "left", comment="hello")
    session.rollback()
    with pytest.raises(InvalidChoices, match="Unknown reason tag"):
        _vote(session, study, ev, "left", reason_tags=["made-up"])


def test_bad_options_are_refused_in_words():
    with pytest.raises(AnswerOptionsError) as exc:
        validate_answer_options({"both_bad": "yes", "comment": "maybe", "reason_tags": ["a", "a"], "x": 1})
    text = " ".join(exc.value.errors)
    for part in ("unknown answer option", "both_bad must be true or false", "comment must be one of",
                 "must not repeat"):
        assert part in text


def test_the_pair_page_offers_them_and_keeps_them_on_a_missing_answer(client, session):
    from bs4 import BeautifulSoup

    study = _study(session, **OPTIONS)
    invite = study.invite_token
    keys = [c.key for c in study.criteria]
    session.commit()  # reading them opened a transaction; SQLite's would hold the write lock the join needs
    page = client.get(f"/join/{invite}")
    csrf = BeautifulSoup(page.text, "html.parser").find("input", attrs={"name": "csrf_token"})["value"]
    client.post(f"/join/{invite}", data={"csrf_token": csrf, "consent": "yes"})
    page = client.get("/e/pair")
    soup = BeautifulSoup(page.text, "html.parser")
    assert soup.find("input", attrs={"name": f"c_{keys[0]}", "value": "both_bad"}) is not None
    assert {i["value"] for i in soup.select("input[name=reason_tag]")} == {"blurry", "flicker"}
    assert soup.find("textarea", attrs={"name": "comment"}).get("required") is None
    data = {"csrf_token": soup.find("input", attrs={"name": "csrf_token"})["value"],
            "assignment": soup.find("input", attrs={"name": "assignment"})["value"],
            "comment": "left one flickers", "reason_tag": ["flicker"],
            **{f"c_{k}": "both_bad" for k in keys[1:]}}
    again = client.post("/e/vote", data=data, follow_redirects=False)
    assert again.status_code == 422
    soup = BeautifulSoup(again.text, "html.parser")
    assert soup.find("textarea", attrs={"name": "comment"}).text == "left one flickers"
    assert soup.find("input", attrs={"name": "reason_tag", "value": "flicker"}).has_attr("checked")
    data[f"c_{keys[0]}"] = "both_bad"
    assert client.post("/e/vote", data=data, follow_redirects=False).status_code == 303


def test_clean_battle_says_tie_bothbad_where_fastchat_would(session):
    import json

    from app.stats.clean_battle import read_clean_battle

    study = _study(session, **OPTIONS)
    keys = [c.key for c in study.criteria]
    ev = join(session, invite_token=study.invite_token)
    session.commit()
    _vote(session, study, ev, "both_bad")  # every criterion both bad
    _vote(session, study, ev, "tie")  # an ordinary tie
    a = next_assignment(session, evaluator_id=ev.id)  # both bad on one criterion only, a left win elsewhere
    submit_vote(session, assignment_token=a.token, evaluator_id=ev.id,
                choices={k: ("both_bad" if k == keys[0] else "left") for k in keys})
    session.commit()
    first = json.loads(exports.clean_battle(session, study=study, criterion=keys[0]).body)
    assert [r["winner"] for r in first][:2] == ["tie (bothbad)", "tie"]
    assert first[2]["winner"] == "tie (bothbad)"
    second = json.loads(exports.clean_battle(session, study=study, criterion=keys[1]).body)
    assert [r["winner"] for r in second][:2] == ["tie (bothbad)", "tie"]
    assert second[2]["winner"] in ("model_a", "model_b")
    overall = json.loads(exports.clean_battle(session, study=study, criterion="overall").body)
    assert [r["winner"] for r in overall][:2] == ["tie (bothbad)", "tie"]
    assert overall[2]["winner"] in ("model_a", "model_b")
    # Read back (ours or FastChat's tooling), it is a tie again.
    assert list(read_clean_battle(first)["winner"]) == ["tie", "tie", "tie"]
