"""Tools outside Python that change what raters see, checked before any clip is made.

Without gifsicle the worker still writes GIFs, but without its lossy step: a 512x512 clip is several times the
pair page's size budget, so pages load slowly and clips of different models may differ in size. Without
PyAV's H.264 and VP9 encoders, MP4 and WebM clips cannot be written. Until now only the worker's log said
so, once per clip; ``blindpair worker`` and ``blindpair demo`` now say it in the terminal when they start.
Standard library only (plus an optional ``import av``), so the CLI can call it before anything heavy loads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

# (encoder name in FFmpeg, what a study asks for) for the video formats: the encoders PyAV's PyPI wheels bundle.
VIDEO_ENCODERS = (("libx264", "MP4 (H.264)"), ("libvpx-vp9", "WebM (VP9)"))


@dataclass(frozen=True)
class MissingTool:
    name: str
    effect: str
    install: str

    def lines(self) -> list[str]:
        return [f"{self.name} is missing: {self.effect}", f"  Install it: {self.install}"]


def missing_media_tools() -> list[MissingTool]:
    """Each missing tool with what raters would notice and the command that installs it (empty: all there)."""
    missing = []
    if shutil.which("gifsicle") is None:
        missing.append(MissingTool(
            "gifsicle",
            "GIF clips are written without lossy compression, several times larger than the pair page's budget "
            "(slow pages for raters; clip sizes may differ between models).",
            "sudo apt-get install gifsicle   (macOS: brew install gifsicle)",
        ))
    absent = _missing_encoders()
    if absent:
        missing.append(MissingTool(
            "PyAV " + " and ".join(absent),
            "studies set to these formats cannot have their clips written or imported.",
            ".venv/bin/python -m pip install --force-reinstall --no-deps av   (PyPI's wheels bundle FFmpeg "
            "with these encoders; a build against a system FFmpeg may lack them)",
        ))
    return missing


def _missing_encoders() -> list[str]:
    try:
        import av
    except ImportError:
        return [label for _name, label in VIDEO_ENCODERS]
    absent = []
    for name, label in VIDEO_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - av raises UnknownCodecError (and ValueError in older releases)
            absent.append(f"{label} encoder ({name})")
    return absent
