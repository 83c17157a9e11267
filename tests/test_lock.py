"""The lock files (requirements/*.lock, written by `make lock`) still match pyproject.toml. Offline: no resolver.

CI fails here when someone edits a dependency range (or the dev extra, the build requirements, the torch pins in
scripts/lock.py, the worker's base image) without relocking: every lock records the sha256 of the inputs it was
compiled from, and every requirement of pyproject.toml must be met by exactly one pin of the lock.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _load_lock_module():
    spec = importlib.util.spec_from_file_location("blindpair_lock_script", ROOT / "scripts" / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lock = _load_lock_module()

LOCKS = ("torch-cpu", "dev", "runtime", "worker")
# Where the universal locks must hold (this machine and CI, the web image, newer Pythons); the worker lock is for
# its image's Python only.
UNIVERSAL_PYTHONS = ("3.11.7", "3.11.10", "3.12.8", "3.13.1")


def _requirements(root: Path, *, dev: bool) -> list[Requirement]:
    inputs = lock.lock_inputs(root)
    names = [*inputs["dependencies"], *inputs["build-system"], *inputs["installer"], *(inputs["dev"] if dev else [])]
    return [Requirement(r) for r in names]


def _unmet(requirements: list[Requirement], pins: list, python: str, torch_version: str) -> list[str]:
    """Each requirement that applies on ``python`` is met by exactly one applicable pin (torch: ``torch_version``)."""
    env = lock.environment(python)
    applicable = [p for p in pins if p.applies(env)]
    problems = []
    for req in requirements:
        if req.marker and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        versions = [torch_version] if name == "torch" else [p.version for p in applicable if p.name == name]
        if len(versions) != 1:
            problems.append(f"{req} on Python {python}: {len(versions)} pins ({', '.join(versions) or 'none'})")
        elif not req.specifier.contains(versions[0], prereleases=True):
            problems.append(f"{req} on Python {python}: pinned to {versions[0]}")
    return problems


def lock_problems(root: Path) -> list[str]:
    """Everything that says the locks under ``root`` were not compiled from ``root``'s pyproject.toml; [] when fine."""
    problems: list[str] = []
    paths = {name: root / lock.LOCK_DIR / f"{name}.lock" for name in LOCKS}
    missing = [str(p.relative_to(root)) for p in paths.values() if not p.is_file()]
    if missing:
        return [f"missing {', '.join(missing)}: run `make lock`"]

    digest = lock.input_hash(root)
    for name, path in paths.items():
        recorded = lock.recorded_hash(path)
        if recorded != digest:
            problems.append(
                f"{name}.lock was compiled from other inputs (inputs-sha256 {recorded}, now {digest}): "
                "pyproject.toml's dependencies, the dev extra, the build requirements, the torch pins in "
                "scripts/lock.py or the worker's base image changed; run `make lock`"
            )
    pins = {name: lock.parse_lock(path) for name, path in paths.items()}

    for name, lock_pins in pins.items():
        problems += [f"{name}.lock: {p.name}=={p.version} has no --hash" for p in lock_pins if not p.hashes]
        if name != "torch-cpu":
            problems += [
                f"{name}.lock pins {p.name}: torch comes from torch-cpu.lock or the worker image"
                for p in lock_pins
                if lock.WORKER_IMAGE_PROVIDES.match(p.name)
            ]

    torch_pins = pins["torch-cpu"]
    if [(p.name, p.version) for p in torch_pins] != [("torch", lock.TORCH_CPU)]:
        problems.append(f"torch-cpu.lock must hold torch=={lock.TORCH_CPU} alone, holds {torch_pins}")
    worker_torch = lock.worker_torch(root)

    dev, runtime = _requirements(root, dev=True), _requirements(root, dev=False)
    for python in UNIVERSAL_PYTHONS:
        problems += [f"dev.lock: {p}" for p in _unmet(dev, pins["dev"], python, lock.TORCH_CPU)]
        problems += [f"runtime.lock: {p}" for p in _unmet(runtime, pins["runtime"], python, lock.TORCH_CPU)]
    problems += [
        f"worker.lock: {p} (the worker image's torch is {worker_torch})"
        for p in _unmet(runtime, pins["worker"], lock.WORKER_PYTHON, worker_torch)
    ]

    dev_pins = {(p.name, p.version, p.marker) for p in pins["dev"]}
    problems += [
        f"runtime.lock pins {p.name}=={p.version}{' ; ' + p.marker if p.marker else ''}, dev.lock does not"
        for p in pins["runtime"]
        if (p.name, p.version, p.marker) not in dev_pins
    ]
    return problems


