"""Throwaway PostgreSQL and Redis servers for tests and benchmarks, started from the local binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"), Path("/usr/bin")]


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Ask a child process to stop (SIGTERM); kill it if it is still there after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until_answering(proc: subprocess.Popen, url: str, timeout: float) -> str | None:
    """Poll ``url`` until it answers 200 (None), or say why not: the process exited, or ``timeout`` ran out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode} before answering"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return f"not answering after {timeout} s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_pg_bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


def postgres_unavailable_reason() -> str | None:
    if not (find_pg_bin("initdb") and find_pg_bin("pg_ctl")):
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed on this machine"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root and `runuser` is missing, so initdb cannot run as the postgres user"
    return None


def _as_pg_user(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so drop to the `postgres` system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private PostgreSQL cluster on a free port; yield a SQLAlchemy URL; stop and delete it."""
    reason = postgres_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="bp-pg-"))
    data = root / "data"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o755)
    subprocess.run(
        _as_pg_user([find_pg_bin("initdb"), "-D", str(data), "-U", "bp", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    subprocess.run(
        _as_pg_user([find_pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            _as_pg_user([find_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "bp",
                         "blindpair"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://bp@127.0.0.1:{port}/blindpair"
    finally:
        subprocess.run(_as_pg_user([find_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def redis_unavailable_reason() -> str | None:
    if not shutil.which("redis-server"):
        return "redis-server is not installed (apt-get install redis-server)"
    return None


@contextmanager
def redis_server(*, port: int | None = None, dir: Path | None = None, appendonly: bool = False) -> Iterator[str]:
    """Start a private redis-server on ``port`` (default: a free one); yield its URL; stop it (SIGTERM) on exit.

    Without persistence by default. ``appendonly=True`` keeps every write in an append-only file under ``dir``
    (fsync on every write, as a crash test needs), so a server started again with the same port and ``dir``
    comes back with its data, like the compose file's ``redis-server --appendonly yes``.
    """
    reason = redis_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    if appendonly and dir is None:
        raise ValueError("appendonly=True needs a dir to keep the append-only file in")
    port = port or free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if appendonly:
        cmd += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        cmd += ["--appendonly", "no"]
    if dir is not None:
        Path(dir).mkdir(parents=True, exist_ok=True)
        cmd += ["--dir", str(dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode} on start (port {port} taken?)")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not accept connections on port {port} within 10 s") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc, timeout=10)
