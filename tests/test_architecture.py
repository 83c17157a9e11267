"""The checks `make test` runs before the suite (import contracts, types) fail on what they exist to catch.

Each case copies the packages into a temporary folder, breaks one rule there, and runs the real checker with
the project's own configuration; the working tree is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _copy(tmp_path: Path, *parts: str) -> Path:
    for part in parts:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp_path / part)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the copy, not the editable install, is what grimp must find.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(BIN / "lint-imports"), "--config", "pyproject.toml", "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def _broken_contracts(output: str) -> set[str]:
    text = " ".join(output.split())  # lint-imports wraps long contract names over lines
    return {name for name in _CONTRACTS if f"{name} BROKEN" in text}


_CONTRACTS = [
    "Entry points above request plumbing above services above the domain core",
    "The HTML pages, the JSON API and the CLI are independent of each other",
    "Services never import the task queue, the GPU engine or the web framework",
    "Statistics, media and prompts are pure: no database, web framework, task queue or GPU stack",
    "Statistics take every parameter as an argument: not even the settings",
    "No import cycles between sibling modules",
    "The worker: Celery tasks above the generation engine above the model presets",
]


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_imports(_copy(tmp_path, "app", "worker"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert _broken_contracts(result.stdout) == set()


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the import cycle issue #18 found: services knowing the task queue
        ("app/services/generation.py", "from worker.celery_app import send_generate  # noqa",
         {"Services never import the task queue, the GPU engine or the web framework",
          "Entry points above request plumbing above services above the domain core"}),
        # a router taking a helper from the other router
        ("app/web/results.py", "from app.api.studies import ERRORS  # noqa",
         {"The HTML pages, the JSON API and the CLI are independent of each other"}),
        # statistics reaching for the database
        ("app/stats/power.py", "import sqlalchemy  # noqa",
         {"Statistics, media and prompts are pure: no database, web framework, task queue or GPU stack"}),
        # a new cycle between siblings, here the database module and the services
        ("app/db.py", "import app.services.votes  # noqa",
         {"No import cycles between sibling modules",
          "Entry points above request plumbing above services above the domain core"}),
        # the engine reaching up to the Celery tasks
        ("worker/generate.py", "import worker.tasks  # noqa",
         {"The worker: Celery tasks above the generation engine above the model presets"}),
    ],
    ids=["services-import-queue", "web-imports-api", "stats-import-db", "new-cycle", "engine-imports-tasks"],
)
def test_a_broken_rule_fails_the_check(tmp_path: Path, module: str, line: str, broken: set[str]) -> None:
    root = _copy(tmp_path, "app", "worker")
    _append(root / module, line)
    result = _lint_imports(root)
    assert result.returncode != 0
    assert broken <= _broken_contracts(result.stdout), result.stdout


def test_a_type_error_fails_the_type_check(tmp_path: Path) -> None:
    """The strict settings for app.stats: an untyped definition and a None read as present are both errors."""
    root = _copy(tmp_path, "app/__init__.py", "app/stats/__init__.py", "app/criteria.py")
    # app/stats/__init__.py imports the whole package; keep the copy small by checking one new module alone.
    (root / "app/stats/__init__.py").write_text("")
    bad = root / "app/stats/careless.py"
    bad.write_text(
        "from __future__ import annotations\n\n"
        "def share(wins, n):\n    return wins / n\n\n\n"
        "def first_label(labels: dict[str, str] | None) -> str:\n    return labels['a'].upper()\n"
    )
    result = subprocess.run(
        [str(BIN / "mypy"), "--cache-dir", str(tmp_path / ".mypy_cache"), "app/stats/careless.py"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[no-untyped-def]" in result.stdout
    assert "[index]" in result.stdout  # None is not subscriptable
