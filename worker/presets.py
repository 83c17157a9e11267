"""Presets (what a model runs) and the study's standardised settings, with validation.

Presets are data (``worker/presets.toml``); a researcher can add more in a TOML file named by
``BLINDPAIR_PRESETS_FILE``. Validation never touches the database: callers validate first, then write.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

PRESETS_FILE = Path(__file__).with_name("presets.toml")
KINDS = ("animatediff", "demo")
DTYPES = ("float16", "bfloat16", "float32")
# Seeds per study (and per batch, app/services/generation.py): each seed is a clip per prompt and model, and
# 100,000 seeds were once accepted in one request.
MAX_SEEDS = 100
# Per-model overrides may change only how a model samples; everything else is standardised across the study.
OVERRIDE_KEYS = ("steps", "guidance", "off_card")
# Steps or guidance other than the preset's leave its model card (a distilled model is trained for its steps and
# for no CFG): refused unless the model is marked {"off_card": true}, then shown as an off-card variant.
OFF_CARD_FLAG = "off_card"

DEFAULT_SETTINGS: dict[str, Any] = {
    "seeds": [0],
    "frames": 16,
    "width": 512,
    "height": 512,
    "fps": 8,
    "negative_prompt": "",
    "base_model": "emilianJR/epiCRealism",
    "dtype": "float16",
    # What raters are served: "gif" (256 colours per frame), or "mp4" (H.264) / "webm" (VP9) at one high fixed
    # quality for every model (app/media/video.py). Every clip of the study, imported or generated, is stored so.
    "clip_format": "gif",
}
CLIP_FORMATS = ("gif", "mp4", "webm")


class GenerationConfigError(ValueError):
    """Bad preset, override or setting; ``errors`` lists every problem in words."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str
    description: str = ""
    adapter: str = ""
    adapter_repo: str = ""
    adapter_file: str = ""
    adapter_config: dict[str, Any] = field(default_factory=dict)
    scheduler: str = ""
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    steps: int = 1
    guidance: float = 1.0
    style: str = ""

    def expand(self, base_model: str) -> Preset:
        """Replace ``{base_model}`` in the weight locations (tiny presets keep all weights in one folder)."""
        def sub(value: str) -> str:
            return value.replace("{base_model}", base_model)

        return replace(self, adapter=sub(self.adapter), adapter_repo=sub(self.adapter_repo))


@dataclass(frozen=True)
class RunSpec:
    """Exactly what one model of a study runs with: the preset, the study settings and the overrides applied."""

    preset: Preset
    base_model: str
    steps: int
    guidance: float
    frames: int
    width: int
    height: int
    fps: float
    negative_prompt: str
    dtype: str
    off_card: tuple[str, ...] = ()  # the settings that differ from the preset's card, e.g. ("steps 25, card 4",)
    clip_format: str = "gif"  # the study's file format: one encoder and its settings for every model

    @property
    def uses_cfg(self) -> bool:
        # diffusers applies classifier-free guidance only when guidance_scale > 1 (one extra UNet pass).
        return self.guidance > 1.0

    def describe(self) -> dict[str, Any]:
        p = self.preset
        out: dict[str, Any] = {"preset": p.name, "kind": p.kind, "description": p.description}
        if p.kind == "animatediff":
            out.update(
                base_model=self.base_model,
                adapter=p.adapter or f"{p.adapter_repo}/{p.adapter_file}",
                scheduler=p.scheduler,
                scheduler_config=dict(p.scheduler_config),
                steps=self.steps,
                guidance=self.guidance,
                dtype=self.dtype,
            )
        else:
            out.update(style=p.style)
        out.update(frames=self.frames, width=self.width, height=self.height, fps=self.fps)
        if self.off_card:
            out["off_card"] = list(self.off_card)
        return out


