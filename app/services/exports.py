"""Everything a study's admin can download: raw votes, clips manifest, results, clean_battle logs, HTML report.

The numbers come from the same cached frame and the same ``compute_results`` call as the dashboard
(``app.services.results_cache``), so an export can never disagree with the page it was downloaded from.
Raw votes include flagged evaluators' votes, marked in the ``flagged`` column: raw data is everything.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.media.storage import object_key
from app.models import Clip, Prompt, Study, StudyModel
from app.services.attention import DUPLICATE_VARIANT
from app.services.metric_results import metric_results
from app.services.metrics import metrics_table
from app.services.plans import plan_json, sequential_view
from app.services.results_cache import get_results, settled_frame
from app.services.results_data import criterion_labels
from app.services.trust import cluster_sensitivity

# One row per vote x criterion: the vote-frame contract plus the study slug and the winner's model name.
RAW_VOTE_COLUMNS = (
    "study_id", "study", "vote_id", "evaluator", "prompt", "theme", "detail", "criterion", "model_a", "model_b",
    "left_model", "side", "winner", "winner_model", "submitted_at", "time_spent_ms", "flagged",
)
VOTE_FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
_CHUNK_ROWS = 50_000

# CSV injection (https://owasp.org/www-community/attacks/CSV_Injection): a spreadsheet runs a cell that
# starts with one of these as a formula, e.g. a prompt id "=cmd|' /C calc'!A0". OWASP's advice: prefix such a
# text cell with a single quote (shown as text, never evaluated) and quote every text field. Numbers stay
# numbers: a numeric column is never touched, and text that is only a number ("-0.5") is not a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ExportError(ValueError):
    """The export asked for does not exist; the message says which do."""


@dataclass(frozen=True)
class Download:
    filename: str
    media_type: str
    body: bytes | Iterator[bytes]


def raw_votes_frame(session: Session, *, study: Study) -> pd.DataFrame:
    frame = settled_frame(session, study_id=study.id)
    out = frame.assign(study=study.slug)
    out["winner_model"] = np.where(out["winner"] == "model_a", out["model_a"],
                                   np.where(out["winner"] == "model_b", out["model_b"], "tie"))
    return out[list(RAW_VOTE_COLUMNS)].reset_index(drop=True)


ANSWER_COLUMNS = ("vote_id", "evaluator", "prompt", "model_a", "model_b", "left_model", "both_bad_criteria",
                  "reason_tags", "comment", "submitted_at")


def answers_frame(session: Session, *, study: Study) -> pd.DataFrame:
    """The optional answers (app/services/answers.py), one row per vote of a normal pair that has any: the
    criteria answered "both are bad" (a tie in the votes export and the statistics), the reason tags, the
    comment. Evaluators appear under the votes export's pseudonyms."""
    from app.models import Vote

    bad = _both_bad_criteria(session, study=study)
    frame = settled_frame(session, study_id=study.id)
    votes = frame.drop_duplicates("vote_id").set_index("vote_id")
    # JSON columns store Python None as JSON null, not SQL NULL: filtered here rather than in SQL.
    extras = {vid: (comment, tags) for vid, comment, tags in session.execute(
        select(Vote.id, Vote.comment, Vote.reason_tags).where(Vote.study_id == study.id)) if comment or tags}
    records = []
    for vote_id in sorted(set(bad) | set(extras)):
        if vote_id not in votes.index:
            continue  # an attention check's vote: not part of the study's answers
        row, extra = votes.loc[vote_id], extras.get(vote_id)
        records.append({"vote_id": vote_id, "evaluator": row["evaluator"], "prompt": row["prompt"],
                        "model_a": row["model_a"], "model_b": row["model_b"], "left_model": row["left_model"],
                        "both_bad_criteria": ";".join(bad.get(vote_id, [])),
                        "reason_tags": ";".join(extra[1] or []) if extra else "",
                        "comment": (extra[0] or "") if extra else "",
                        "submitted_at": row["submitted_at"].isoformat()})
    return pd.DataFrame.from_records(records, columns=list(ANSWER_COLUMNS))


