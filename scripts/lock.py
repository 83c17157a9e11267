"""The hashed lock files under requirements/, compiled from pyproject.toml's ranges with uv (`make lock`).

    python scripts/lock.py --uv .tools/bin/uv                               # relock, keeping the current pins
    python scripts/lock.py --uv .tools/bin/uv -- --upgrade-package fastapi  # move one package (and what it needs)
    python scripts/lock.py --uv .tools/bin/uv -- --upgrade                  # move everything to the newest allowed

Four files, each with every distribution's sha256 (installed with `pip install --require-hashes`):

    requirements/torch-cpu.lock  torch's CPU wheel, installed first with --no-deps (make install, the web image):
                                 the one CPU torch pin. From PyPI, an unpinned torch is a multi-GB CUDA build.
    requirements/dev.lock        everything else `make install` and CI install: the project's dependencies, the
                                 dev extra, torch's own dependencies, pip and the build backend. Not torch.
    requirements/runtime.lock    the same pins without the dev extra: the web image.
    requirements/worker.lock     the worker image, which keeps the CUDA torch of its base image
                                 (pytorch/pytorch:<version>-..., read from the Dockerfile), so this one is resolved
                                 against that torch (older torch, older sympy/accelerate) and for that image's Python.

dev.lock and runtime.lock are universal (markers pick per Python version and platform). The first line of each
file records the sha256 of what it was compiled from (``input_hash``); tests/test_lock.py recomputes it
offline, so CI fails when pyproject.toml's dependencies change without a relock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = "requirements"

# The CPU build of torch that `make install` and the web image use. Its wheel is found through pip's own
# configuration (find-links, index) or --torch-index (https://download.pytorch.org/whl/cpu).
TORCH_CPU = "2.13.0+cpu"
TORCH_CPU_TAGS = {"python-version": "3.11", "implementation": "cp", "abi": "cp311", "platform": "manylinux_2_28_x86_64"}
# The Python of the worker's base image (pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime ships 3.11.10): markers
# such as python_full_version < '3.11.5' need the patch level.
WORKER_PYTHON = "3.11.10"
WORKER_PLATFORM = "x86_64-manylinux_2_28"
# Packages the worker's base image brings with its torch and which must not be reinstalled from PyPI.
WORKER_IMAGE_PROVIDES = re.compile(r"^(torch|triton|nvidia-.*)$")
# Installed from the locks too, so nothing in an install comes unpinned: the installer, and (for
# `pip install --no-build-isolation -e .`) the build backend from [build-system].
INSTALLER = ["pip"]

HASH_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.M)
UV_OFFLINE_PYTHON = ["--no-python-downloads"]  # the target Python need not exist here (no sdist to build)
UV_COMMON = [*UV_OFFLINE_PYTHON, "--generate-hashes", "--custom-compile-command", "make lock"]
UV_COMMON += ["--no-emit-package", "torch"]


def normalize(requirement: str) -> str:
    """One spelling per requirement: canonical name, sorted extras and specifiers, the marker as packaging prints it."""
    req = Requirement(requirement)
    text: str = canonicalize_name(req.name)
    if req.extras:
        text += "[" + ",".join(sorted(canonicalize_name(e) for e in req.extras)) + "]"
    text += ",".join(sorted(str(s) for s in req.specifier))
    if req.url:
        text += " @ " + req.url
    if req.marker:
        text += " ; " + str(req.marker)
    return text


def worker_torch(root: Path = ROOT) -> str:
    """The torch version of the worker's base image, from the Dockerfile's ``FROM pytorch/pytorch:<version>-...``."""
    match = re.search(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-\S* AS worker$", (root / "Dockerfile").read_text(), re.M)
    if not match:
        raise SystemExit("Dockerfile: no `FROM pytorch/pytorch:<version>-... AS worker` line")
    return match.group(1)


def lock_inputs(root: Path = ROOT) -> dict[str, object]:
    """Everything the locks are compiled from, normalized: a comment or reordering in pyproject.toml changes nothing."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    project = pyproject["project"]
    return {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(normalize(r) for r in project.get("dependencies", [])),
        "dev": sorted(normalize(r) for r in project.get("optional-dependencies", {}).get("dev", [])),
        "build-system": sorted(normalize(r) for r in pyproject["build-system"]["requires"]),
        "installer": sorted(normalize(r) for r in INSTALLER),
        "torch-cpu": TORCH_CPU,
        "worker-torch": worker_torch(root),
        "worker-python": WORKER_PYTHON,
        "worker-platform": WORKER_PLATFORM,
    }


def input_hash(root: Path = ROOT) -> str:
    return hashlib.sha256(json.dumps(lock_inputs(root), sort_keys=True).encode()).hexdigest()


def recorded_hash(lock: Path) -> str | None:
    match = HASH_LINE.search(lock.read_text())
    return match.group(1) if match else None


@dataclass
class Pin:
    name: str  # canonical
    version: str
    marker: str | None
    hashes: list[str] = field(default_factory=list)

    def applies(self, environment: dict[str, str]) -> bool:
        return self.marker is None or Requirement(f"x ; {self.marker}").marker.evaluate(environment)  # type: ignore[union-attr]


def parse_lock(lock: Path) -> list[Pin]:
    """The pins of a lock file in pip's requirements format (``name==version ; marker \\ --hash=sha256:...``)."""
    text = lock.read_text().replace("\\\n", " ")
    pins = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        spec = re.sub(r"--hash=\S+", "", line).strip()
        req = Requirement(spec)
        (specifier,) = req.specifier  # exactly one ==
        if specifier.operator != "==":
            raise ValueError(f"{lock}: {spec!r} is not pinned with ==")
        marker = str(req.marker) if req.marker else None
        pins.append(Pin(canonicalize_name(req.name), specifier.version, marker, hashes))
    return pins


