"""Presets (what a model runs) and the study's standardised settings, with validation.

Presets are data (``worker/presets.toml``); a researcher can add more in a TOML file named by
``BLINDPAIR_PRESETS_FILE``. Validation never touches the database: callers validate first, then write.

Three kinds of preset:

- ``animatediff``: diffusers ``AnimateDiffPipeline`` on a study-wide Stable Diffusion 1.5 base model;
- ``diffusers``: any installed diffusers text-to-video pipeline class, with its weights (repo id or folder), an
  optional separate transformer checkpoint, optional LoRAs with scales, scheduler and call arguments. Its
  ``family`` (``FAMILIES``) says what the model natively makes and what it cannot do;
- ``demo``: the CPU renderer of the demo (no weights).

This module is standard library only (the web app validates with it): the installed diffusers is checked by
reading its package index (``installed_pipeline_classes``), never by importing it (6 s and torch).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

PRESETS_FILE = Path(__file__).with_name("presets.toml")
KINDS = ("animatediff", "diffusers", "demo")
DTYPES = ("float16", "bfloat16", "float32")
ROLES = ("", "teacher", "student")
# Seeds per study (and per batch, app/services/generation.py): each seed is a clip per prompt and model, and
# 100,000 seeds were once accepted in one request.
MAX_SEEDS = 100
# Per-model overrides may change only how a model samples; everything else is standardised across the study.
OVERRIDE_KEYS = ("steps", "guidance", "guidance_2", "off_card")
# Steps or guidance other than the preset's leave its model card (a distilled model is trained for its steps and
# for no CFG): refused unless the model is marked {"off_card": true}, then shown as an off-card variant.
OFF_CARD_FLAG = "off_card"
MAX_FRAMES = 513
MAX_SIDE = 2048

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
# The settings a family's native values replace when a study's teacher is of that family.
NATIVE_KEYS = ("frames", "width", "height", "fps", "dtype")
CLIP_FORMATS = ("gif", "mp4", "webm")


class GenerationConfigError(ValueError):
    """Bad preset, override or setting; ``errors`` lists every problem in words."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class Family:
    """What a model family natively makes and what its VAE and patching allow.

    ``frame_step``/``frame_offset``: valid frame counts are ``frame_step * k + frame_offset`` (the VAE compresses
    time by ``frame_step`` and keeps the first frame apart: Wan and HunyuanVideo 4k+1, LTX-Video 8k+1, Mochi 6k+1).
    ``spatial``: width and height must be multiples of it (VAE downsampling x transformer patch size).
    ``guidance``: ``cfg`` (guidance > 1 runs a second, unconditional pass) or ``embedded`` (HunyuanVideo: the
    guidance scale is an input of one pass; ``true_cfg_scale`` > 1 would add the second).
    """

    key: str
    label: str
    frames: int
    width: int
    height: int
    fps: float
    dtype: str
    frame_step: int = 1
    frame_offset: int = 0
    spatial: int = 8
    max_frames: int = MAX_FRAMES
    guidance: str = "cfg"
    pipelines: tuple[str, ...] = ()
    note: str = ""

    def native(self) -> dict[str, Any]:
        return {"frames": self.frames, "width": self.width, "height": self.height, "fps": self.fps,
                "dtype": self.dtype}

    def frame_rule(self) -> str:
        if self.frame_step == 1:
            return f"1 to {self.max_frames}"
        return f"{self.frame_step}k+{self.frame_offset}, at most {self.max_frames}"

    def nearest_frames(self, frames: int) -> list[int]:
        """The valid frame counts nearest ``frames`` (one or two)."""
        lo = max(self.frame_offset or self.frame_step,
                 (frames - self.frame_offset) // self.frame_step * self.frame_step + self.frame_offset)
        hi = lo + self.frame_step
        out = [v for v in (lo, hi) if 1 <= v <= self.max_frames]
        return out or [self.max_frames - (self.max_frames - self.frame_offset) % self.frame_step]

    def frames_ok(self, frames: int) -> bool:
        return (1 <= frames <= self.max_frames and frames >= self.frame_offset
                and (frames - self.frame_offset) % self.frame_step == 0)

    def nearest_side(self, value: int) -> list[int]:
        lo = max(self.spatial, value // self.spatial * self.spatial)
        return sorted({lo, lo + self.spatial} - {value})


# Native settings from each family's model card (cited in worker/presets.toml next to every preset).
FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("animatediff", "AnimateDiff (Stable Diffusion 1.5 + motion adapter)", 16, 512, 512, 8, "float16",
           spatial=8, max_frames=64, pipelines=("AnimateDiffPipeline",),
           note="motion modules see 32 frames; 64 is the most the worker accepts"),
    Family("wan", "Wan 2.1 / 2.2 (Wan-AI)", 81, 832, 480, 16, "bfloat16", frame_step=4, frame_offset=1,
           spatial=16, max_frames=257, pipelines=("WanPipeline",),
           note="VAE: 4x in time (first frame apart), 8x in space; transformer patch 2x2"),
    Family("ltx", "LTX-Video (Lightricks)", 161, 768, 512, 24, "bfloat16", frame_step=8, frame_offset=1,
           spatial=32, max_frames=257, pipelines=("LTXPipeline", "LTXConditionPipeline"),
           note="VAE: 8x in time, 32x in space; the card recommends at most 257 frames"),
    Family("hunyuanvideo", "HunyuanVideo (Tencent)", 129, 1280, 720, 24, "bfloat16", frame_step=4, frame_offset=1,
           spatial=16, max_frames=257, guidance="embedded", pipelines=("HunyuanVideoPipeline",),
           note="guidance is embedded (one pass per step): guidance_scale is an input of the transformer"),
    Family("cogvideox", "CogVideoX (THUDM / Zhipu AI)", 49, 720, 480, 8, "bfloat16", frame_step=4, frame_offset=1,
           spatial=16, max_frames=49, pipelines=("CogVideoXPipeline",),
           note="CogVideoX 1.0 was trained on 49 frames at 720x480 and makes no longer clips"),
    Family("mochi", "Mochi 1 (Genmo)", 163, 848, 480, 30, "bfloat16", frame_step=6, frame_offset=1,
           spatial=16, max_frames=259, pipelines=("MochiPipeline",),
           note="VAE: 6x in time, 8x in space; transformer patch 2x2"),
    Family("demo", "Demo renderer (no model)", 16, 512, 512, 8, "float16", spatial=8, max_frames=64),
)}


