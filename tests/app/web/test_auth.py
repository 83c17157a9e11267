
import pytest

from tests.factories import make_user
from tests.support.web import csrf_of, login_form

PASSWORD = "correct horse battery"


@pytest.fixture
def researcher(session):
    user = make_user(session, role="researcher", email="r@lab.org", password=PASSWORD)
    session.commit()
    return user


def test_pages_redirect_to_login_and_api_answers_401(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
    r = client.get("/studies/new", follow_redirects=False)
    assert r.headers["location"] == "/login?next=/studies/new"
    r = client.get("/api/v1/studies")
    assert r.status_code == 401 and "log in" in r.json()["detail"].lower()


def test_login_and_logout(client, researcher):
    r = login_form(client, "R@LAB.org", PASSWORD, next_url="/studies/new")
    assert r.status_code == 303 and r.headers["location"] == "/studies/new"
    page = client.get("/")
    assert page.status_code == 200 and "r@lab.org" in page.text
    r = client.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_wrong_password_and_unknown_email_get_the_same_message(client, researcher):
    for email, password in (("r@lab.org", "wrong password"), ("nobody@lab.org", PASSWORD)):
        r = login_form(client, email, password)
        assert r.status_code == 400
        assert "Email or password is wrong." in r.text
        assert f'value="{email}"' in r.text  # the email is kept
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"])
def test_next_only_goes_to_local_paths(client, researcher, target):
    r = login_form(client, "r@lab.org", PASSWORD, next_url=target)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_forms_without_csrf_token_are_refused(client, researcher):
    client.get("/login")
    r = client.post("/login", data={"email": "r@lab.org", "password": PASSWORD})
    assert r.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303
    login_form(client, "r@lab.org", PASSWORD)
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200  # still logged in


def test_repeated_failed_logins_are_throttled(client, researcher):
    for _ in range(10):
        assert login_form(client, "r@lab.org", "wrong password").status_code == 400
    r = login_form(client, "r@lab.org", PASSWORD)  # even the right password waits now
    assert r.status_code == 429 and "Too many failed logins" in r.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_only_admins_manage_users(client, session, researcher):
    make_user(session, role="admin", email="boss@lab.org", password=PASSWORD)
    session.commit()
    login_form(client, "r@lab.org", PASSWORD)
    assert client.get("/admin/users").status_code == 403
    assert client.get("/api/v1/users").status_code == 403
    assert "/admin/users" not in client.get("/").text  # no link to what they cannot use
    login_form(client, "boss@lab.org", PASSWORD)
    assert client.get("/admin/users").status_code == 200
    assert client.get("/api/v1/users").status_code == 200


def test_login_page_says_how_to_make_the_first_admin(client, session):
    assert "blindpair user add you@lab.org --role admin" in client.get("/login").text
    make_user(session, role="admin")
    session.commit()
    assert "blindpair user add" not in client.get("/login").text


def test_passwords_never_reach_the_logs(client, session, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    make_user(session, email="logme@example.org", password="s3cret-right-one")
    session.commit()
    login_form(client, "logme@example.org", "s3cret-wrong-one")
    login_form(client, "logme@example.org", "s3cret-right-one")
    client.post("/api/v1/login", json={"email": "logme@example.org", "password": "s3cret-api-one"})
    assert caplog.records, "nothing was logged at DEBUG: the test would not see a leak"
    for secret in ("s3cret-right-one", "s3cret-wrong-one", "s3cret-api-one"):
        assert secret not in caplog.text