def _both_bad_criteria(session: Session, *, study: Study) -> dict[int, list[str]]:
    """{vote id: the criterion keys answered "both are bad"}, in the order they were stored."""
    from app.models import Criterion, Vote, VoteChoice

    keys = dict(session.execute(select(Criterion.id, Criterion.key).where(Criterion.study_id == study.id)).all())
    bad: dict[int, list[str]] = {}
    for vote_id, criterion_id in session.execute(
            select(VoteChoice.vote_id, VoteChoice.criterion_id).join(Vote, Vote.id == VoteChoice.vote_id)
            .where(Vote.study_id == study.id, VoteChoice.side == "both_bad").order_by(VoteChoice.id)):
        bad.setdefault(vote_id, []).append(keys.get(criterion_id, str(criterion_id)))
    return bad


def answers_csv(session: Session, *, study: Study) -> Download:
    return Download(f"{study.slug}-answers-{_stamp()}.csv", "text/csv; charset=utf-8",
                    to_safe_csv(answers_frame(session, study=study)))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%MZ")


def raw_votes(session: Session, *, study: Study, fmt: str) -> Download:
    """Raw votes as CSV or JSON Lines (streamed in chunks) or Parquet (one buffer: the format needs a footer)."""
    if fmt not in VOTE_FORMATS:
        raise ExportError(f"unknown vote format {fmt!r}; use one of {', '.join(VOTE_FORMATS)}")
    frame = raw_votes_frame(session, study=study)
    name = f"{study.slug}-votes-{_stamp()}.{fmt}"
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return Download(name, VOTE_FORMATS[fmt], buf.getvalue())
    return Download(name, VOTE_FORMATS[fmt], _chunks(frame, fmt))


def neutralise_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula, made inert with a leading quote; anything else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every text (object or string dtype) column's cells passed through ``neutralise_cell``."""
    text_columns = [c for c in frame.columns
                    if pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])]
    return frame.assign(**{c: frame[c].map(neutralise_cell) for c in text_columns}) if text_columns else frame


def to_safe_csv(frame: pd.DataFrame, *, header: bool = True) -> bytes:
    """The only way this app writes CSV: formula cells neutralised, every text field quoted, numbers bare."""
    return neutralise_formulas(frame).to_csv(index=False, header=header, lineterminator="\n",
                                             quoting=csv.QUOTE_NONNUMERIC).encode()


def _chunks(frame: pd.DataFrame, fmt: str) -> Iterator[bytes]:
    # ISO 8601 in UTC, vectorised (a per-row isoformat() costs seconds on a million rows).
    text = frame.assign(submitted_at=frame["submitted_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"))
    if fmt == "csv":
        yield ",".join(f'"{c}"' for c in RAW_VOTE_COLUMNS).encode() + b"\n"
    for start in range(0, len(text), _CHUNK_ROWS):
        part = text.iloc[start:start + _CHUNK_ROWS]
        if fmt == "csv":
            yield to_safe_csv(part, header=False)
        else:
            # pandas ends lines=True output with a newline, so chunks concatenate into valid JSON Lines.
            yield part.to_json(orient="records", lines=True, force_ascii=False).encode()


_MANIFEST_INTS = ("clip_id", "seed", "source_clip_id", "size_bytes", "width", "height", "frames", "steps",
                  "unet_evals", "peak_memory_bytes", "attempts", "lossy_level", "fit_level")
MANIFEST_COLUMNS = (
    "clip_id", "model", "prompt", "theme", "detail", "prompt_text", "seed", "origin", "variant", "source_clip_id",
    "status", "storage", "storage_key", "sha256",
    "size_bytes", "width", "height", "frames", "fps", "steps", "guidance_scale", "unet_evals",
    "wall_seconds", "denoise_seconds", "decode_seconds", "encode_seconds", "peak_memory_bytes", "device", "dtype",
    "attempts", "error", "created_at", "started_at", "finished_at",
    # GIF compression (app/services/pair_encoding.py): the level the served file has (one per prompt and seed;
    # 0 = no lossy step), its PSNR against the uncompressed master, the level the clip alone would have needed.
    # An attention-check copy is made from its source's served file and so carries its level.
    "lossy_level", "psnr_db", "fit_level",
    # The study's negative prompt, and whether this clip's model used it (only CFG, guidance > 1, reads it).
    "negative_prompt", "negative_prompt_used", "generation",
    # what raters were served: gif | mp4 | webm, the codec, the mean bitrate and the encoder with its version
    "format", "codec", "bitrate_kbps", "encoder",
)