@dataclass(frozen=True)
class Lora:
    """A LoRA over a diffusers preset's transformer: a repo id or local folder, the file in it, its scale, and
    which transformer it goes into (``transformer_2``: Wan 2.2's low-noise expert)."""

    repo: str
    file: str
    scale: float = 1.0
    target: str = "transformer"

    def describe(self) -> dict[str, Any]:
        return {"repo": self.repo, "file": self.file, "scale": self.scale, "target": self.target}


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str
    description: str = ""
    # what the study page and `blindpair presets` show: the family, the role in a teacher/student pair, the card
    family: str = ""
    role: str = ""
    teacher: str = ""
    card: str = ""
    # animatediff
    adapter: str = ""
    adapter_repo: str = ""
    adapter_file: str = ""
    adapter_config: dict[str, Any] = field(default_factory=dict)
    # diffusers
    pipeline: str = ""
    weights: str = ""
    transformer: str = ""
    transformer_subfolder: str = ""
    transformer_file: str = ""
    loras: tuple[Lora, ...] = ()
    component_dtypes: dict[str, str] = field(default_factory=dict)
    call_args: dict[str, Any] = field(default_factory=dict)
    memory_gb: dict[str, float] = field(default_factory=dict)
    vae_tiling: bool = False
    # both
    scheduler: str = ""
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    steps: int = 1
    guidance: float = 1.0
    guidance_2: float | None = None
    style: str = ""

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family or ("demo" if self.kind == "demo" else "animatediff")]

    def expand(self, base_model: str) -> Preset:
        """Replace ``{base_model}`` in the weight locations (tiny presets keep all weights in one folder)."""
        def sub(value: str) -> str:
            return value.replace("{base_model}", base_model)

        return replace(self, adapter=sub(self.adapter), adapter_repo=sub(self.adapter_repo),
                       weights=sub(self.weights), transformer=sub(self.transformer),
                       loras=tuple(replace(lo, repo=sub(lo.repo)) for lo in self.loras))


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
    guidance_2: float | None = None
    clip_format: str = "gif"  # the study's file format: one encoder and its settings for every model

    @property
    def uses_cfg(self) -> bool:
        # diffusers applies classifier-free guidance only when guidance_scale > 1 (one extra pass); Wan 2.2's
        # guidance_2 only scales the low-noise expert's two passes, which guidance_scale turns on or off for both.
        # HunyuanVideo's guidance is embedded in one pass, and its true_cfg_scale > 1 is what adds the second.
        if self.preset.family_info.guidance == "embedded":
            return float(self.preset.call_args.get("true_cfg_scale", 1.0)) > 1.0
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
        elif p.kind == "diffusers":
            out.update(
                family=p.family, role=p.role, card=p.card, pipeline=p.pipeline, weights=p.weights,
                scheduler=p.scheduler or "(the weights' own)", scheduler_config=dict(p.scheduler_config),
                steps=self.steps, guidance=self.guidance, dtype=self.dtype,
            )
            if self.guidance_2 is not None:
                out["guidance_2"] = self.guidance_2
            if p.transformer:
                out["transformer"] = "/".join(x for x in (p.transformer, p.transformer_subfolder or p.transformer_file)
                                              if x)
            if p.loras:
                out["loras"] = [lo.describe() for lo in p.loras]
            if p.call_args:
                out["call_args"] = dict(p.call_args)
            if p.component_dtypes:
                out["component_dtypes"] = dict(p.component_dtypes)
        else:
            out.update(style=p.style)
        out.update(frames=self.frames, width=self.width, height=self.height, fps=self.fps)
        if self.off_card:
            out["off_card"] = list(self.off_card)
        return out


