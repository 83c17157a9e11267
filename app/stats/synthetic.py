"""Synthetic vote frames in the vote-frame contract's shape, for tests, the dashboard and benchmarks.

The generating model is explicit so tests can check that the statistics recover it: each model has a
strength on the logit scale (the first model strongest, ``effect`` apart per step), scaled per criterion
and per theme; each prompt and each vote add a random effect shared by all criteria of that prompt/vote
(so votes cluster by prompt, as real ones do); a share ``tie_rate`` of judgements are "indistinguishable";
``left_bias`` adds a pull towards the left clip on the logit scale.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from app.criteria import DEFAULT_CRITERIA

# The twelve themes of the built-in prompt suite (app/prompts/suite.jsonl).
THEMES = (
    "urban exploration", "historical moments", "sports", "wildlife", "underwater worlds", "nature",
    "abstract concepts", "magical seasons", "mystical realms", "food and cooking", "space and sci-fi", "everyday life",
)
DETAILS = ("short", "medium", "long")
_CRITERION_SCALE = (1.0, 1.3, 0.9, 1.1, -0.4, 1.0)  # one criterion favours the other model, as real ones can


def _scales(criteria: tuple[str, ...], themes: tuple[str, ...], criterion_scale: dict[str, float] | None,
            theme_scale: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """How strongly each criterion and each theme carries the model effect (given, else the defaults)."""
    crit_scale = np.array(
        [(criterion_scale or {}).get(c, _CRITERION_SCALE[i % len(_CRITERION_SCALE)]) for i, c in enumerate(criteria)]
    )
    default_theme = np.linspace(1.6, 0.2, len(themes)) if len(themes) > 1 else np.ones(1)
    th_scale = np.array([(theme_scale or {}).get(t, default_theme[i]) for i, t in enumerate(themes)])
    return crit_scale, th_scale


def _frame(rng: np.random.Generator, *, models: tuple[str, ...], criteria: tuple[str, ...], themes: tuple[str, ...],
           details: tuple[str, ...], n_prompts: int, study_id: int, evaluators: np.ndarray, prompt: np.ndarray,
           pair: np.ndarray, a_left: np.ndarray, winner_code: np.ndarray, prompt_theme: np.ndarray,
           prompt_detail: np.ndarray, flagged: np.ndarray) -> pd.DataFrame:
    """The drawn votes (one entry per vote; winner_code per vote and criterion) as vote-frame rows."""
    n_crit = len(criteria)
    rep = np.repeat
    model_names = np.array(models, dtype=object)
    model_a = model_names[pair[:, 0]]
    model_b = model_names[pair[:, 1]]
    left_model = np.where(a_left, model_a, model_b)
    side_code = np.where(winner_code == 2, 2, np.where((winner_code == 0) == a_left[:, None], 0, 1))
    start = pd.Timestamp("2026-01-05T09:00:00Z")
    seconds = np.sort(rng.uniform(0, 14 * 86400, len(prompt)))

    return pd.DataFrame(
        {
            "vote_id": rep(np.arange(1, len(prompt) + 1), n_crit),
            "study_id": study_id,
            "evaluator": rep(evaluators, n_crit),
            "prompt": rep(np.array([f"p{i:03d}" for i in range(n_prompts)], dtype=object)[prompt], n_crit),
            "theme": rep(np.array(themes, dtype=object)[prompt_theme], n_crit),
            "detail": rep(np.array(details, dtype=object)[prompt_detail], n_crit),
            "criterion": np.tile(np.array(criteria, dtype=object), len(prompt)),
            "model_a": rep(model_a, n_crit),
            "model_b": rep(model_b, n_crit),
            "left_model": rep(left_model, n_crit),
            "side": np.array(["left", "right", "tie"], dtype=object)[side_code.ravel()],
            "winner": np.array(["model_a", "model_b", "tie"], dtype=object)[winner_code.ravel()],
            "submitted_at": rep(start + pd.to_timedelta(seconds, unit="s"), n_crit),
            "time_spent_ms": rep(rng.integers(4_000, 90_000, len(prompt)), n_crit),
            "flagged": rep(flagged, n_crit),
        }
    )


def synthetic_votes(
    n_votes: int,
    *,
    models: tuple[str, ...] = ("A", "B"),
    n_prompts: int = 100,
    themes: tuple[str, ...] = THEMES,
    details: tuple[str, ...] = DETAILS,
    criteria: tuple[str, ...] | None = None,
    n_evaluators: int = 40,
    seed: int = 0,
    tie_rate: float = 0.2,
    effect: float = 0.4,
    criterion_scale: dict[str, float] | None = None,
    theme_scale: dict[str, float] | None = None,
    prompt_sd: float = 0.5,
    vote_sd: float = 0.5,
    left_bias: float = 0.0,
    flagged_share: float = 0.0,
    study_id: int = 1,
) -> pd.DataFrame:
    """A frame with ``n_votes`` votes x len(criteria) rows, in the vote-frame contract's columns."""
    if len(models) < 2:
        raise ValueError("need at least two models")
    if not 0 <= tie_rate < 1:
        raise ValueError("tie_rate must be in [0, 1)")
    rng = np.random.default_rng(seed)
    criteria = tuple(criteria or (c.key for c in DEFAULT_CRITERIA))
    themes, details = tuple(themes), tuple(details)
    crit_scale, th_scale = _scales(criteria, themes, criterion_scale, theme_scale)
    strength = -effect * np.arange(len(models))

    prompt_theme = rng.integers(0, len(themes), n_prompts)
    prompt_detail = rng.integers(0, len(details), n_prompts)
    prompt_re = rng.normal(0, prompt_sd, n_prompts)
    pairs = np.array(list(itertools.combinations(range(len(models)), 2)))
    evaluators = np.array([f"e{i:04x}{(i * 2654435761) % 16**6:06x}" for i in range(n_evaluators)])
    flagged_eval = rng.random(n_evaluators) < flagged_share

    prompt = rng.integers(0, n_prompts, n_votes)
    pair = pairs[rng.integers(0, len(pairs), n_votes)]
    ev = rng.integers(0, n_evaluators, n_votes)
    a_left = rng.random(n_votes) < 0.5
    vote_re = rng.normal(0, vote_sd, n_votes)

    diff = strength[pair[:, 0]] - strength[pair[:, 1]]
    logit = (
        diff[:, None] * crit_scale[None, :] * th_scale[prompt_theme[prompt]][:, None]
        + prompt_re[prompt][:, None]
        + vote_re[:, None]
        + np.where(a_left, left_bias, -left_bias)[:, None]
    )
    a_wins = rng.random(logit.shape) < 1 / (1 + np.exp(-logit))
    tie = rng.random(logit.shape) < tie_rate
    winner_code = np.where(tie, 2, np.where(a_wins, 0, 1))  # 0 model_a, 1 model_b, 2 tie

    return _frame(rng, models=models, criteria=criteria, themes=themes, details=details, n_prompts=n_prompts,
                  study_id=study_id, evaluators=evaluators[ev], prompt=prompt, pair=pair, a_left=a_left,
                  winner_code=winner_code, prompt_theme=prompt_theme[prompt], prompt_detail=prompt_detail[prompt],
                  flagged=flagged_eval[ev])