def _encoding_columns(clip: Clip) -> dict[str, Any]:
    name = clip.storage_name or ""
    fmt = name.rsplit(".", 1)[-1] if name.endswith((".mp4", ".webm")) else ("gif" if name else None)
    enc = (clip.generation or {}).get("encoding") or {}
    seconds = clip.frames / clip.fps if clip.frames and clip.fps else None
    bitrate = round(clip.size_bytes * 8 / seconds / 1000, 1) if clip.size_bytes and seconds else None
    encoder = (f"{enc['encoder']} ({enc.get('settings', '')}; libavcodec {enc.get('libavcodec', '?')}, "
               f"PyAV {enc.get('pyav', '?')})") if enc.get("encoder") else ("BlindPair canonical GIF writer"
                                                                        if fmt == "gif" else None)
    return {"format": fmt, "codec": enc.get("codec") or fmt, "bitrate_kbps": bitrate, "encoder": encoder}


def clips_manifest_frame(session: Session, *, study: Study) -> pd.DataFrame:
    """Every clip with its generation settings and cost, and where its object is (store, key, sha256: what
    ``blindpair storage check`` verifies). Media tokens are left out on purpose: the manifest is shareable with
    a paper and a token is the handle evaluators fetch clips by. The object key is not one: it is random, only
    the store's credentials reach it, and no route serves by it (tests/security/test_storage_blinding.py)."""
    rows = session.execute(
        select(Clip, StudyModel.name, Prompt.external_id, Prompt.theme, Prompt.detail, Prompt.text)
        .join(StudyModel, StudyModel.id == Clip.model_id).join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Clip.study_id == study.id).order_by(Prompt.external_id, StudyModel.position, Clip.seed, Clip.variant)
    ).all()
    served = {clip.id: (clip.lossy_level, clip.psnr_db) for clip, *_ in rows}
    records = []
    for clip, model, prompt, theme, detail, text in rows:
        rec = {c: getattr(clip, c, None) for c in MANIFEST_COLUMNS}
        gen = clip.generation or {}
        if clip.source_clip_id is not None and clip.lossy_level is None:
            level, psnr = served.get(clip.source_clip_id, (None, None))
            # A duplicate has its source's pixels; a degraded copy only its level.
            rec.update(lossy_level=level, psnr_db=psnr if clip.variant == DUPLICATE_VARIANT else None)
        elif clip.lossy_level is None and clip.origin == "generated" and "gif_lossy_level" in gen:
            rec["lossy_level"] = gen["gif_lossy_level"] or 0  # recorded before the column; null meant no lossy step
        rec.update(negative_prompt=gen.get("negative_prompt"), negative_prompt_used=gen.get("negative_prompt_used"))
        rec.update(clip_id=clip.id, model=model, prompt=prompt, theme=theme, detail=detail, prompt_text=text,
                   generation=clip.generation or {}, storage_key=_storage_key(clip), **_encoding_columns(clip))
        for col in ("created_at", "started_at", "finished_at"):
            when = rec[col]
            rec[col] = when.isoformat() if when is not None else None
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=list(MANIFEST_COLUMNS))
    # Whole numbers stay whole where some clips lack them (a missing value made pandas write 3.0 for clip 3).
    return frame.astype(dict.fromkeys(_MANIFEST_INTS, "Int64"))


def _storage_key(clip: Clip) -> str | None:
    return object_key(clip.storage_name, clip.storage) if clip.storage_name else None