def _parse_preset(name: str, raw: dict[str, Any]) -> Preset:
    errors: list[str] = []
    known = set(Preset.__dataclass_fields__) - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        errors.append(f"preset {name!r}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kind = raw.get("kind", "")
    if kind not in KINDS:
        errors.append(f"preset {name!r}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "animatediff":
        if bool(raw.get("adapter")) == bool(raw.get("adapter_repo")):
            errors.append(f"preset {name!r}: give either adapter (a folder/repo) or adapter_repo + adapter_file")
        if raw.get("adapter_repo") and not raw.get("adapter_file"):
            errors.append(f"preset {name!r}: adapter_repo needs adapter_file")
        if not raw.get("scheduler"):
            errors.append(f"preset {name!r}: scheduler is required")
    if kind == "demo" and raw.get("style") not in ("smooth", "jittery"):
        errors.append(f"preset {name!r}: style must be smooth or jittery")
    if errors:
        raise GenerationConfigError(errors)
    fields = {k: v for k, v in raw.items() if k in known}
    preset = Preset(name=name, **fields)
    _check_sampling(f"preset {name!r}", preset.steps, preset.guidance)
    return preset


def _check_sampling(where: str, steps: Any, guidance: Any) -> None:
    errors = []
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        errors.append(f"{where}: steps must be a whole number from 1 to 1000, not {steps!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not 0 <= guidance <= 50:
        errors.append(f"{where}: guidance must be a number from 0 to 50, not {guidance!r}")
    if errors:
        raise GenerationConfigError(errors)


def load_presets_file(path: Path) -> dict[str, Preset]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GenerationConfigError(f"cannot read presets file {path}: {exc}") from exc
    return {name: _parse_preset(name, raw) for name, raw in data.items()}


@lru_cache(maxsize=8)
def _presets_for(extra: str, _mtime_ns: int) -> dict[str, Preset]:
    presets = load_presets_file(PRESETS_FILE)
    if extra:
        presets.update(load_presets_file(Path(extra)))
    return presets


def all_presets() -> dict[str, Preset]:
    """Built-in presets plus those in ``BLINDPAIR_PRESETS_FILE`` (which may replace a built-in one)."""
    extra = os.environ.get("BLINDPAIR_PRESETS_FILE", "")
    try:
        mtime = Path(extra).stat().st_mtime_ns if extra else 0
    except OSError:
        mtime = -1
    return _presets_for(extra, mtime)  # an edited file is read again


def get_preset(name: str) -> Preset:
    presets = all_presets()
    if name not in presets:
        raise GenerationConfigError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))} "
            f"(add your own in a TOML file named by BLINDPAIR_PRESETS_FILE)"
        )
    return presets[name]


def validate_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The study's settings with defaults filled in; raises GenerationConfigError listing every problem."""
    merged = {**DEFAULT_SETTINGS, **(settings or {})}
    errors: list[str] = []
    for key in ("frames", "width", "height"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(f"{key} must be a positive whole number, not {value!r}")
    for key in ("width", "height"):
        value = merged[key]
        if isinstance(value, int) and value >= 1 and value % 8:
            errors.append(f"{key} must be a multiple of 8 (the VAE works on 8x8 blocks), not {value}")
    if isinstance(merged["frames"], int) and merged["frames"] > 64:
        errors.append(f"frames must be at most 64 (AnimateDiff's motion modules see 32 frames), not {merged['frames']}")
    fps = merged["fps"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 60:
        errors.append(f"fps must be a number above 0 and at most 60, not {fps!r}")
    seeds = merged["seeds"]
    if isinstance(seeds, list) and len(seeds) > MAX_SEEDS:
        errors.append(f"seeds may list at most {MAX_SEEDS} seeds, not {len(seeds)}; every seed is one more clip "
                      "per prompt and model")
    elif (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63 for s in seeds)):
        errors.append(f"seeds must be a non-empty list of whole numbers >= 0, not {_shown(seeds)}")
    elif len(set(seeds)) != len(seeds):
        errors.append(f"seeds must not repeat: {_shown(seeds)}")
    if merged["dtype"] not in DTYPES:
        errors.append(f"dtype must be one of {', '.join(DTYPES)}, not {merged['dtype']!r}")
    if not isinstance(merged["base_model"], str) or not merged["base_model"].strip():
        errors.append("base_model must name a Hugging Face repo or a local folder")
    if not isinstance(merged["negative_prompt"], str):
        errors.append("negative_prompt must be text")
    if merged["clip_format"] not in CLIP_FORMATS:
        errors.append(f"clip_format must be one of {', '.join(CLIP_FORMATS)}, not {_shown(merged['clip_format'])}")
    elif merged["clip_format"] != "gif" and all(isinstance(merged[k], int) and merged[k] % 2 == 0
                                                  for k in ("width", "height")) is False:
        errors.append("width and height must be even for MP4/WebM clips (4:2:0 chroma)")
    unknown = sorted(set(merged) - set(DEFAULT_SETTINGS))
    if unknown:
        errors.append(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_SETTINGS)}")
    if errors:
        raise GenerationConfigError(errors)
    return merged


