"""Start and stop a uvicorn server in a subprocess, and read its CPU time from /proc (Linux)."""

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

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat(5))


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
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn {factory} exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(base + ping, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn {factory} did not answer within {timeout}s; see {log_path}") from None
                time.sleep(0.1)
        yield base, proc
    finally:
        stop_process(proc, timeout=15)
        log.close()
