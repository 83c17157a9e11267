"""Results dashboard, API and downloads over HTTP: who may see what, and the page shows the statistics' numbers."""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from app.services.results_cache import get_results
from app.services.results_view import OVERALL_LABEL
from tests.app.services.results_factory import voted_study
from tests.factories import make_study, make_user
from tests.support.web import login

PASSWORD = "correct horse battery"


@pytest.fixture
def study(session):
    study = voted_study(session, n_prompts=4, n_evaluators=4)
    session.commit()
    return study


def _results(session, study) -> dict:
    """The statistics as the app computes them; the read transaction is ended so the app can write (SQLite)."""
    results = get_results(session, study_id=study.id).results
    session.commit()  # ends the read transaction without expiring loaded rows
    return results


def _as(client, session, role, owning=None):
    """Log in a new user of this role; a researcher sees only studies they own (``owning``)."""
    user = make_user(session, role=role)
    if owning is not None:
        owning.created_by_id = user.id
    session.commit()
    login(client, user.email, PASSWORD)
    return user


def test_logged_out_is_redirected_and_api_says_401(client, study):
    r = client.get(f"/studies/{study.id}/results", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"/studies/{study.id}/export/votes.csv", follow_redirects=False).status_code == 303
    assert client.get(f"/api/v1/studies/{study.id}/results").status_code == 401


def test_researcher_sees_dashboard_but_cannot_download(client, session, study):
    _as(client, session, "researcher", owning=study)
    r = client.get(f"/studies/{study.id}/results")
    assert r.status_code == 200
    assert "Downloads" not in r.text
    for path in ("votes.csv", "votes.parquet", "clips.json", "results.json", "report.html",
                 "clean_battle/overall_quality.json"):
        assert client.get(f"/studies/{study.id}/export/{path}").status_code == 403, path


def test_dashboard_numbers_equal_compute_results(client, session, study):
    _as(client, session, "admin")
    r = client.get(f"/studies/{study.id}/results")
    assert r.status_code == 200
    results = _results(session, study)
    soup = BeautifulSoup(r.text, "html.parser")
    assert results["headline"] in soup.select_one(".headline").get_text()
    rows = soup.select("#criteria table tbody tr")
    labels = {c.key: c.label for c in study.criteria}
    session.commit()  # ends the read transaction without expiring loaded rows
    expected = [(labels[rec["criterion"]], rec["wins_a"], rec["ties"], rec["wins_b"], rec["n"])
                for rec in results["criteria"]]
    expected += [(OVERALL_LABEL, rec["wins_a"], rec["ties"], rec["wins_b"], rec["n"]) for rec in results["overall"]]
    got = [tuple([tds[0].get_text(strip=True)] + [int(td.get_text()) for td in tds[1:5]])
           for tds in (row.find_all("td") for row in rows)]
    assert got == expected
    pref = soup.select("#preference table tbody tr")
    for row, rec in zip(pref, results["criteria"], strict=False):
        cells = [td.get_text(strip=True) for td in row.find_all("td")]
        assert cells[1] == f"{100 * rec['pref_rate_a']:.1f}%"
        assert ("★" in cells[6]) == rec["significant"]
        lo, hi = rec["ci"]
        assert cells[2].rstrip("*") == f"{100 * lo:.0f}%–{100 * hi:.0f}%"  # the verdict's own interval
    forest = soup.select_one("#preference svg").get_text(" ")
    for rec in results["criteria"]:
        lo, hi = rec["ci"]
        assert f"{100 * rec['pref_rate_a']:.0f}% [{100 * lo:.0f}%–{100 * hi:.0f}%]" in forest
    agreement = [[td.get_text(strip=True) for td in tr.find_all("td")] for tr in soup.select("#agreement tbody tr")]
    assert [row[1] for row in agreement[:-1]] == [
        "–" if results["agreement"][rec["criterion"]]["alpha"] is None
        else f"{results['agreement'][rec['criterion']]['alpha']:.3f}" for rec in results["criteria"]]
    # Every chart is an accessible SVG with its data table beside it.
    for svg in soup.select("#criteria svg, #preference svg, #themes svg, #cost svg, #timeline svg"):
        assert svg["role"] == "img" and svg.find("title").get_text()
    assert "Downloads" in r.text
    api = client.get(f"/api/v1/studies/{study.id}/results").json()
    assert api["results"] == results


def test_include_flagged_switch_changes_the_numbers(client, session, study):
    from app.models import Evaluator

    ev = session.query(Evaluator).filter_by(study_id=study.id).first()
    ev.flagged, ev.flag_reasons = True, ["failed 2 of 2 attention checks"]
    session.commit()
    _as(client, session, "admin")
    excluded = client.get(f"/studies/{study.id}/results")
    included = client.get(f"/studies/{study.id}/results?include_flagged=1")
    assert "failed 2 of 2 attention checks" in excluded.text
    n_ex = int(re.search(r"([\d,]+) votes from", excluded.text).group(1))
    n_in = int(re.search(r"([\d,]+) votes from", included.text).group(1))
    assert (n_ex, n_in) == (12, 16)  # 4 evaluators x 4 pairs; one evaluator flagged
    fp = client.get(f"/api/v1/studies/{study.id}/results/fingerprint").json()
    assert fp["votes"] == 16


def test_empty_study_is_a_friendly_empty_state(client, session):
    study = make_study(session)
    session.commit()
    _as(client, session, "admin")
    r = client.get(f"/studies/{study.id}/results")
    assert r.status_code == 200 and "No votes yet." in r.text
    assert client.get(f"/studies/{study.id}/export/report.html").status_code == 200
    assert client.get("/studies/99999/results").status_code == 404


