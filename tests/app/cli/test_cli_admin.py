from sqlalchemy import select
from typer.testing import CliRunner

from app import db
from app.cli import app
from app.cli import serve as serve_module
from app.config import get_settings
from app.db import Base, session_scope
from app.migrate import upgrade
from app.models import Prompt, Study, User
from app.security import verify_password

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, list(args), input=input)


def test_user_add_with_hidden_prompt_and_duplicate(migrated):
    r = run("user", "add", "Ada@Lab.org", "--role", "admin", input="long enough\nlong enough\n")
    assert r.exit_code == 0, r.output
    assert "Created ada@lab.org (admin)" in r.output and "long enough" not in r.output
    with session_scope() as s:
        user = s.scalars(select(User)).one()
        assert user.role == "admin" and verify_password(user.password_hash, "long enough")
    r = run("user", "add", "ada@lab.org", "--password", "another one")
    assert r.exit_code == 1 and "already exists" in r.output
    r = run("user", "add", "b@lab.org", "--role", "owner", "--password", "long enough")
    assert r.exit_code == 2 and "Unknown role 'owner'" in r.output
    r = run("user", "add", "b@lab.org", "--password", "short")
    assert r.exit_code == 1 and "at least 8 characters" in r.output
    with session_scope() as s:
        assert s.scalars(select(User.email)).all() == ["ada@lab.org"]


def test_study_create_prints_id_and_invite_link(migrated):
    r = run("study", "create", "--name", "Fast vs slow", "--model", "lightning:animatediff-lightning-4step",
            "--model", "animatediff", "--theme", "nature", "--votes-per-pair", "3", "--pairs-per-session", "6")
    assert r.exit_code == 0, r.output
    with session_scope() as s:
        study = s.scalars(select(Study)).one()
        assert [(m.name, m.preset) for m in study.models] == [
            ("lightning", "animatediff-lightning-4step"), ("animatediff", "")]
        assert (study.votes_per_pair, study.pairs_per_session) == (3, 6)
        assert set(s.scalars(select(Prompt.theme))) == {"nature"}
        assert f"Created study {study.id}" in r.output
        assert f"{get_settings().base_url}/join/{study.invite_token}" in r.output


def test_study_create_from_a_file_and_refusals(migrated, tmp_path):
    good = tmp_path / "p.csv"
    good.write_text("id,text,theme\np1,a red fox in snow,wildlife\n")
    r = run("study", "create", "--name", "Own", "--model", "a", "--model", "b", "--prompts", str(good))
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,theme\nbad id,a cat,animals\n")
    r = run("study", "create", "--name", "Bad", "--model", "a", "--model", "b", "--prompts", str(bad))
    assert r.exit_code == 1 and "line 2:" in r.output
    r = run("study", "create", "--name", "One model", "--model", "a", "--theme", "nature")
    assert r.exit_code == 1 and "at least two models" in r.output
    with session_scope() as s:
        assert s.scalars(select(Study.name)).all() == ["Own"]


def test_migration_check(tmp_path):
    missing = f"sqlite:///{tmp_path / 'nothing-here.sqlite'}"
    assert "no database" in serve_module.migration_problem(missing).lower()
    assert not (tmp_path / "nothing-here.sqlite").exists()  # the check must not create it

    # Tables made without migrations (no alembic_version): not at head.
    url = f"sqlite:///{tmp_path / 'bare.sqlite'}"
    engine = db.make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    problem = serve_module.migration_problem(url)
    assert "blindpair db upgrade" in problem

    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    upgrade(url=fresh)
    assert serve_module.migration_problem(fresh) is None


def test_serve_refuses_an_unmigrated_database_and_hints_at_an_admin(monkeypatch):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: calls.append((a, kw)))
    r = run("serve")
    assert r.exit_code == 2 and "blindpair db upgrade" in r.output
    assert calls == []

    upgrade()
    r = run("serve", "--port", "8123")
    assert r.exit_code == 0, r.output
    assert "blindpair user add you@lab.org --role admin" in r.output
    assert calls == [(("app.main:create_app",), {"factory": True, "host": "127.0.0.1", "port": 8123,
                                                 "reload": False, "proxy_headers": False,
                                                 "limit_concurrency": 500, "timeout_graceful_shutdown": 10})]

    run("user", "add", "boss@lab.org", "--role", "admin", "--password", "long enough")
    r = run("serve")
    assert r.exit_code == 0 and "No admin account" not in r.output


def test_migration_check_explains_an_unreachable_server():
    from tests.support.servers import free_port

    problem = serve_module.migration_problem(f"postgresql+psycopg://bp:secret@127.0.0.1:{free_port()}/blindpair")
    assert "Cannot read the database" in problem and "BLINDPAIR_DATABASE_URL" in problem
    assert "secret" not in problem  # the password is never printed


def _create_study() -> int:
    assert run("study", "create", "--name", "S", "--model", "a", "--model", "b", "--theme", "nature").exit_code == 0
    with session_scope() as s:
        return s.scalars(select(Study.id)).one()


def test_study_open_and_close(migrated):
    study_id = _create_study()
    r = run("study", "open", str(study_id))
    assert r.exit_code == 0 and "is open" in r.output and "/join/" in r.output
    r = run("study", "close", str(study_id))
    assert r.exit_code == 0 and "is closed" in r.output
    with session_scope() as s:
        assert s.get(Study, study_id).status == "closed"
    r = run("study", "open", "999")
    assert r.exit_code == 1 and "no study with id 999" in r.output


def test_study_qc_shows_and_changes_settings(migrated):
    study_id = _create_study()
    r = run("study", "qc", str(study_id))
    assert r.exit_code == 0 and "attention_rate = 0.1" in r.output and "enabled = True" in r.output
    r = run("study", "qc", str(study_id), "--set", "attention_rate=0.25", "--set", "min_seconds_per_vote=6")
    assert r.exit_code == 0, r.output
    assert "attention_rate = 0.25" in r.output and "min_seconds_per_vote = 6.0" in r.output
    r = run("study", "qc", str(study_id), "--set", "attention_rate=2", "--set", "colour=blue")
    assert r.exit_code == 1 and "Nothing was changed" in r.output
    assert "attention_rate must be between 0 and 0.5" in r.output and "unknown QC setting 'colour'" in r.output
    with session_scope() as s:
        assert s.get(Study, study_id).qc == {"attention_rate": 0.25, "min_seconds_per_vote": 6.0}
