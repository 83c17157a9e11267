"""Prompts: the built-in suite, CSV/JSONL imports checked line by line, and adding prompts to a study."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Prompt, Study
from app.prompts import SUITE_PATH
from app.prompts.clip_tokenizer import count_tokens

# SD-1.5's text encoder has 77 positions (BOS + 75 tokens + EOS); the pipeline truncates anything longer
# without telling anyone, so a longer prompt would be judged on text the model never saw.
MAX_CLIP_TOKENS = 77
DETAILS = ("short", "medium", "long")
REQUIRED_FIELDS = ("id", "text", "theme")
OPTIONAL_FIELDS = ("detail", "tags")
# Prompt ids become file names in import-gifs (``<id>.gif``), so they stay path-safe.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_THEME_LEN = 100
MAX_TAG_LEN = 40
# Refused anywhere in a prompt's text, theme or tags: control characters (C0, DEL, C1; ordinary whitespace is
# collapsed to single spaces instead), lone surrogates (not characters at all: the database cannot store them),
# and the bidirectional overrides and isolates that make text display differently from what it says (Trojan
# Source, CVE-2021-42574): an evaluator must read the prompt the model was given.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class PromptSpec:
    external_id: str
    text: str
    theme: str
    detail: str = "medium"
    tags: tuple[str, ...] = ()


class PromptError(ValueError):
    """Prompts that cannot be added; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors) if len(self.errors) <= 3 else
                         "; ".join(self.errors[:3]) + f"; ... ({len(self.errors)} problems in all)")


class PromptFileError(PromptError):
    """A prompt file refused as a whole; each error reads ``line N: ...``."""


def count_clip_tokens(text: str) -> int:
    """Exact SD-1.5 (OpenAI CLIP BPE) token count of ``text``, including the BOS and EOS tokens."""
    return count_tokens(text)


def character_problem(value: str) -> str | None:
    """Why ``value`` (whitespace already collapsed) holds a character no prompt may carry, or None."""
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) in ("Cc", "Cs") or char in BIDI_CONTROLS:
            return (f"holds the invisible control character U+{ord(char):04X} (position {position}); remove it, "
                    "prompts are plain text")
    return None


def token_problem(text: str) -> str | None:
    n = count_clip_tokens(text)
    if n > MAX_CLIP_TOKENS:
        return (f"is {n} CLIP tokens; the text encoder keeps only {MAX_CLIP_TOKENS} and would silently cut the "
                "rest — shorten it")
    return None


def load_builtin_suite() -> list[PromptSpec]:
    """The 100 prompts shipped with BlindPair (``app/prompts/suite.jsonl``)."""
    return parse_prompt_file(SUITE_PATH.read_bytes(), SUITE_PATH.name)


def list_themes(specs: list[PromptSpec]) -> dict[str, int]:
    """Theme -> number of prompts, in the order themes first appear."""
    return dict(Counter(s.theme for s in specs))


# --- parsing ---------------------------------------------------------------------------------------------


