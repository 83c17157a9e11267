"""The storage tests run against a real S3 server: SeaweedFS (``weed server -s3``) on loopback with signed,
checked credentials. The fixtures (``seaweed``, ``s3_env``, ``own_seaweed``) live in
tests/support/seaweed_fixtures.py, loaded by tests/conftest.py so the security tests use them too. Every test
here is marked ``s3``: run them alone with ``pytest -m s3``. Skipped only where the ``weed`` binary is missing.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest's hook signature
    for item in items:
        if "tests/storage/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.s3)