# --- the installed diffusers, without importing it -----------------------------------------------------------

@cache
def installed_pipeline_classes() -> frozenset[str] | None:
    """Pipeline class names the installed diffusers exports, read from its ``__init__.py`` (whose lazy
    ``_import_structure`` lists every public name as a string); ``None`` where diffusers is not installed here
    (the web app's machine may not have it: the worker checks again when it loads the pipeline)."""
    try:
        spec = importlib.util.find_spec("diffusers")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    try:
        text = Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return None
    return frozenset(re.findall(r'"([A-Za-z0-9_]+Pipeline)"', text))


def video_pipeline_classes() -> list[str]:
    """The pipeline classes a family knows (what a diffusers preset may name), as installed here."""
    known = [p for f in FAMILIES.values() for p in f.pipelines]
    installed = installed_pipeline_classes()
    return [p for p in known if installed is None or p in installed]


# --- parsing and checking presets ----------------------------------------------------------------------------

def _parse_loras(where: str, raw: Any, errors: list[str]) -> tuple[Lora, ...]:
    if raw in (None, []):
        return ()
    if not isinstance(raw, list):
        errors.append(f"{where}: loras must be a list of tables such as "
                      "{ repo = \"...\", file = \"x.safetensors\", scale = 1.0 }")
        return ()
    out = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            errors.append(f"{where}: LoRA {i} must be a table with repo, file, scale and target")
            continue
        unknown = sorted(set(item) - {"repo", "file", "scale", "target"})
        if unknown:
            errors.append(f"{where}: LoRA {i} has unknown field(s) {', '.join(unknown)}; known: repo, file, scale, "
                          "target")
        repo, file, scale = item.get("repo", ""), item.get("file", ""), item.get("scale", 1.0)
        target = item.get("target", "transformer")
        if not isinstance(repo, str) or not repo.strip():
            errors.append(f"{where}: LoRA {i} needs repo (a Hugging Face repo id or a local folder)")
        if not isinstance(file, str) or not file.endswith(".safetensors"):
            errors.append(f"{where}: LoRA {i} needs file, a .safetensors state dict in its repo, not {file!r}")
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 4:
            errors.append(f"{where}: LoRA {i} scale must be a number above 0 and at most 4, not {scale!r}")
        if target not in ("transformer", "transformer_2"):
            errors.append(f"{where}: LoRA {i} target must be transformer or transformer_2 (Wan 2.2's low-noise "
                          f"expert), not {target!r}")
        if isinstance(repo, str) and isinstance(file, str) and isinstance(scale, int | float):
            out.append(Lora(repo=repo, file=file, scale=float(scale), target=str(target)))
    return tuple(out)