def _decode_lines(data: bytes, errors: list[str]) -> list[str]:
    """Decode line by line so that every line with bad bytes is reported, not just the first."""
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as Excel writes it
        data = data[3:]
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            errors.append(f"line {number}: not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                          "save the file as UTF-8")
            lines.append("")
    return lines


def _split_tags(value: str) -> list[str]:
    return re.split(r"[;|]", value)


def _check_record(line: int, record: dict, errors: list[str], seen: dict[str, int]) -> PromptSpec | None:
    """Validate one record (values already strings/lists); append errors; return the spec if it is good."""
    before = len(errors)
    values = {}
    for key in REQUIRED_FIELDS:
        value = record.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.append(f"line {line}: '{key}' is missing or blank")
        elif not isinstance(value, str):
            errors.append(f"line {line}: '{key}' must be text, got {type(value).__name__}")
        else:
            values[key] = " ".join(value.split()) if key != "id" else value.strip()

    pid = values.get("id")
    if pid is not None:
        if not ID_RE.fullmatch(pid):
            errors.append(f"line {line}: id {pid[:100]!r} may only use letters, digits, '.', '_' and '-' (at most 100 "
                          "characters, starting with a letter or digit): it becomes a GIF file name")
        elif pid in seen:
            errors.append(f"line {line}: id {pid!r} is already used on line {seen[pid]}")
        else:
            seen[pid] = line
    theme = values.get("theme")
    if theme is not None and len(theme) > MAX_THEME_LEN:
        errors.append(f"line {line}: theme is longer than {MAX_THEME_LEN} characters")
    for key in ("text", "theme"):
        problem = character_problem(values.get(key) or "")
        if problem:
            errors.append(f"line {line}: {key} {problem}")
            values.pop(key)

    detail = record.get("detail")
    if detail is None or (isinstance(detail, str) and not detail.strip()):
        detail = "medium"
    elif not isinstance(detail, str) or detail.strip().lower() not in DETAILS:
        errors.append(f"line {line}: detail {detail!r} must be one of short, medium, long (or left empty for medium)")
        detail = "medium"
    else:
        detail = detail.strip().lower()

    raw_tags = record.get("tags")
    tags: list[str] = []
    if raw_tags is None or raw_tags == "":
        pass
    elif isinstance(raw_tags, str):
        tags = _split_tags(raw_tags)
    elif isinstance(raw_tags, list) and all(isinstance(t, str) for t in raw_tags):
        tags = list(raw_tags)
    else:
        errors.append(f"line {line}: tags must be a list of strings")
    tags = [" ".join(t.split()) for t in tags]
    tags = list(dict.fromkeys(t for t in tags if t))
    long_tags = [t for t in tags if len(t) > MAX_TAG_LEN]
    if long_tags:
        errors.append(f"line {line}: tag {long_tags[0][:20]!r}... is longer than {MAX_TAG_LEN} characters")
    bad_tags = [problem for problem in map(character_problem, tags) if problem]
    if bad_tags:
        errors.append(f"line {line}: a tag {bad_tags[0]}")

    text = values.get("text")
    if text is not None:
        problem = token_problem(text)
        if problem:
            shown = text if len(text) <= 40 else text[:37] + "..."
            errors.append(f"line {line}: prompt {pid or shown!r} {problem}")

    if len(errors) > before or pid is None or text is None or theme is None:  # a missing field was reported
        return None
    return PromptSpec(external_id=pid, text=text, theme=theme, detail=detail, tags=tuple(tags))


def _parse_csv(lines: list[str], errors: list[str]) -> list[PromptSpec]:
    text = "\n".join(lines)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        errors.append("line 1: the file is empty; expected a header 'id,text,theme[,detail,tags]'")
        return []
    except csv.Error as exc:
        errors.append(f"line 1: {exc}")
        return []
    header = [h.strip().lower() for h in header]
    unknown = [h for h in header if h not in REQUIRED_FIELDS + OPTIONAL_FIELDS]
    missing = [h for h in REQUIRED_FIELDS if h not in header]
    dupes = [h for h, n in Counter(header).items() if n > 1]
    if unknown:
        errors.append(f"line 1: unknown column(s) {', '.join(repr(h) for h in unknown)}; allowed: "
                      f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    if missing:
        errors.append(f"line 1: missing column(s) {', '.join(repr(h) for h in missing)}; the header must be "
                      "'id,text,theme[,detail,tags]'")
    if dupes:
        errors.append(f"line 1: column(s) {', '.join(repr(h) for h in dupes)} appear more than once")
    if unknown or missing or dupes:
        return []

    specs: list[PromptSpec] = []
    seen: dict[str, int] = {}
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"line {start}: {exc}")
            break
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append(f"line {line}: {len(row)} values for {len(header)} columns (a comma inside a text "
                          "needs the text in double quotes)")
            continue
        spec = _check_record(line, dict(zip(header, row, strict=True)), errors, seen)
        if spec:
            specs.append(spec)
    return specs


def _parse_jsonl(lines: list[str], errors: list[str]) -> list[PromptSpec]:
    specs: list[PromptSpec] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            errors.append(f"line {number}: nested too deeply to be a prompt; each line is one flat JSON object")
            continue
        except ValueError as exc:  # e.g. a number of more digits than Python converts
            errors.append(f"line {number}: not valid JSON ({str(exc)[:100]})")
            continue
        if not isinstance(record, dict):
            errors.append(f"line {number}: expected a JSON object like "
                          '{"id": "...", "text": "...", "theme": "..."}')
            continue
        unknown = [k for k in record if k not in REQUIRED_FIELDS + OPTIONAL_FIELDS]
        if unknown:
            errors.append(f"line {number}: unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed: "
                          f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
            continue
        spec = _check_record(number, record, errors, seen)
        if spec:
            specs.append(spec)
    return specs


def parse_prompt_file(data: bytes, filename: str) -> list[PromptSpec]:
    """Parse a ``.csv`` or ``.jsonl`` prompt file; any problem refuses the whole file (``PromptFileError``)."""
    lower = filename.lower()
    if lower.endswith(".csv"):
        parser = _parse_csv
    elif lower.endswith((".jsonl", ".ndjson")):
        parser = _parse_jsonl
    else:
        raise PromptFileError([f"line 1: {filename!r} is neither .csv nor .jsonl; use one of those formats "
                               "(columns id,text,theme[,detail,tags])"])
    errors: list[str] = []
    lines = _decode_lines(data, errors)
    specs = parser(lines, errors)
    if not errors and not specs:
        errors.append("line 1: the file holds no prompts")
    if errors:
        raise PromptFileError(errors)
    return specs


# --- adding to a study -------------------------------------------------------------------------------------


def add_prompts(session: Session, *, study_id: int, specs: list[PromptSpec]) -> list[Prompt]:
    """Add ``specs`` to a study in the caller's transaction; on any problem nothing is added (``PromptError``)."""
    study = session.get(Study, study_id)
    if study is None:
        raise PromptError([f"study {study_id} does not exist"])
    errors: list[str] = []
    existing = set(session.scalars(select(Prompt.external_id).where(Prompt.study_id == study_id)))
    seen: set[str] = set()
    for spec in specs:
        if spec.external_id in existing:
            errors.append(f"prompt {spec.external_id!r} is already in study {study.name!r}")
        elif spec.external_id in seen:
            errors.append(f"prompt {spec.external_id!r} is listed twice")
        seen.add(spec.external_id)
        # fullmatch: ``$`` would let a trailing newline through.
        if not ID_RE.fullmatch(spec.external_id or ""):
            errors.append(f"prompt id {(spec.external_id or '')[:100]!r} may only use letters, digits, '.', '_' "
                          "and '-'")
        for what, value in (("text", spec.text), ("theme", spec.theme), *(("a tag", t) for t in spec.tags)):
            problem = character_problem(" ".join((value or "").split()))
            if problem:
                errors.append(f"prompt {spec.external_id[:100]!r}: {what} {problem}")
        if spec.detail not in DETAILS:
            errors.append(f"prompt {spec.external_id!r}: detail {spec.detail!r} must be short, medium or long")
        if not (spec.text or "").strip() or not (spec.theme or "").strip():
            errors.append(f"prompt {spec.external_id!r}: text and theme are required")
        else:
            problem = token_problem(spec.text)
            if problem:
                errors.append(f"prompt {spec.external_id!r} {problem}")
    if errors:
        raise PromptError(errors)
    prompts = [Prompt(study_id=study_id, external_id=s.external_id, text=s.text, theme=s.theme, detail=s.detail,
                      tags=list(s.tags)) for s in specs]
    session.add_all(prompts)
    session.flush()
    return prompts
