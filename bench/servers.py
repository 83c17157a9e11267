"""Start and stop a uvicorn server in a subprocess (its CPU time is read by bench/proc_cpu.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import REPO_ROOT
from tests.support.servers import free_port, stop_process


def wait_until_serving(proc: subprocess.Popen, url: str, name: str, log_path: Path, *, timeout: float,
                       interval: float = 0.1) -> None:
    """Poll ``url`` until the server answers; fail with its log's path if it exits or stays silent ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {timeout}s; see {log_path}") from None
            time.sleep(interval)


def available_backends(backends: list[str], notes: list[str]) -> Iterator[str]:
    """The requested databases, PostgreSQL left out (with the reason added to ``notes``) where it cannot start."""
    for backend in backends:
        if backend == "postgres":
            from tests.support.servers import postgres_unavailable_reason

            reason = postgres_unavailable_reason()
            if reason:
                notes.append(f"PostgreSQL skipped: {reason}")
                continue
        yield backend


@contextmanager
def uvicorn_server(factory: str, env: dict[str, str], log_path: Path, *, ping: str,
                   timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen]]:
    """``uvicorn --factory <factory>`` with one worker on a free loopback port; yields (base URL, process).

    The same flags for the app and the floor: one worker, uvicorn's default loop and HTTP parser (uvloop and
    httptools, both installed), no access log (a log line per request would be measured, not the app).
    """
    port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--log-level", "warning", "--no-access-log", "--backlog", "4096"],
        cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base + ping, f"uvicorn {factory}", log_path, timeout=timeout)
        yield base, proc
    finally:
        stop_process(proc, timeout=15)
        log.close()