def _shown(value: Any, limit: int = 80) -> str:
    """A value quoted in an error, cut short: a refusal must not echo a huge input back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def validate_overrides(model_name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise GenerationConfigError(
            f"model {model_name!r}: cannot override {', '.join(unknown)}; per-model overrides may set only "
            f"{', '.join(OVERRIDE_KEYS)} (seeds, frames, size, fps, negative prompt, base model and dtype are "
            f"standardised across the study's models in its settings)"
        )
    if "guidance" in overrides and isinstance(overrides["guidance"], int) and not isinstance(
            overrides["guidance"], bool):
        overrides["guidance"] = float(overrides["guidance"])
    if not isinstance(overrides.get(OFF_CARD_FLAG, False), bool):
        raise GenerationConfigError(f"model {model_name!r}: off_card must be true or false, not "
                                    f"{_shown(overrides[OFF_CARD_FLAG])}")
    _check_sampling(f"model {model_name!r}", overrides.get("steps", 1), overrides.get("guidance", 1.0))
    return overrides


def off_card_problem(model_name: str, preset: Preset, overrides: dict[str, Any]) -> str | None:
    """Why these overrides are refused: they leave the preset's card and the model is not marked off-card."""
    leaves = off_card(preset, overrides)
    if not leaves or overrides.get(OFF_CARD_FLAG):
        return None
    return (f"model {model_name!r}: {', '.join(leaves)} leaves the card of preset {preset.name!r}, so its clips "
            f"would not show the model as published; run the card's settings, or mark the model as an off-card "
            f"variant (overrides {{\"off_card\": true}}), which the study page and the report then show")


def off_card(preset: Preset, overrides: dict[str, Any]) -> tuple[str, ...]:
    """The overrides that leave ``preset``'s card, in words (empty: the model runs as its card says)."""
    card = {"steps": preset.steps, "guidance": preset.guidance}
    return tuple(f"{key} {overrides[key]} (card: {card[key]})" for key in card
                 if key in overrides and overrides[key] != card[key])


def resolve_run(*, model_name: str, preset: str, overrides: dict[str, Any] | None,
                settings: dict[str, Any] | None) -> RunSpec:
    """Everything one model runs with; raises GenerationConfigError on any bad input."""
    if not preset:
        raise GenerationConfigError(
            f"model {model_name!r} has no preset, so it cannot be generated (its clips can only be imported); "
            f"known presets: {', '.join(sorted(all_presets()))}"
        )
    errors: list[str] = []
    resolved_settings: dict[str, Any] = {}
    p = None
    try:
        p = get_preset(preset)
    except GenerationConfigError as exc:
        errors += exc.errors
    try:
        checked = validate_overrides(model_name, overrides)
    except GenerationConfigError as exc:
        errors += exc.errors
        checked = {}
    try:
        resolved_settings = validate_settings(settings)
    except GenerationConfigError as exc:
        errors += exc.errors
    leaves = off_card(p, checked) if p is not None else ()
    problem = off_card_problem(model_name, p, checked) if p is not None else None
    if problem:
        errors.append(problem)
    if errors or p is None:
        raise GenerationConfigError(errors)
    base = resolved_settings["base_model"]
    return RunSpec(
        preset=p.expand(base),
        base_model=base,
        steps=checked.get("steps", p.steps),
        guidance=float(checked.get("guidance", p.guidance)),
        frames=resolved_settings["frames"],
        width=resolved_settings["width"],
        height=resolved_settings["height"],
        fps=float(resolved_settings["fps"]),
        negative_prompt=resolved_settings["negative_prompt"],
        dtype=resolved_settings["dtype"],
        off_card=leaves,
        clip_format=resolved_settings.get("clip_format", "gif"),
    )