def _check_diffusers(name: str, raw: dict[str, Any], errors: list[str]) -> None:
    where = f"preset {name!r}"
    family = raw.get("family", "")
    if family not in FAMILIES or family in ("animatediff", "demo"):
        video = [k for k in FAMILIES if k not in ("animatediff", "demo")]
        errors.append(f"{where}: family must be one of {', '.join(video)}, not {family!r} (the family fixes the "
                      "native frames, size and fps and what the VAE allows)")
    pipeline = raw.get("pipeline", "")
    installed = installed_pipeline_classes()
    if not isinstance(pipeline, str) or not pipeline:
        errors.append(f"{where}: pipeline must name a diffusers pipeline class; known: "
                      f"{', '.join(video_pipeline_classes())}")
    elif installed is not None and pipeline not in installed:
        close = difflib.get_close_matches(pipeline, sorted(installed), n=3)
        errors.append(f"{where}: the installed diffusers has no pipeline class {pipeline!r}"
                      + (f" (did you mean {', '.join(close)}?)" if close else "")
                      + f"; known text-to-video classes: {', '.join(video_pipeline_classes())}")
    elif family in FAMILIES and FAMILIES[family].pipelines and pipeline not in FAMILIES[family].pipelines:
        errors.append(f"{where}: pipeline {pipeline} does not make {FAMILIES[family].label} videos; that family "
                      f"uses {', '.join(FAMILIES[family].pipelines)}")
    if not isinstance(raw.get("weights", ""), str) or not raw.get("weights"):
        errors.append(f"{where}: weights must name a Hugging Face repo id or a local folder")
    if raw.get("transformer_file") and raw.get("transformer_subfolder"):
        errors.append(f"{where}: give transformer_subfolder (a diffusers folder) or transformer_file (a state "
                      "dict), not both")
    if (raw.get("transformer_file") or raw.get("transformer_subfolder")) and not raw.get("transformer"):
        errors.append(f"{where}: transformer_subfolder/transformer_file need transformer (the repo or folder)")
    for key, value in (raw.get("component_dtypes") or {}).items():
        if value not in DTYPES:
            errors.append(f"{where}: component_dtypes.{key} must be one of {', '.join(DTYPES)}, not {value!r}")
    if raw.get("scheduler_config") and not isinstance(raw["scheduler_config"], dict):
        errors.append(f"{where}: scheduler_config must be a table")
    call_args = raw.get("call_args") or {}
    reserved = {"prompt", "negative_prompt", "num_frames", "width", "height", "num_inference_steps",
                "guidance_scale", "guidance_scale_2", "generator", "output_type"}
    clash = sorted(set(call_args) & reserved)
    if clash:
        errors.append(f"{where}: call_args may not set {', '.join(clash)}: the study's settings and the preset's "
                      "steps/guidance/guidance_2 set them")
    timesteps = call_args.get("timesteps")
    if timesteps is not None and (not isinstance(timesteps, list) or len(timesteps) != raw.get("steps", 1)):
        errors.append(f"{where}: call_args.timesteps has {len(timesteps) if isinstance(timesteps, list) else '?'} "
                      f"entries but steps is {raw.get('steps', 1)}; they must agree (the cost counts steps)")
    if raw.get("guidance_2") is not None and pipeline != "WanPipeline":
        errors.append(f"{where}: guidance_2 is Wan 2.2's second guidance (its low-noise expert); {pipeline or 'this'}"
                      " pipeline has none")
    memory = raw.get("memory_gb") or {}
    if not isinstance(memory, dict) or not memory or any(
            isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in memory.values()):
        errors.append(f"{where}: memory_gb must state the estimate the worker plans offloading with, e.g. "
                      "{ transformer = 28.6, text_encoder = 11.4, vae = 0.5, activations = 6 } (GB)")


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
    if kind == "diffusers":
        _check_diffusers(name, raw, errors)
    if kind == "demo" and raw.get("style") not in ("smooth", "jittery"):
        errors.append(f"preset {name!r}: style must be smooth or jittery")
    if raw.get("role", "") not in ROLES:
        errors.append(f"preset {name!r}: role must be teacher or student, not {raw.get('role')!r}")
    loras = _parse_loras(f"preset {name!r}", raw.get("loras"), errors)
    if errors:
        raise GenerationConfigError(errors)
    fields = {k: v for k, v in raw.items() if k in known and k != "loras"}
    if "guidance_2" in fields and fields["guidance_2"] is not None:
        fields["guidance_2"] = float(fields["guidance_2"])
    preset = Preset(name=name, loras=loras, **fields)
    _check_sampling(f"preset {name!r}", preset.steps, preset.guidance, preset.guidance_2)
    return preset


