"""The leave-one-address-out table and the swarm flag, on votes written straight to the tables (issue 12)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.models import Evaluator
from app.services import exports
from app.services.attention import QCSettings
from app.services.qc import CLUSTER_REASON, refresh_cluster_flags, refresh_flags
from app.services.results_cache import get_results
from app.services.results_view import study_view
from app.services.trust import cluster_sensitivity
from tests.app.services.results_factory import swarm_study
from tests.app.web.test_results import PASSWORD
from tests.conftest import BACKENDS
from tests.factories import make_user
from tests.support.web import login


def test_one_address_that_decides_every_verdict_is_named(session):
    study = swarm_study(session, swarm=20, honest=8, n_prompts=24)
    cached = get_results(session, study_id=study.id)
    assert all(r["significant"] for r in cached.results["criteria"])  # with the swarm counted: "decided"
    table = cluster_sensitivity(session, study_id=study.id, cached=cached)
    assert table["clusters"] == 9 and table["multi_session_clusters"] == 1 and table["largest"] == 20
    assert len(table["rows"]) == 7 and table["checked"] == 9  # every address of this small study was tried
    for row in table["rows"]:
        assert row["significant"] and row["leader"] == "lightning"
        assert row["decided_by"] == [{"cluster": "A1", "sessions": 20, "user_agents": 1, "votes": 20 * 24,
                                      "significant_without": False, "leader_without": None}]
    assert "One address decides 7 verdicts" in table["warning"] and "address A1" in table["warning"]
    assert cluster_sensitivity(session, study_id=study.id, cached=cached) is table  # once per results


def test_verdicts_that_hold_without_any_one_address_say_so(session):
    study = swarm_study(session, swarm=0, honest=12)
    table = cluster_sensitivity(session, study_id=study.id, cached=get_results(session, study_id=study.id))
    assert table["warning"] is None and table["multi_session_clusters"] == 0
    assert all(not r["decided_by"] for r in table["rows"])


def test_the_dashboard_the_api_and_the_export_carry_it(client, session):
    study = swarm_study(session, swarm=20, honest=8, n_prompts=24)
    admin = make_user(session, role="admin")
    session.commit()
    view, _ = study_view(session, study=study)
    assert view["sensitivity"]["warning"]
    session.commit()  # end the read: on SQLite the test's open transaction would hold the app's writes
    login(client, admin.email, PASSWORD)
    page = client.get(f"/studies/{study.id}/results")
    assert page.status_code == 200 and "One address decides" in page.text and 'id="sensitivity"' in page.text
    api = client.get(f"/api/v1/studies/{study.id}/results").json()
    assert api["sensitivity"]["rows"][0]["decided_by"][0]["cluster"] == "A1"
    export = json.loads(exports.results_json(session, study=study).body)
    assert export["sensitivity"]["warning"] == api["sensitivity"]["warning"]


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_the_swarm_flag_is_kept_between_checks_and_dropped_with_qc(session):
    study = swarm_study(session, swarm=6, honest=20)
    assert refresh_cluster_flags(session, study_id=study.id) == 6
    swarm = session.scalars(select(Evaluator).where(Evaluator.ip_hash == "swarm")).all()
    assert all(e.flagged and e.flag_reasons[0].startswith(CLUSTER_REASON) for e in swarm)
    assert not session.scalars(select(Evaluator).where(Evaluator.flagged, Evaluator.ip_hash != "swarm")).all()
    # The per-vote refresh (own rules only) keeps the cross-session reason ...
    assert refresh_flags(session, evaluator_id=swarm[0].id)[0].startswith(CLUSTER_REASON)
    # ... unless QC is off, and switching the check off clears it at the next study-wide check.
    assert refresh_flags(session, evaluator_id=swarm[0].id, settings=QCSettings(enabled=False)) == []
    assert refresh_cluster_flags(session, study_id=study.id, settings=QCSettings(cluster_check_alpha=0)) == 5
    session.expire_all()
    assert not any(e.flagged for e in session.scalars(select(Evaluator)))


@pytest.mark.parametrize("bad", [{"sessions_per_address": -1}, {"abandon_after_minutes": 1.5},
                                 {"cluster_check_alpha": 0.5}, {"sessions_per_address": "many"}])
def test_the_new_qc_settings_are_checked(bad):
    from app.services.attention import QCSettingsError, validate_qc

    with pytest.raises(QCSettingsError):
        validate_qc(bad)
    assert validate_qc({"sessions_per_address": 0, "abandon_after_minutes": 0, "cluster_check_alpha": 0}) == {
        "sessions_per_address": 0, "abandon_after_minutes": 0, "cluster_check_alpha": 0.0}