def test_the_locks_match_pyproject() -> None:
    assert lock_problems(ROOT) == []


def test_every_install_path_installs_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"--require-hashes --no-deps .*\s+-r requirements/torch-cpu\.lock\n", makefile)
    assert "--require-hashes -r requirements/dev.lock\n" in makefile
    assert re.search(r"^\$\(BIN\)/blindpair: pyproject\.toml \$\(LOCKS\)$", makefile, re.M)
    assert ".[dev]" not in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("requirements/torch-cpu.lock", "requirements/runtime.lock", "requirements/worker.lock"):
        assert path in dockerfile
    assert dockerfile.count("--require-hashes") == 3
    assert not re.search(r"pip install (?!.*--no-deps).*-e \.", dockerfile), "the project goes in with --no-deps"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / lock.LOCK_DIR, tmp_path / lock.LOCK_DIR)
    assert lock_problems(tmp_path) == []
    return tmp_path


def _pinned(copy: Path, name: str) -> str:
    (version,) = re.findall(rf"^{name}==(\S+) ", (copy / lock.LOCK_DIR / "dev.lock").read_text(), re.M)
    return version


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_a_changed_range_without_a_relock_fails(copy: Path) -> None:
    _edit(copy / "pyproject.toml", '"fastapi>=0.110"', '"fastapi>=0.110,<0.111"')
    problems = lock_problems(copy)
    assert any("run `make lock`" in p for p in problems)
    assert f"dev.lock: fastapi<0.111,>=0.110 on Python 3.11.7: pinned to {_pinned(copy, 'fastapi')}" in problems


def test_a_new_dependency_without_a_relock_fails(copy: Path) -> None:
    _edit(copy / "pyproject.toml", '  "pytest>=8",\n', '  "pytest>=8",\n  "freezegun>=1.5",\n')
    problems = lock_problems(copy)
    assert any(p.startswith("dev.lock was compiled from other inputs") for p in problems)
    assert "dev.lock: freezegun>=1.5 on Python 3.11.7: 0 pins (none)" in problems


def test_comments_and_order_in_pyproject_change_nothing(copy: Path) -> None:
    _edit(
        copy / "pyproject.toml",
        '  "fastapi>=0.110",\n  "uvicorn[standard]>=0.29",\n',
        '  "uvicorn[standard] >= 0.29",  # moved\n  "FastAPI>=0.110",\n',
    )
    assert lock_problems(copy) == []


def test_a_hand_edited_pin_fails(copy: Path) -> None:
    _edit(copy / lock.LOCK_DIR / "runtime.lock", f"\nfastapi=={_pinned(copy, 'fastapi')} ", "\nfastapi==0.100.0 ")
    problems = lock_problems(copy)
    assert "runtime.lock: fastapi>=0.110 on Python 3.11.7: pinned to 0.100.0" in problems
    assert "runtime.lock pins fastapi==0.100.0, dev.lock does not" in problems


def test_a_new_worker_base_image_needs_a_relock(copy: Path) -> None:
    _edit(copy / "Dockerfile", "FROM pytorch/pytorch:2.5.1-", "FROM pytorch/pytorch:2.7.1-")
    assert any(p.startswith("worker.lock was compiled from other inputs") for p in lock_problems(copy))