def clips_manifest(session: Session, *, study: Study, fmt: str) -> Download:
    frame = clips_manifest_frame(session, study=study)
    name = f"{study.slug}-clips-{_stamp()}.{fmt}"
    if fmt == "csv":
        flat = frame.assign(generation=frame["generation"].map(lambda g: json.dumps(g, sort_keys=True)))
        return Download(name, VOTE_FORMATS["csv"], to_safe_csv(flat))
    if fmt == "json":
        records = [{k: _json_safe(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
        body = json.dumps({"study": study.slug, "settings": study.settings, "clips": records}, indent=1)
        return Download(name, "application/json", body.encode())
    raise ExportError(f"unknown manifest format {fmt!r}; use csv or json")


def clip_metrics(session: Session, *, study: Study, fmt: str) -> Download:
    """One row per clip with its automatic metrics (current versions; ``metric_versions`` names them)."""
    if fmt != "csv":
        raise ExportError(f"unknown metrics format {fmt!r}; use csv")
    return Download(f"{study.slug}-clip-metrics-{_stamp()}.csv", VOTE_FORMATS["csv"],
                    to_safe_csv(metrics_table(session, study_id=study.id)))


def _json_safe(value: Any) -> Any:
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def results_json(session: Session, *, study: Study, include_flagged: bool = False) -> Download:
    cached = get_results(session, study_id=study.id, include_flagged=include_flagged)
    payload = {
        "study": {"id": study.id, "slug": study.slug, "name": study.name},
        "computed_at": cached.computed_at.isoformat(),
        "votes": cached.fingerprint.votes,
        "include_flagged": include_flagged,
        "results": cached.results,
        # Does one address decide a verdict? (app/services/trust.py; the dashboard shows the same table)
        "sensitivity": cluster_sensitivity(session, study_id=study.id, cached=cached,
                                           labels=criterion_labels(session, study_id=study.id)),
        # Automatic clip metrics beside the votes (app/services/metric_results.py; the dashboard's same section)
        "metrics": metric_results(session, study_id=study.id, cached=cached),
        # The pre-registered plan (every version, hashed) and its anytime-valid decisions (app/services/plans.py)
        "plan": plan_json(sequential_view(session, study=study, cached=cached)),
    }
    suffix = "-with-flagged" if include_flagged else ""
    return Download(f"{study.slug}-results{suffix}-{_stamp()}.json", "application/json",
                    json.dumps(payload, indent=1, default=_json_default, allow_nan=False).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__} in the results JSON")


def report_html(session: Session, *, study: Study, include_flagged: bool = False) -> str:
    """The self-contained report: styles inlined, charts as inline SVG, no scripts, no external references."""
    from app.jinja_env import STATIC_DIR, env
    from app.services.results_view import fmt_time, study_view

    view, _cached = study_view(session, study=study, include_flagged=include_flagged)
    css = "\n".join((STATIC_DIR / "css" / name).read_text() for name in ("app.css", "results.css"))
    # Our own stylesheets, inlined as they are: autoescaped, "a > b" became "a &gt; b" inside <style>, which
    # CSS does not decode, and the narrow/wide chart rules (and quoted font names) silently did nothing.
    if "</" in css:
        raise ValueError("a stylesheet inlined into the report must not contain '</'")
    css = Markup(css)
    return env.get_template("results/report.html").render(
        v=view, css=css, generated_at=fmt_time(datetime.now(UTC)))


def html_report(session: Session, *, study: Study, include_flagged: bool = False) -> Download:
    body = report_html(session, study=study, include_flagged=include_flagged)
    return Download(f"{study.slug}-report-{_stamp()}.html", "text/html; charset=utf-8", body.encode())


def clean_battle(session: Session, *, study: Study, criterion: str, include_flagged: bool = False) -> Download:
    """One criterion's votes as a FastChat ``clean_battle`` JSON list (``overall`` = the per-vote aggregate).

    FastChat rates one outcome per battle, so each criterion is its own log; ``judge`` is the pseudonymous
    evaluator id and ``anony`` is always true (evaluators never know the models).
    """
    from app.services.results_data import criterion_keys
    from app.stats import overall_votes
    from app.stats.clean_battle import to_clean_battle

    keys = criterion_keys(session, study_id=study.id)
    if criterion not in (*keys, "overall"):
        raise ExportError(f"study {study.slug} has no criterion {criterion!r}; use one of {', '.join(keys)} "
                          "or overall")
    frame = settled_frame(session, study_id=study.id)
    if not include_flagged:
        frame = frame[~frame["flagged"]]
    if criterion == "overall":
        frame = overall_votes(frame, keys) if len(frame) else frame.iloc[0:0]
        frame = frame.assign(criterion="overall")
    # "Both are bad" is a tie in the vote frame (and the statistics); FastChat spells it 'tie (bothbad)', so
    # the log says it. For ``overall`` a vote is 'tie (bothbad)' when its aggregate is a tie and every
    # criterion was answered "both are bad" (a mixed vote is an ordinary tie: that is all it says overall).
    bad = _both_bad_criteria(session, study=study)
    if bad and len(frame):
        if criterion == "overall":
            hit = {vid for vid, crits in bad.items() if set(keys) <= set(crits)}
        else:
            hit = {vid for vid, crits in bad.items() if criterion in crits}
        bothbad = frame["vote_id"].isin(hit) & (frame["winner"] == "tie")
        frame = frame.assign(winner=frame["winner"].astype(object).where(~bothbad, "tie (bothbad)"))
    records = to_clean_battle(frame, criterion=criterion)
    suffix = "-with-flagged" if include_flagged else ""
    return Download(f"{study.slug}-clean_battle-{criterion}{suffix}.json", "application/json",
                    json.dumps(records, indent=1, default=_json_default).encode())