def test_study_page_shows_the_results_panel(client, session, study):
    _as(client, session, "researcher", owning=study)
    r = client.get(f"/studies/{study.id}")
    assert r.status_code == 200
    assert f'href="/studies/{study.id}/results"' in r.text
    assert _results(session, study)["headline"] in r.text


def test_admin_downloads(client, session, study):
    _as(client, session, "admin")
    r = client.get(f"/studies/{study.id}/export/votes.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"] and study.slug in r.headers["content-disposition"]
    assert r.text.count("\n") == 1 + 16 * 6
    report = client.get(f"/studies/{study.id}/export/report.html")
    assert report.status_code == 200 and "<svg" in report.text
    assert client.get(f"/studies/{study.id}/export/votes.xlsx").status_code == 404


def test_three_models_show_ratings_from_compute_results(client, session):
    study = voted_study(session, n_prompts=4, n_evaluators=3, models=("m1", "m2", "m3"))
    session.commit()
    _as(client, session, "researcher", owning=study)
    r = client.get(f"/studies/{study.id}/results")
    assert r.status_code == 200
    ratings = _results(session, study)["ratings"]["overall"]["ratings"]
    soup = BeautifulSoup(r.text, "html.parser")
    rows = [[td.get_text(strip=True) for td in tr.find_all("td")]
            for tr in soup.select("#ratings table")[0].select("tbody tr")]
    assert [(row[1], row[2]) for row in rows] == [(x["model"], f"{x['rating']:.0f}") for x in ratings]
    assert soup.select_one("#ratings svg")["role"] == "img"


def test_page_views_reuse_the_cache_until_a_vote_arrives(client, session, study):
    from app.models import Evaluator, Pair
    from app.services.results_cache import get_cache
    from tests.app.services.results_factory import cast_vote

    _as(client, session, "researcher", owning=study)
    first = client.get(f"/api/v1/studies/{study.id}/results/fingerprint").json()["fingerprint"]
    client.get(f"/studies/{study.id}/results")
    computed = get_cache().computations
    client.get(f"/studies/{study.id}/results")
    client.get(f"/api/v1/studies/{study.id}/results")
    assert get_cache().computations == computed
    pair = session.query(Pair).filter_by(study_id=study.id).first()
    ev = Evaluator(study_id=study.id)  # a new evaluator: nobody votes twice on one pair
    session.add(ev)
    session.flush()
    cast_vote(session, pair=pair, evaluator=ev, choices={c.key: "left" for c in study.criteria}, a_left=True)
    session.commit()
    assert client.get(f"/api/v1/studies/{study.id}/results/fingerprint").json()["fingerprint"] != first
    r = client.get(f"/studies/{study.id}/results")
    assert get_cache().computations == computed + 1 and "17 votes from" in r.text


def test_the_cost_section_puts_model_seconds_first_and_shows_the_wall_beside(client, session, study):
    from sqlalchemy import select

    from app.models import Clip

    _as(client, session, "admin")
    lightning = study.models[0].id
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")):
        device = 0.63 if clip.model_id == lightning else 4.49  # H100 device seconds, plus 1.85 s of GIF
        clip.denoise_seconds, clip.decode_seconds, clip.encode_seconds = device - 0.24, 0.24, 1.85
        clip.wall_seconds = device + 1.85
    # The first clip after a pipeline load (kernels compiled, caches filled): reported, not in the medians.
    warm = session.scalars(select(Clip).where(Clip.model_id == lightning, Clip.variant == "")).first()
    warm.denoise_seconds, warm.wall_seconds = 40.0, 45.0
    warm.generation = {**(warm.generation or {}), "warmup": True}
    session.commit()
    soup = BeautifulSoup(client.get(f"/studies/{study.id}/results").text, "html.parser")
    rows = {tds[0]: tds[2:5] for tds in ([td.get_text(strip=True) for td in tr.find_all("td")]
                                          for tr in soup.select("#cost tbody tr"))}
    assert rows[study.models[0].name] == ["1", "0.63", "2.48"]
    assert rows[study.models[1].name] == ["0", "4.49", "6.34"]
    assert "model seconds per clip" in soup.select_one("#cost svg").get_text(" ")


def test_the_dashboard_warns_when_one_models_clips_were_compressed_harder(client, session, study):
    from sqlalchemy import select

    from app.models import Clip

    _as(client, session, "admin")
    first = study.models[0].id
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")):
        clip.origin = "generated"
        clip.lossy_level, clip.psnr_db = (30, 36.0) if clip.model_id == first else (10, 41.0)
    session.commit()
    soup = BeautifulSoup(client.get(f"/studies/{study.id}/results").text, "html.parser")
    rows = [[td.get_text(strip=True) for td in tr.find_all("td")] for tr in soup.select("#compression tbody tr")]
    assert [(r[2], r[4]) for r in rows] == [("30", "36.0"), ("10", "41.0")]
    pairs = [[td.get_text(strip=True) for td in tr.find_all("td")] for tr in soup.select("#compression-pairs tbody tr")]
    assert pairs and {(r[3], r[4]) for r in pairs} == {("30 / 10", "36.0 / 41.0")}
    warning = soup.select_one("#cost .pill.warn").parent.get_text(" ", strip=True)
    assert f"{study.models[0].name}'s clip was served at a harsher GIF lossy level" in warning
