"""Fixtures for the reliability tests: a study with enough pairs for 50 evaluators x 20 votes, and a live server."""

from __future__ import annotations

import os
import random

import pytest

from app.services.attention import ensure_attention_pairs
from tests.factories import make_pairs, make_study
from tests.reliability.harness import LiveServer, server_env

N_EVALUATORS = int(os.environ.get("BLINDPAIR_LOAD_EVALUATORS", "50"))
VOTES_EACH = 20



@pytest.fixture
def load_study(session):
    """30 prompts x 2 models = 30 normal pairs (an evaluator needs 20 distinct ones), plus attention checks."""
    # Every simulated evaluator comes from 127.0.0.1: no cap on sessions per address (tested in tests/security).
    study = make_study(session, n_prompts=30, pairs_per_session=VOTES_EACH, votes_per_pair=100,
                       qc={"sessions_per_address": 0})
    make_pairs(session, study)
    ensure_attention_pairs(session, study_id=study.id, rng=random.Random(0), n_sources=3)
    session.commit()
    return study


@pytest.fixture
def live_server(load_study, database_url, tmp_path):
    server = LiveServer(server_env(database_url, tmp_path / "var"), tmp_path / "server.log")
    server.start()
    yield server
    server.stop()
