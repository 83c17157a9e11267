from tests.factories import make_pairs, make_study


def test_factories_build_a_study_with_pairs(session):
    study = make_study(session)
    pairs = make_pairs(session, study)
    session.commit()
    assert len(pairs) == 3
    assert [c.key for c in study.criteria][0] == "text_relevance"


def test_openapi_is_served(client):
    assert client.get("/api/v1/openapi.json").status_code == 200
