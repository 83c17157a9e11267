"""``blindpair queue`` / ``blindpair worker`` argument handling, and the compose file's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from app import config
from app.cli import app as cli
from app.migrate import upgrade
from app.models import Clip
from tests.factories import NO_CHECKS, make_study
from tests.support.servers import free_port
from worker import tasks

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def demo_study_id():
    upgrade()
    from app.db import session_scope

    with session_scope() as session:
        study = make_study(session, models=("smooth", "jittery"), n_prompts=2, qc=NO_CHECKS)
        study.models[0].preset, study.models[1].preset = "demo-smooth", "demo-jittery"
        return study.id


def clips() -> int:
    from app.db import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count(Clip.id)))


def test_queue_then_wait_reports_done(demo_study_id):
    result = runner.invoke(cli, ["queue", "--study", str(demo_study_id), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert "8 new clip(s) queued" in result.output and "blindpair worker" in result.output
    for clip_id in range(1, 9):
        assert tasks.run_clip(clip_id) == "done"
    result = runner.invoke(cli, ["queue", "--study", str(demo_study_id), "--seeds", "0,1", "--wait", "--poll", "0"])
    assert result.exit_code == 0, result.output
    assert "8 already done" in result.output and "All 8 clip(s) done." in result.output
    assert clips() == 8


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--study", "999"], 2, "There is no study '999'"),
    (["--seeds", "a,b"], 2, "--seeds must be whole numbers"),
    (["--theme", "space"], 2, "no prompts with theme 'space'"),
    (["--prompt", "p404"], 2, "unknown prompt id(s) for this study: p404"),
])
def test_queue_refusals_change_nothing(demo_study_id, args, code, needle):
    argv = ["queue", *(["--study", str(demo_study_id)] if "--study" not in args else []), *args]
    result = runner.invoke(cli, argv)
    assert result.exit_code == code and needle in result.output, result.output
    assert clips() == 0


def test_queue_with_the_broker_down_says_so(demo_study_id, monkeypatch):
    monkeypatch.setenv("BLINDPAIR_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    config.get_settings.cache_clear()
    result = runner.invoke(cli, ["queue", "--study", str(demo_study_id)])
    assert result.exit_code == 3 and "Not queued" in result.output and "cannot be reached" in result.output
    assert "Traceback" not in result.output and clips() == 0


def test_worker_refuses_a_bad_device(demo_study_id):
    result = runner.invoke(cli, ["worker", "--device", "tpu"])
    assert result.exit_code == 2 and "--device must be cuda, cuda:N or cpu" in result.output


def test_compose_has_the_services_a_gpu_deployment_needs():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "seaweedfs", "web", "worker"}
    # The S3 store is opt-in (profile "s3"); web and worker read the same storage settings, aimed at it.
    assert services["seaweedfs"]["profiles"] == ["s3"] and "-s3" in services["seaweedfs"]["command"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["BLINDPAIR_STORAGE"] == "${BLINDPAIR_STORAGE:-local}"
        assert "http://seaweedfs:8333" in env["BLINDPAIR_S3_ENDPOINT_URL"]
    assert all("healthcheck" in s for s in services.values())
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "media:/data" in services["worker"]["volumes"] and "media:/data" in services["web"]["volumes"]
    assert "models:/models" in services["worker"]["volumes"]
    assert "blindpair db upgrade" in " ".join(services["web"]["command"])
    assert services["worker"]["environment"]["BLINDPAIR_BROKER_URL"].startswith("redis://")
    targets = {line.split(" AS ")[1].strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
               if line.startswith("FROM ")}
    assert targets == {services["web"]["build"]["target"], services["worker"]["build"]["target"]}


def _deploy_commands() -> list[list[str]]:
    """Every ``blindpair ...`` command line in docker-compose.yml and the Dockerfile: exec-form lists, ``sh -c``
    strings and the compose file's how-to comments (``docker compose ... blindpair ...``)."""
    import json
    import re
    import shlex

    found: list[list[str]] = []
    for name in ("docker-compose.yml", "Dockerfile"):
        for line in (ROOT / name).read_text().splitlines():
            body = line.strip()
            if body.startswith("#") and "docker compose" not in body:
                continue  # prose, not a command
            if body.startswith(("CMD [", "command: [")):
                argv = json.loads(body.split(" ", 1)[1])
                if argv[0] == "blindpair":
                    found.append(argv[1:])
                    continue
            for match in re.finditer(r"(?<![\w@/-])blindpair ([a-z][\w-]*(?: [^\s\"&;]+)*)", body):
                found.append(shlex.split(match.group(1)))
    return found


def _parse_only(argv: list[str]) -> None:
    """Parse argv with the real CLI (sub-commands, options, types, required arguments) without running it."""
    import typer.main

    command = typer.main.get_command(cli)
    ctx = command.make_context("blindpair", list(argv), resilient_parsing=False)
    while hasattr(command, "resolve_command"):
        _, command, rest = command.resolve_command(ctx, ctx._protected_args + ctx.args)
        ctx = command.make_context(command.name, rest, parent=ctx)


def test_deploy_files_use_commands_the_cli_accepts():
    # typer 0.29 vendors click; every usage error it raises (unknown command or option, bad value, missing
    # argument) derives from TyperException.
    from typer.exceptions import TyperException

    commands = _deploy_commands()
    assert ["db", "upgrade"] in commands and ["worker", "--device", "cuda", "--name", "blindpair"] in commands
    assert any(c[:2] == ["user", "add"] for c in commands)  # the first admin, in the compose header
    for argv in commands:
        try:
            _parse_only(argv)
        except TyperException as exc:
            pytest.fail(f"`blindpair {' '.join(argv)}` is not a valid command: {exc.format_message()}")
    with pytest.raises(TyperException, match="No such command 'create'"):  # the checker itself catches a wrong command
        _parse_only(["user", "create", "--email", "you@lab.org", "--role", "admin"])
