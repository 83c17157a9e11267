"""Optional answers per study, all off unless the study turns them on (``Study.answer_options``):

- ``both_bad``: a fourth choice beside left / right / indistinguishable, "Both are bad" (GenAI-Arena's fourth
  vote). **In the statistics it is a tie**, decided once here: it says neither model is preferred, which is what
  a tie says to every estimator (Bradley-Terry and the preference share use decided votes; the tie share and
  Davidson's model count it as a tie), exactly as the statistics already fold FastChat's ``tie (bothbad)``
  (app/stats/frame.py). It is stored as clicked (``VoteChoice.side = "both_bad"``) with the tie's outcome, so
  the answers export tells it apart, and the votes export (the statistics' input) shows ``tie``.
- ``reason_tags``: a short list of tags an evaluator may tick per pair (Potato's rationale), e.g. "blurry".
- ``comment``: a short free-text comment per pair: ``off``, ``optional`` or ``required``; tags are never
  required unless ``tags_required`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

BOTH_BAD = "both_bad"
COMMENT_MODES = ("off", "optional", "required")
MAX_TAGS = 12
MAX_TAG_CHARS = 40
MAX_COMMENT_CHARS = 1000


class AnswerOptionsError(ValueError):
    """Bad answer options; ``errors`` lists every problem in words."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


class InvalidExtras(ValueError):
    """A comment or tags the study does not accept (too long, unknown tag, missing where required)."""


@dataclass(frozen=True)
class AnswerOptions:
    both_bad: bool = False
    reason_tags: tuple[str, ...] = ()
    tags_required: bool = False
    comment: str = "off"

    @property
    def any(self) -> bool:
        return self.both_bad or bool(self.reason_tags) or self.comment != "off"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "reason_tags": list(self.reason_tags)}


def validate_answer_options(data: Mapping[str, Any] | None) -> AnswerOptions:
    """The options from a study's JSON or a form; raises ``AnswerOptionsError`` listing every problem."""
    data = dict(data or {})
    errors: list[str] = []
    unknown = sorted(set(data) - {"both_bad", "reason_tags", "tags_required", "comment"})
    if unknown:
        errors.append(f"unknown answer option(s) {', '.join(unknown)}; known: both_bad, reason_tags, "
                      "tags_required, comment")
    both_bad, required = data.get("both_bad", False), data.get("tags_required", False)
    for name, value in (("both_bad", both_bad), ("tags_required", required)):
        if not isinstance(value, bool):
            errors.append(f"{name} must be true or false, not {value!r}")
    tags = data.get("reason_tags") or []
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        errors.append("reason_tags must be a list of short texts")
        tags = []
    tags = [t.strip() for t in tags if t.strip()]
    if len(tags) > MAX_TAGS:
        errors.append(f"at most {MAX_TAGS} reason tags, not {len(tags)}")
    if any(len(t) > MAX_TAG_CHARS for t in tags):
        errors.append(f"reason tags must be at most {MAX_TAG_CHARS} characters")
    if len(set(tags)) != len(tags):
        errors.append("reason tags must not repeat")
    if required is True and not tags:
        errors.append("tags_required needs reason_tags")
    comment = data.get("comment", "off")
    if comment not in COMMENT_MODES:
        errors.append(f"comment must be one of {', '.join(COMMENT_MODES)}, not {comment!r}")
    if errors:
        raise AnswerOptionsError(errors)
    return AnswerOptions(both_bad=bool(both_bad), reason_tags=tuple(tags), tags_required=bool(required),
                         comment=str(comment))


def answer_options(stored: Mapping[str, Any] | None) -> AnswerOptions:
    """A study's options as stored (validated when set); none of them for a study without any."""
    try:
        return validate_answer_options(stored)
    except AnswerOptionsError:
        return AnswerOptions()


def clean_extras(options: AnswerOptions, *, comment: str | None,
                 reason_tags: Sequence[str] | None) -> tuple[str | None, list[str] | None]:
    """The comment and tags to store with a vote; ``InvalidExtras`` for what the study does not accept."""
    text = (comment or "").strip()
    tags = [t for t in (reason_tags or []) if t]
    if text and options.comment == "off":
        raise InvalidExtras("This study does not take comments.")
    if len(text) > MAX_COMMENT_CHARS:
        raise InvalidExtras(f"Please keep the comment under {MAX_COMMENT_CHARS} characters.")
    if options.comment == "required" and not text:
        raise InvalidExtras("Please add a short comment about this pair.")
    unknown = [t for t in tags if t not in options.reason_tags]
    if unknown:
        raise InvalidExtras(f"Unknown reason tag(s): {', '.join(unknown[:3])}.")
    if options.tags_required and not tags:
        raise InvalidExtras("Please tick at least one reason.")
    return (text or None), (sorted(set(tags), key=list(options.reason_tags).index) or None)
