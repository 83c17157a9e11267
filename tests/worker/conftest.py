"""Tiny random-weight models on disk (built once per run) and studies that use them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.models import Study
from tests.factories import NO_CHECKS, make_study
from tests.support.servers import redis_server, redis_unavailable_reason

TINY_SETTINGS = {"seeds": [0], "frames": 2, "width": 32, "height": 32, "fps": 8, "dtype": "float32",
                 "negative_prompt": "blurry"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from worker.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


def make_tiny_study(session: Session, tiny_dir: Path, *, presets=("tiny-lightning-2step", "tiny-animatediff"),
                    n_prompts: int = 2, **settings) -> Study:
    names = tuple(f"model-{i}" for i in range(len(presets)))
    study = make_study(session, models=names, n_prompts=n_prompts, qc=NO_CHECKS)
    for model, preset in zip(study.models, presets, strict=True):
        model.preset = preset
    study.settings = {**TINY_SETTINGS, "base_model": str(tiny_dir), **settings}
    session.commit()
    return study


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def broker_env(request, monkeypatch):
    """Nothing for the embedded SQLite broker; a private redis-server for the Redis case."""
    if request.param == "embedded":
        yield {}
        return
    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from app import config

    with redis_server() as url:
        monkeypatch.setenv("BLINDPAIR_BROKER_URL", url)
        config.get_settings.cache_clear()
        yield {"BLINDPAIR_BROKER_URL": url}
