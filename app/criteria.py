"""The default six criteria. A study stores its own copy as rows, so it can use another list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CriterionSpec:
    key: str
    label: str
    description: str


DEFAULT_CRITERIA: tuple[CriterionSpec, ...] = (
    CriterionSpec(
        "text_relevance",
        "Video-text relevance",
        "Which video shows what the prompt describes more completely and faithfully?",
    ),
    CriterionSpec(
        "appearance_distortion",
        "Appearance distortion",
        "Which video has fewer malformed objects, warped faces or bodies, and visual artifacts?",
    ),
    CriterionSpec(
        "appearance_aesthetics",
        "Appearance aesthetics",
        "Which video is more pleasing to look at in colour, lighting, composition and detail?",
    ),
    CriterionSpec(
        "motion_naturalness",
        "Motion naturalness",
        "Which video moves more plausibly, without flicker, jumps or objects morphing between frames?",
    ),
    CriterionSpec(
        "motion_amplitude",
        "Motion amplitude",
        "Which video has more motion, in the subject or the camera, rather than a nearly still image?",
    ),
    CriterionSpec(
        "overall_quality",
        "Overall quality",
        "All things considered, which video would you rather use for this prompt?",
    ),
)