def _check_sampling(where: str, steps: Any, guidance: Any, guidance_2: Any = None) -> None:
    errors = []
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        errors.append(f"{where}: steps must be a whole number from 1 to 1000, not {steps!r}")
    for label, value in (("guidance", guidance), ("guidance_2", guidance_2)):
        if label == "guidance_2" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 50:
            errors.append(f"{where}: {label} must be a number from 0 to 50, not {value!r}")
    if errors:
        raise GenerationConfigError(errors)


def _check_pairs(presets: dict[str, Preset]) -> None:
    errors = []
    for p in presets.values():
        if p.teacher and p.teacher not in presets:
            errors.append(f"preset {p.name!r}: its teacher {p.teacher!r} is not a preset")
        elif p.teacher and presets[p.teacher].family != p.family:
            errors.append(f"preset {p.name!r}: its teacher {p.teacher!r} is of family {presets[p.teacher].family!r}, "
                          f"not {p.family!r}")
    if errors:
        raise GenerationConfigError(errors)


def load_presets_file(path: Path) -> dict[str, Preset]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GenerationConfigError(f"cannot read presets file {path}: {exc}") from exc
    errors: list[str] = []
    out: dict[str, Preset] = {}
    for name, raw in data.items():
        try:
            out[name] = _parse_preset(name, raw)
        except GenerationConfigError as exc:
            errors += exc.errors
    if errors:
        raise GenerationConfigError(errors)
    return out


@lru_cache(maxsize=8)
def _presets_for(extra: str, _mtime_ns: int) -> dict[str, Preset]:
    presets = load_presets_file(PRESETS_FILE)
    if extra:
        presets.update(load_presets_file(Path(extra)))
    _check_pairs(presets)
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


def teacher_student_pairs() -> list[tuple[Preset, list[Preset]]]:
    """Every teacher preset with its students (the pairs `blindpair presets` lists), tiny test presets left out."""
    presets = all_presets()
    out = []
    for p in sorted(presets.values(), key=lambda p: (p.family, p.name)):
        if p.role == "teacher" and not p.name.startswith("tiny-"):
            out.append((p, sorted((s for s in presets.values() if s.teacher == p.name), key=lambda s: s.name)))
    return out


# --- the study's settings ------------------------------------------------------------------------------------

def study_families(preset_names: list[str]) -> list[Family]:
    """The families of a study's models, teacher's first (a model without a known preset adds nothing)."""
    presets = all_presets()
    known = [presets[n] for n in preset_names if n in presets]
    known.sort(key=lambda p: 0 if p.role == "teacher" else 1)
    out: list[Family] = []
    for p in known:
        if p.family_info not in out:
            out.append(p.family_info)
    return out


def family_defaults(preset_names: list[str]) -> dict[str, Any]:
    """DEFAULT_SETTINGS with the native frames, size, fps and dtype of the study's teacher's family (the first
    teacher among its models, else its first model): a Wan study defaults to 81 frames at 832x480, 16 fps."""
    families = study_families(preset_names)
    if not families or families[0].key in ("animatediff", "demo"):
        return dict(DEFAULT_SETTINGS)
    return {**DEFAULT_SETTINGS, **families[0].native()}


def mixed_family_note(preset_names: list[str]) -> str:
    """A sentence when a study mixes families (each is run at the shared settings, not its own native ones)."""
    families = [f for f in study_families(preset_names) if f.key != "demo"]
    if len(families) < 2:
        return ""
    natives = "; ".join(f"{f.label}: {f.frames} frames at {f.width}x{f.height}, {f.fps:g} fps" for f in families)
    return (f"This study mixes families ({natives}); every model runs at the study's shared settings, which default "
            f"from {families[0].label}.")


def check_family(family: Family, settings: dict[str, Any], where: str = "") -> list[str]:
    """What ``family`` cannot make at these settings, each naming the nearest valid values."""
    errors: list[str] = []
    prefix = f"{where}: " if where else ""
    frames, width, height = settings.get("frames"), settings.get("width"), settings.get("height")
    if isinstance(frames, int) and not isinstance(frames, bool) and frames >= 1 and not family.frames_ok(frames):
        near = " or ".join(map(str, family.nearest_frames(frames)))
        errors.append(f"{prefix}{family.label} makes {family.frame_rule()} frames, not {frames}; nearest: {near}")
    for key, value in (("width", width), ("height", height)):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value % family.spatial:
            near = " or ".join(map(str, family.nearest_side(value)))
            errors.append(f"{prefix}{key} must be a multiple of {family.spatial} for {family.label} (its VAE and "
                          f"patching), not {value}; nearest: {near}")
    return errors


