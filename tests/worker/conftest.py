"""Tiny random-weight models on disk (built once per run) and studies that use them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.models import Study
from tests.factories import NO_CHECKS, make_study

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
