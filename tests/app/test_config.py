import pytest
from pydantic import ValidationError

from app.config import Settings


def test_placeholder_secret_is_refused_in_production():
    with pytest.raises(ValidationError, match="BLINDPAIR_SECRET_KEY"):
        Settings(environment="production", secret_key="change-me")
    with pytest.raises(ValidationError, match="32\\+ characters"):
        Settings(environment="production", secret_key="short")


def test_development_defaults_run_on_a_laptop(tmp_path):
    s = Settings(environment="development", data_dir=tmp_path, database_url="", broker_url="", media_dir=None)
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_broker_url.startswith("sqla+sqlite:///")
    assert s.resolved_media_dir == (tmp_path / "media").resolve()


def test_unknown_environment_is_refused():
    with pytest.raises(ValidationError, match="development, test or production"):
        Settings(environment="staging")
