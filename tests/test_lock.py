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
import tomllib
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


def _unmet(requirements: list[Requirement], pins: list, pythons: tuple[str, ...], torch_version: str) -> list[str]:
    """Each requirement that applies on each of ``pythons`` is met by exactly one applicable pin (torch: by
    ``torch_version``, which comes from elsewhere). One line per requirement, naming the Pythons it fails on."""
    failures: dict[str, list[str]] = {}
    for python in pythons:
        env = lock.environment(python)
        applicable = [p for p in pins if p.applies(env)]
        for req in requirements:
            if req.marker and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            versions = [torch_version] if name == "torch" else [p.version for p in applicable if p.name == name]
            if len(versions) != 1:
                failures.setdefault(f"{req}: {len(versions)} pins ({', '.join(versions) or 'none'})", []).append(python)
            elif not req.specifier.contains(versions[0], prereleases=True):
                failures.setdefault(f"{req}: pinned to {versions[0]}", []).append(python)
    return [f"{failure} on Python {', '.join(on)}" for failure, on in failures.items()]


def lock_problems(root: Path) -> list[str]:
    """Everything that says the locks under ``root`` were not compiled from ``root``'s pyproject.toml; [] when fine."""
    problems: list[str] = []
    paths = {name: root / lock.LOCK_DIR / f"{name}.lock" for name in LOCKS}
    missing = [str(p.relative_to(root)) for p in paths.values() if not p.is_file()]
    if missing:
        return [f"missing {', '.join(missing)}: run `make lock`"]

    digest = lock.input_hash(root)
    stale = [name for name, path in paths.items() if lock.recorded_hash(path) != digest]
    if stale:
        problems.append(
            f"{', '.join(f'{name}.lock' for name in stale)}: compiled from other inputs than today's (inputs-sha256 "
            f"{digest}): pyproject.toml's dependencies, the dev extra or the build requirements, the torch pins in "
            "scripts/lock.py or the worker's base image changed since. Run `make lock` and commit requirements/."
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
    problems += [f"dev.lock: {p}" for p in _unmet(dev, pins["dev"], UNIVERSAL_PYTHONS, lock.TORCH_CPU)]
    problems += [f"runtime.lock: {p}" for p in _unmet(runtime, pins["runtime"], UNIVERSAL_PYTHONS, lock.TORCH_CPU)]
    problems += [
        f"worker.lock: {p} (the worker image's torch is {worker_torch})"
        for p in _unmet(runtime, pins["worker"], (lock.WORKER_PYTHON,), worker_torch)
    ]

    dev_pins = {(p.name, p.version, p.marker) for p in pins["dev"]}
    problems += [
        f"runtime.lock pins {p.name}=={p.version}{' ; ' + p.marker if p.marker else ''}, dev.lock does not"
        for p in pins["runtime"]
        if (p.name, p.version, p.marker) not in dev_pins
    ]
    return problems


def test_the_locks_match_pyproject() -> None:
    problems = lock_problems(ROOT)
    assert not problems, "requirements/*.lock do not match pyproject.toml:\n" + "\n".join(problems)


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
    return tmp_path


def _pinned(copy: Path, name: str) -> str:
    (version,) = re.findall(rf"^{name}==(\S+) ", (copy / lock.LOCK_DIR / "dev.lock").read_text(), re.M)
    return version


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _first_dependencies(copy: Path) -> tuple[str, str]:
    first, second = tomllib.loads((copy / "pyproject.toml").read_text())["project"]["dependencies"][:2]
    return first, second


def test_a_changed_range_without_a_relock_fails(copy: Path) -> None:
    first, _ = _first_dependencies(copy)
    name = canonicalize_name(Requirement(first).name)
    _edit(copy / "pyproject.toml", f'"{first}"', f'"{first},<0.0.1"')
    problems = lock_problems(copy)
    assert any("Run `make lock`" in p for p in problems)
    edited = Requirement(f"{first},<0.0.1")
    unmet = f"{edited}: pinned to {_pinned(copy, name)} on Python {', '.join(UNIVERSAL_PYTHONS)}"
    assert f"dev.lock: {unmet}" in problems
    assert f"runtime.lock: {unmet}" in problems


def test_a_new_dependency_without_a_relock_fails(copy: Path) -> None:
    _edit(copy / "pyproject.toml", "\ndev = [\n", '\ndev = [\n  "freezegun>=1.5",\n')
    problems = lock_problems(copy)
    assert any(p.startswith("torch-cpu.lock, dev.lock, runtime.lock, worker.lock: compiled from") for p in problems)
    assert f"dev.lock: freezegun>=1.5: 0 pins (none) on Python {', '.join(UNIVERSAL_PYTHONS)}" in problems


def test_comments_spelling_and_order_in_pyproject_change_nothing(copy: Path) -> None:
    first, second = _first_dependencies(copy)
    respelled = Requirement(first).name.upper() + " " + str(Requirement(first).specifier).replace(",", " , ")
    _edit(copy / "pyproject.toml", f'  "{first}",\n  "{second}",\n', f'  "{second}",  # moved\n  "{respelled}",\n')
    assert lock.input_hash(copy) == lock.input_hash(ROOT)


def test_a_hand_edited_pin_fails(copy: Path) -> None:
    first, _ = _first_dependencies(copy)
    name = canonicalize_name(Requirement(first).name)
    _edit(copy / lock.LOCK_DIR / "runtime.lock", f"\n{name}=={_pinned(copy, name)} ", f"\n{name}==0.0.1 ")
    problems = lock_problems(copy)
    assert f"runtime.lock: {Requirement(first)}: pinned to 0.0.1 on Python {', '.join(UNIVERSAL_PYTHONS)}" in problems
    assert f"runtime.lock pins {name}==0.0.1, dev.lock does not" in problems


def test_a_new_worker_base_image_needs_a_relock(copy: Path) -> None:
    dockerfile = copy / "Dockerfile"
    dockerfile.write_text(
        re.sub(r"FROM pytorch/pytorch:[0-9.]+-", "FROM pytorch/pytorch:9.9.9-", dockerfile.read_text())
    )
    assert lock.worker_torch(copy) == "9.9.9"
    problems = lock_problems(copy)
    assert any(p.startswith("torch-cpu.lock, dev.lock, runtime.lock, worker.lock: compiled") for p in problems)
