import pytest
from sqlalchemy import func, select

from app.models import User
from app.services.users import UserError, authenticate, count_admins, create_user
from tests.conftest import BACKENDS


@pytest.mark.parametrize("db_backend", BACKENDS, indirect=True)
def test_create_and_authenticate(session):
    user = create_user(session, email="  Ada@Lab.org ", password="long enough", role="admin")
    session.commit()
    assert user.email == "ada@lab.org"
    assert user.password_hash.startswith("$argon2") and "long enough" not in user.password_hash
    assert authenticate(session, email="ADA@lab.org", password="long enough").id == user.id
    assert authenticate(session, email="ada@lab.org", password="wrong password") is None
    assert authenticate(session, email="nobody@lab.org", password="long enough") is None
    assert count_admins(session) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"email": "not-an-email"}, "not an email address"),
        ({"role": "owner"}, "Unknown role 'owner'"),
        ({"password": "short"}, "at least 8 characters"),
    ],
)
def test_bad_input_is_refused(session, kwargs, message):
    args = {"email": "a@lab.org", "password": "long enough", "role": "researcher", **kwargs}
    with pytest.raises(UserError, match=message):
        create_user(session, **args)
    assert session.scalar(select(func.count()).select_from(User)) == 0


def test_duplicate_email_is_refused(session):
    create_user(session, email="a@lab.org", password="long enough", role="researcher")
    with pytest.raises(UserError, match="already exists"):
        create_user(session, email="A@LAB.ORG", password="other password", role="admin")
    assert session.scalar(select(func.count()).select_from(User)) == 1