def validate_settings(settings: dict[str, Any] | None, *, presets: list[str] | None = None) -> dict[str, Any]:
    """The study's settings with defaults filled in; raises GenerationConfigError listing every problem.

    ``presets``: the study's models' presets. Defaults then come from the teacher's family, and the settings are
    checked against every model's family (frame counts and sizes its VAE can make).
    """
    merged = {**family_defaults(list(presets or [])), **(settings or {})}
    errors: list[str] = []
    for key in ("frames", "width", "height"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(f"{key} must be a positive whole number, not {value!r}")
    for key in ("width", "height"):
        value = merged[key]
        if isinstance(value, int) and value > MAX_SIDE:
            errors.append(f"{key} must be at most {MAX_SIDE}, not {value}")
    if isinstance(merged["frames"], int) and merged["frames"] > MAX_FRAMES:
        errors.append(f"frames must be at most {MAX_FRAMES}, not {merged['frames']}")
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
    # What each model's family can make (AnimateDiff's rules where no preset is known): multiples of 8 for its VAE,
    # 4k+1 frames for Wan, ... each with the nearest valid values.
    for family in study_families(list(presets or [])) or [FAMILIES["animatediff"]]:
        errors += [e for e in check_family(family, merged) if e not in errors]
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
    for key in ("guidance", "guidance_2"):
        if key in overrides and isinstance(overrides[key], int) and not isinstance(overrides[key], bool):
            overrides[key] = float(overrides[key])
    if not isinstance(overrides.get(OFF_CARD_FLAG, False), bool):
        raise GenerationConfigError(f"model {model_name!r}: off_card must be true or false, not "
                                    f"{_shown(overrides[OFF_CARD_FLAG])}")
    _check_sampling(f"model {model_name!r}", overrides.get("steps", 1), overrides.get("guidance", 1.0),
                    overrides.get("guidance_2"))
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
    card = {"steps": preset.steps, "guidance": preset.guidance, "guidance_2": preset.guidance_2}
    return tuple(f"{key} {overrides[key]} (card: {card[key]})" for key in card
                 if key in overrides and overrides[key] != card[key])


def resolve_run(*, model_name: str, preset: str, overrides: dict[str, Any] | None,
                settings: dict[str, Any] | None) -> RunSpec:
    """Everything one model runs with; raises GenerationConfigError on any bad input.

    ``settings`` are the study's (already merged with its family defaults when the study was created); missing
    keys default from this preset's family.
    """
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
    if p is not None and "guidance_2" in checked and p.guidance_2 is None:
        errors.append(f"model {model_name!r}: cannot override guidance_2: preset {p.name!r} has no second guidance "
                      "(only Wan 2.2's two-expert pipeline has one)")
    try:
        resolved_settings = validate_settings(settings, presets=[preset] if p is not None else None)
    except GenerationConfigError as exc:
        errors += [f"model {model_name!r} ({preset}): {e}" if p and p.kind == "diffusers" else e for e in exc.errors]
    leaves = off_card(p, checked) if p is not None else ()
    problem = off_card_problem(model_name, p, checked) if p is not None else None
    if problem:
        errors.append(problem)
    if errors or p is None:
        raise GenerationConfigError(errors)
    base = resolved_settings["base_model"]
    guidance_2 = checked.get("guidance_2", p.guidance_2)
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
        guidance_2=None if guidance_2 is None else float(guidance_2),
        clip_format=resolved_settings.get("clip_format", "gif"),
    )


# --- memory: what fits where ---------------------------------------------------------------------------------

OFFLOAD_MODES = ("none", "model_cpu_offload", "group_offload")
# Headroom left on the card: the CUDA context, the allocator's fragmentation and the other clip in flight.
GPU_HEADROOM = 0.9
# What group offloading (leaf level, streamed) keeps on the device besides activations: a few layers in flight.
GROUP_OFFLOAD_RESIDENT_GB = 1.0


