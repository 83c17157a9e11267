"""``blindpair serve`` and ``blindpair demo`` stop within a bounded grace period on SIGTERM and SIGINT, and the
demo's worker never outlives the demo (issue 12). Real processes, real signals; the bounds are generous
behavioural limits (a grace of 1 s against tens of seconds allowed), not timings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.servers import free_port, stop_process, wait_until_answering

pytestmark = pytest.mark.slow
BLINDPAIR = str(Path(sys.executable).with_name("blindpair"))
GRACE_S = 1  # BLINDPAIR_SHUTDOWN_GRACE_SECONDS for the processes under test
STOP_BOUND_S = 30  # "stops": well within this after the signal (never, before the fix)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    port = free_port()
    env = {**os.environ, "BLINDPAIR_DATA_DIR": str(tmp_path / "var"),
           "BLINDPAIR_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'blindpair.sqlite'}",
           "BLINDPAIR_PORT": str(port), "BLINDPAIR_BASE_URL": f"http://127.0.0.1:{port}",
           "BLINDPAIR_SHUTDOWN_GRACE_SECONDS": str(GRACE_S)}
    env.pop("BLINDPAIR_BROKER_URL", None)  # the embedded broker in the data folder
    return env


def _start(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([BLINDPAIR, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_until_serving(proc: subprocess.Popen, env: dict[str, str], log: Path, timeout: float = 180) -> None:
    why = wait_until_answering(proc, f"{env['BLINDPAIR_BASE_URL']}/login", timeout)
    if why:
        pytest.fail(f"{why}:\n{log.read_text()[-3000:]}")


def _slow_client(env: dict[str, str]) -> socket.socket:
    """A client that sends its headers and a tenth of its body, then nothing: the request stays in flight."""
    sock = socket.create_connection(("127.0.0.1", int(env["BLINDPAIR_PORT"])))
    sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"email\":")
    time.sleep(0.5)  # let the server parse the headers and start the request
    return sock


def _exits_within(proc: subprocess.Popen | psutil.Process, seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return False
    return True


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stop_process(proc)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_despite_a_slow_client(env, tmp_path, sig):
    subprocess.run([BLINDPAIR, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = tmp_path / "serve.log"
    proc = _start(env, "serve", log=log)
    try:
        _wait_until_serving(proc, env, log)
        slow = _slow_client(env)
        proc.send_signal(sig)
        assert _exits_within(proc, STOP_BOUND_S), f"still running after {sig.name}:\n{log.read_text()[-2000:]}"
        slow.close()
    finally:
        _kill_group(proc)


@pytest.fixture
def workers():
    """Demo workers seen by the test; any still running at the end (a failed test) is killed."""
    seen: list[psutil.Process] = []
    yield seen
    for process in seen:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the worker leads its own process group
        except (ProcessLookupError, PermissionError):
            pass


def _worker_of(demo: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [c for c in psutil.Process(demo.pid).children() if "worker" in " ".join(c.cmdline())]
        if children:
            return children[0]
        if demo.poll() is not None:
            pytest.fail(f"the demo exited with {demo.returncode} before starting its worker")
        time.sleep(0.1)
    pytest.fail("the demo started no worker")


def _gone(process: psutil.Process, seconds: float) -> bool:
    try:
        process.wait(timeout=seconds)
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    return True


DEMO_ARGS = ("demo", "--frames", "2", "--size", "16", "--password", "demo-password-1")


def test_demo_sigterm_while_making_clips_stops_it_and_its_worker(env, tmp_path, workers):
    """What `timeout 60 blindpair demo` does: SIGTERM to the demo alone, at whatever step it is."""
    log = tmp_path / "demo.log"
    demo = _start(env, *DEMO_ARGS, log=log)
    try:
        worker = _worker_of(demo)
        workers.append(worker)
        demo.send_signal(signal.SIGTERM)
        assert _exits_within(demo, STOP_BOUND_S), f"the demo ignored SIGTERM:\n{log.read_text()[-2000:]}"
        assert _gone(worker, STOP_BOUND_S), "the demo's worker outlived it"
    finally:
        _kill_group(demo)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_serving_demo_never_leaves_its_worker_behind(env, tmp_path, workers, sig):
    """SIGTERM: the demo stops the server and the worker. SIGKILL: no cleanup can run, yet the worker goes too."""
    log = tmp_path / "demo.log"
    demo = _start(env, *DEMO_ARGS, log=log)
    try:
        _wait_until_serving(demo, env, log)
        worker = _worker_of(demo)
        workers.append(worker)
        slow = _slow_client(env)
        demo.send_signal(sig)
        assert _exits_within(demo, STOP_BOUND_S), f"the demo ignored {sig.name}:\n{log.read_text()[-2000:]}"
        assert _gone(worker, STOP_BOUND_S), f"the demo's worker outlived it ({sig.name})"
        slow.close()
    finally:
        _kill_group(demo)