def environment(python_full_version: str, platform: str = "linux") -> dict[str, str]:
    """A PEP 508 marker environment for CPython on ``platform`` (linux x86_64 unless told)."""
    version = Version(python_full_version)
    return {
        "implementation_name": "cpython",
        "implementation_version": python_full_version,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": python_full_version,
        "python_version": f"{version.major}.{version.minor}",
        "sys_platform": platform,
    }


def _run(cmd: list[str], **kwargs: object) -> None:
    """Run a command from the repository root; its stdout (uv repeats the lock there) is dropped."""
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]


def _compile(uv: str, output: Path, options: list[str], stdin: str) -> None:
    """``uv pip compile`` of pyproject.toml plus ``stdin`` (requirement lines) into ``output``."""
    _run([uv, "pip", "compile", "pyproject.toml", "-", *options, "-o", str(output)], input=stdin, text=True)


def _header(path: Path, digest: str, about: str) -> None:
    lines = [
        f"# inputs-sha256: {digest}",
        "# (pyproject.toml's dependencies, dev extra and build requirements, and the torch pins in scripts/lock.py;",
        "#  tests/test_lock.py recomputes it: when they change, run `make lock`.)",
        *(f"# {line}" for line in about.splitlines()),
    ]
    path.write_text("\n".join(lines) + "\n" + path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uv", default="uv", help="the uv executable (make lock installs one into .tools/)")
    parser.add_argument("--torch-index", help="an index with the CPU wheel, e.g. https://download.pytorch.org/whl/cpu")
    parser.add_argument("uv_args", nargs="*", help="passed to every `uv pip compile`, e.g. --upgrade-package fastapi")
    args = parser.parse_args(argv)

    inputs = lock_inputs()
    digest = input_hash()
    locks = ROOT / LOCK_DIR
    locks.mkdir(exist_ok=True)
    # Requirements beside pyproject.toml's own, given to uv on stdin.
    extra = "\n".join([*inputs["build-system"], *inputs["installer"]]) + "\n"  # type: ignore[misc]

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        # 1. The CPU wheel: its sha256, and its metadata for the resolution (torch's own dependencies).
        wheels = tmp / "wheels"
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
        download += [f"--{option}={value}" for option, value in TORCH_CPU_TAGS.items()]
        if args.torch_index:
            download += ["--extra-index-url", args.torch_index]
        _run([*download, f"torch=={TORCH_CPU}"])
        (wheel,) = wheels.glob("torch-*.whl")
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        torch_lock = locks / "torch-cpu.lock"
        torch_lock.write_text(f"torch=={TORCH_CPU} \\\n    --hash=sha256:{sha}\n    # {wheel.name}\n")
        _header(
            torch_lock,
            digest,
            "The CPU build of torch, installed before the other locks with `pip install --require-hashes --no-deps`\n"
            "(an unpinned torch from PyPI is a multi-GB CUDA build). Set in scripts/lock.py (TORCH_CPU).",
        )
        torch_cpu = tmp / "torch-cpu.txt"
        torch_cpu.write_text(f"torch=={TORCH_CPU}\n")

        # 2. dev.lock: universal, against the CPU torch's metadata; runtime.lock: its pins, without the dev extra.
        universal = ["--universal", "--python-version", "3.11", "--find-links", str(wheels), "-c", str(torch_cpu)]
        dev = locks / "dev.lock"
        _compile(args.uv, dev, ["--extra", "dev", *universal, *UV_COMMON, *args.uv_args], extra)
        _header(dev, digest, "make install and CI: after torch-cpu.lock, `pip install --require-hashes -r` this.")
        runtime = locks / "runtime.lock"
        _compile(args.uv, runtime, [*universal, "-c", str(dev), *UV_COMMON, *args.uv_args], extra)
        _header(runtime, digest, "The web image: dev.lock's pins without the dev extra, after torch-cpu.lock.")

        # 3. worker.lock: against the base image's torch, leaving out what that image already has (found by a
        # first, hash-less resolution).
        torch_worker = tmp / "torch-worker.txt"
        torch_worker.write_text(f"torch=={inputs['worker-torch']}\n")
        target = ["--python-version", WORKER_PYTHON, "--python-platform", WORKER_PLATFORM, "-c", str(torch_worker)]
        names = tmp / "worker-names.txt"
        _compile(args.uv, names, [*target, "--no-annotate", "--no-header", *UV_OFFLINE_PYTHON, *args.uv_args], extra)
        provided = sorted(p.name for p in parse_lock(names) if WORKER_IMAGE_PROVIDES.match(p.name))
        leave_out = [option for name in provided for option in ("--no-emit-package", name)]
        worker = locks / "worker.lock"
        _compile(args.uv, worker, [*target, *UV_COMMON, *leave_out, *args.uv_args], extra)
        _header(
            worker,
            digest,
            f"The worker image (Dockerfile): resolved against its base image's torch=={inputs['worker-torch']}\n"
            f"for Python {WORKER_PYTHON} on {WORKER_PLATFORM}; leaves out torch, triton and nvidia-*, which that\n"
            "image has.",
        )
    print(f"locked: {', '.join(str(p.relative_to(ROOT)) for p in sorted(locks.glob('*.lock')))}", file=sys.stderr)


if __name__ == "__main__":
    main()
