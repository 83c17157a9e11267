"""GIF compression per pair on the real AnimateDiff GIFs: each clip at its own mildest fitting level (before)
against one level per pair, the harsher of the two fits (now, app/services/pair_encoding.py).

    python -m bench.pair_compression             # 16 frames at 512x512, the 4 compare pairs
    python -m bench.pair_compression --pairs 8   # and the 4 MotionLoRA pairs
    python -m bench.pair_compression --tiny    # 4 frames at 96x96, one pair, seconds

Pairs from ``../shared/data/animatediff_gifs`` (skipped cleanly when the folder is absent): the four "compare"
prompts, each rendered by AnimateDiff's mm-v15 and mm-v15-v2 motion modules (``adiff_compare_mmv15_N`` against
``adiff_compare_mmv15v2_N``: the same prompt and seed, two models, the case a study compares), and the four
MotionLoRA pairs of opposite camera moves on one scene (pan left/right, roll, tilt, zoom). The 256x256 files
are upscaled to the worker's 512x512 with Lanczos and cut or looped to its 16 frames, as bench/gif_encoding.py
does, then encoded exactly as the worker does: Pillow's master, gifsicle per part, the canonical writer. PSNR
is the served file against that master (``app.media.compression.psnr_db``), the figure each clip records.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Report, run_cli
from bench.gif_encoding import SHARED_GIFS, real_clips

PAIRS = [(f"adiff_compare_mmv15_{i}.gif", f"adiff_compare_mmv15v2_{i}.gif") for i in range(4)] + [
    ("adiff_v2_motionlora_panleft.gif", "adiff_v2_motionlora_panright.gif"),
    ("adiff_v2_motionlora_rollingclockwise.gif", "adiff_v2_motionlora_rollinganticlockwise.gif"),
    ("adiff_v2_motionlora_tiltup.gif", "adiff_v2_motionlora_tiltdown.gif"),
    ("adiff_v2_motionlora_zoomin.gif", "adiff_v2_motionlora_zoomout.gif"),
]


def _level(level: int) -> str:
    return "none" if level == 0 else str(level)


def _db(value: float | None) -> str:
    return "lossless" if value is None else f"{value:.1f}"


def run(args: argparse.Namespace) -> Report:
    from worker import gif as worker_gif

    report = Report("pair_compression", "GIF compression per pair: own level per clip (before) against one level "
                    "per pair (now), real AnimateDiff GIFs", "", params=vars(args).copy())
    source = Path(args.source)
    if not source.is_dir():
        report.notes.append(f"skipped: {source} is absent (the shared data folder is not on this machine)")
        return report
    # Each (master, level) is compressed once: the fit search, the PSNR and the served copy share it.
    real_compress = worker_gif.compress
    memo: dict[tuple[int, int], bytes] = {}

    def compress(master: bytes, level: int) -> bytes:
        key = (hash(master), level)
        if key not in memo:
            memo[key] = real_compress(master, level)
        return memo[key]

    worker_gif.compress = compress  # type: ignore[assignment]  # fit_level and served_copy look it up here
    try:
        return _run(args, report, source)
    finally:
        worker_gif.compress = real_compress  # type: ignore[assignment]


def _run(args: argparse.Namespace, report: Report, source: Path) -> Report:
    from app.media.compression import psnr_db
    from app.services.pair_encoding import group_level
    from worker import gif as worker_gif

    wanted = PAIRS[: args.pairs]
    names = {n for pair in wanted for n in pair}
    clips = dict(real_clips(args.frames, args.size, len(names) * 10, source=source, keep=lambda p: p.name in names))
    rows: list[list[Any]] = []
    data: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for a, b in wanted:
        if a not in clips or b not in clips:
            report.notes.append(f"pair {a} / {b} skipped: a file is missing")
            continue
        masters = [worker_gif.encode_master(clips[n], fps=8) for n in (a, b)]
        fits = [worker_gif.fit_level(m) for m in masters]
        alone = [psnr_db(m, worker_gif.compress(m, lv)) for m, lv in zip(masters, fits, strict=True)]
        level = group_level(fits)
        served = [worker_gif.compress(m, level) for m in masters]
        paired = [psnr_db(m, s) for m, s in zip(masters, served, strict=True)]
        sizes = [len(worker_gif.served_copy(m, level)) for m in masters]
        gap_before = (alone[0] - alone[1]) if None not in alone else None
        gap_now = (paired[0] - paired[1]) if None not in paired else None
        rows.append([f"{a.removesuffix('.gif')} / {b.removesuffix('.gif')}",
                     f"{_level(fits[0])} / {_level(fits[1])}", f"{_db(alone[0])} / {_db(alone[1])}",
                     _level(level), f"{_db(paired[0])} / {_db(paired[1])}",
                     "–" if gap_now is None else f"{gap_now:+.1f}", f"{max(sizes) / 1e6:.2f}"])
        data.append({"a": a, "b": b, "fit_levels": fits, "psnr_alone": alone, "pair_level": level,
                     "psnr_paired": paired, "psnr_gap_before": gap_before, "psnr_gap_now": gap_now,
                     "served_bytes": sizes})
    report.table("Per pair: levels and PSNR (dB, served file against the uncompressed master) before and now",
                 ["pair (A / B)", "own fit levels (before)", "PSNR before", "pair level (now)", "PSNR now",
                  "PSNR A − B now", "largest served MB"], rows)
    differed = sum(d["fit_levels"][0] != d["fit_levels"][1] for d in data)
    report.data = {"pairs": data, "seconds": time.perf_counter() - t0}
    report.notes.append(f"Before, the two clips of a pair got different levels in {differed} of {len(data)} "
                        "pairs; now every pair has one level by construction.")
    budget = worker_gif.SIZE_BUDGET_BYTES
    report.bar(f"every served clip within the {budget / 1e6:.1f} MB budget",
               all(max(d["served_bytes"]) <= budget for d in data),
               f"largest {max((max(d['served_bytes']) for d in data), default=0) / 1e6:.2f} MB")
    report.notes.append("The level costs different clips different PSNR (content decides how much lossy LZW "
                        "removes), so one level per pair equalises the treatment, not the PSNR; the results page "
                        "compares the PSNR left per pair and per model and warns at a 1 dB mean gap.")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--pairs", type=int, default=4, help="the 4 compare pairs (same prompt, two motion modules); "
                   "8 adds the MotionLoRA pairs")
    p.add_argument("--source", default=str(SHARED_GIFS))
    p.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    return p


TINY = ["--tiny", "--frames", "4", "--size", "96", "--pairs", "1"]


def main(argv: list[str] | None = None) -> Report:
    return run_cli("bench.pair_compression", parser, run, argv, lambda rest: parser().parse_args([*TINY, *rest]))


if __name__ == "__main__":
    main(sys.argv[1:])