@dataclass(frozen=True)
class MemoryPlan:
    """How a model runs on a GPU of ``gpu_gb``: the offload mode, VAE tiling, and the peak it expects (GB)."""

    offload: str
    vae_tiling: bool
    estimate_gb: float
    fits: bool
    gpu_gb: float | None
    reason: str

    def describe(self) -> dict[str, Any]:
        return {"offload": self.offload, "vae_tiling": self.vae_tiling, "estimate_gb": round(self.estimate_gb, 1),
                "fits": self.fits, "gpu_gb": None if self.gpu_gb is None else round(self.gpu_gb, 1),
                "reason": self.reason}


def activation_gb(preset: Preset, *, frames: int, width: int, height: int) -> float:
    """The stated activation estimate, scaled from the family's native clip by the number of pixels in the clip
    (latent tokens grow with frames x width x height; the estimate is linear, attention runs as SDPA/flash)."""
    family = preset.family_info
    native = family.frames * family.width * family.height
    scale = (frames * width * height) / native if native else 1.0
    return float(preset.memory_gb.get("activations", 0.0)) * scale


def estimate_peaks_gb(preset: Preset, *, frames: int, width: int, height: int) -> dict[str, float]:
    """Expected peak GB per offload mode, from the preset's stated memory_gb (weights per component, activations
    at the family's native clip)."""
    weights = {k: float(v) for k, v in preset.memory_gb.items() if k != "activations"}
    act = activation_gb(preset, frames=frames, width=width, height=height)
    total = sum(weights.values())
    largest = max(weights.values(), default=0.0)
    return {"none": total + act, "model_cpu_offload": largest + act, "group_offload": GROUP_OFFLOAD_RESIDENT_GB + act}


def plan_memory(preset: Preset, *, gpu_gb: float | None, frames: int, width: int, height: int) -> MemoryPlan:
    """Full residency if everything fits, else model CPU offload (one component on the GPU at a time), else group
    offload (layers streamed from CPU memory); VAE tiling when the preset asks for it or the GPU is tight.
    ``gpu_gb`` None: the CPU (nothing to offload)."""
    peaks = estimate_peaks_gb(preset, frames=frames, width=width, height=height)
    if gpu_gb is None:
        return MemoryPlan("none", preset.vae_tiling, peaks["none"], True, None, "CPU: everything in main memory")
    budget = gpu_gb * GPU_HEADROOM
    for mode in OFFLOAD_MODES:
        if peaks[mode] <= budget:
            tight = mode != "none"
            why = {"none": "everything fits on the GPU",
                   "model_cpu_offload": "the whole model does not fit; one component at a time does",
                   "group_offload": "one component does not fit; layers are streamed from CPU memory"}[mode]
            return MemoryPlan(mode, preset.vae_tiling or tight, peaks[mode], True, gpu_gb,
                              f"{why} ({peaks[mode]:.1f} GB expected of {gpu_gb:.0f} GB)")
    return MemoryPlan("group_offload", True, peaks["group_offload"], False, gpu_gb,
                      f"does not fit even with group offloading: {peaks['group_offload']:.1f} GB expected, "
                      f"{budget:.1f} GB usable of {gpu_gb:.0f} GB; lower frames or size")


def fit_warnings(specs: list[tuple[str, RunSpec]], gpus: list[tuple[str, float]]) -> list[str]:
    """Sentences for the study page: each model that no connected worker's GPU can hold (``gpus``: (worker,
    total GB)), and each that only fits with offloading (slower, which changes the speed comparison)."""
    out: list[str] = []
    if not gpus:
        return out
    best = max(g for _, g in gpus)
    for model, spec in specs:
        if spec.preset.kind != "diffusers":
            continue
        plan = plan_memory(spec.preset, gpu_gb=best, frames=spec.frames, width=spec.width, height=spec.height)
        if not plan.fits:
            out.append(f"Model {model!r} ({spec.preset.name}) cannot fit the connected workers' GPUs (largest "
                       f"{best:.0f} GB): {plan.reason}.")
        elif plan.offload != "none":
            out.append(f"Model {model!r} ({spec.preset.name}) runs with {plan.offload.replace('_', ' ')} on a "
                       f"{best:.0f} GB GPU ({plan.estimate_gb:.1f} GB expected): slower than full residency, and "
                       "its clips' cost records say so.")
    return out

