"""Pair-page media through an S3 store against local files, and the upload cost per clip.

``python -m bench.storage [--prompts 100] [--seconds 8] [--levels 1,16,64]``

One database holds two studies of the same clips (demo renders, 16 frames at 256x256, canonical GIFs as
imports store them): one in the local media folder, one in a bucket of a SeaweedFS on loopback
(tests/support/seaweed.py, signed requests). One uvicorn worker serves both. A closed loop of ``C`` raters
each fetches both clips of a random pair at once, as the pair page does, and asks again when both arrived; the
latency of a pair is until its second clip is in. With 100 prompts (200 clips) the server's served-bytes cache
(64 bodies, app/web/media.py) misses most of the time, so most requests read the store: the cost measured is
the store's, not the cache's. Upload cost: ``store_bytes`` of each clip, timed, for each store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, machine, md_table, percentile


def _clips(n: int) -> list[bytes]:
    from app.media.canonical import canonicalize
    from app.media.demo_render import render_clip
    from worker.gif import encode_clip_gif

    out = []
    for i in range(n):
        frames = render_clip(f"prompt {i}", style=("smooth", "jittery")[i % 2], seed=i, frames=16, width=256,
                             height=256)
        gif, _info, _lossy = encode_clip_gif(frames, fps=8)
        out.append(canonicalize(gif))
    return out


def _seed(n_prompts: int, clips: list[bytes]) -> dict:
    """Two studies of the same clips, one per store; the upload time of each clip, per store."""
    from app import config
    from app.db import session_scope
    from app.media import storage
    from app.migrate import upgrade
    from app.models import Clip, Pair, Prompt, Study, StudyModel

    upgrade()
    uploads: dict[str, list[float]] = {"local": [], "s3": []}
    tokens: dict[str, list[tuple[str, str]]] = {}
    for store in ("local", "s3"):
        os.environ["BLINDPAIR_STORAGE"] = store
        config.get_settings.cache_clear()
        storage.reset_backends()
        with session_scope() as s:
            study = Study(slug=f"bench-{store}", name=f"bench {store}", status="open", settings={})
            s.add(study)
            s.flush()
            models = [StudyModel(study_id=study.id, name=f"m{i}", preset="", position=i) for i in range(2)]
            s.add_all(models)
            s.flush()
            pairs = []
            for p in range(n_prompts):
                prompt = Prompt(study_id=study.id, external_id=f"p{p}", text=f"prompt {p}", theme="t")
                s.add(prompt)
                s.flush()
                row = []
                for m, model in enumerate(models):
                    data = clips[(2 * p + m) % len(clips)]
                    t0 = time.perf_counter()
                    stored = storage.store_bytes(data)
                    uploads[store].append(time.perf_counter() - t0)
                    clip = Clip(study_id=study.id, model_id=model.id, prompt_id=prompt.id, status="done",
                                storage_name=stored.storage_name, storage=stored.store, sha256=stored.sha256,
                                size_bytes=stored.size_bytes, width=256, height=256, frames=16, fps=8.33)
                    s.add(clip)
                    row.append(clip)
                s.flush()
                s.add(Pair(study_id=study.id, prompt_id=prompt.id, clip_a_id=row[0].id, clip_b_id=row[1].id))
                pairs.append((row[0].media_token, row[1].media_token))
            tokens[store] = pairs
    return {"uploads": uploads, "tokens": tokens}


async def _load(base: str, pairs: list[tuple[str, str]], concurrency: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=2 * concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        end = time.monotonic() + seconds

        async def rater(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.monotonic() < end:
                left, right = rng.choice(pairs)
                t0 = time.perf_counter()
                answers = await asyncio.gather(client.get(f"/m/{left}"), client.get(f"/m/{right}"))
                if any(r.status_code != 200 for r in answers):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(rater(i) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"pairs": len(latencies), "errors": errors, "p50_ms": 1000 * (percentile(latencies, 50) or 0),
            "p99_ms": 1000 * (percentile(latencies, 99) or 0), "pairs_per_s": len(latencies) / wall}


def _warm(base: str, pairs: list[tuple[str, str]]) -> None:
    """Every clip once: the server's per-clip frame-length cache is then as full for one store as the other."""
    import httpx

    with httpx.Client(base_url=base, timeout=60) as client:
        for left, right in pairs:
            for token in (left, right):
                assert client.get(f"/m/{token}").status_code == 200


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--levels", default="1,16,64")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    from bench.servers import uvicorn_server
    from tests.support.seaweed import SeaweedServer

    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    server = SeaweedServer(tmp / "seaweed")
    server.start()
    try:
        env = {**server.env(server.make_bucket("bench-clips")), "BLINDPAIR_DATA_DIR": str(tmp / "var"),
               "BLINDPAIR_ENVIRONMENT": "development", "BLINDPAIR_SECRET_KEY": "bench-secret-" + "x" * 40}
        os.environ.update(env)
        clips = _clips(24)
        seeded = _seed(args.prompts, clips)
        serving: dict[str, dict[int, dict]] = {"local": {}, "s3": {}}
        with uvicorn_server("app.main:create_app", {**env, "BLINDPAIR_STORAGE": "local"}, tmp / "uvicorn.log",
                            ping="/login") as (base, _proc):
            for store in ("local", "s3"):
                _warm(base, seeded["tokens"][store])
                for level in levels:
                    serving[store][level] = asyncio.run(_load(base, seeded["tokens"][store], level, args.seconds))
    finally:
        server.close()
    sizes = sorted(len(c) for c in clips)
    result = {"machine": machine(), "prompts": args.prompts, "seconds": args.seconds,
              "clip_bytes_median": sizes[len(sizes) // 2],
              "upload_ms": {k: {"p50": 1000 * (percentile(v, 50) or 0), "p99": 1000 * (percentile(v, 99) or 0),
                                "n": len(v)} for k, v in seeded["uploads"].items()},
              "serving": serving}
    _write(result)
    return result


def _write(result: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "storage.json").write_text(json.dumps(result, indent=1, default=str))
    rows = []
    for level in sorted(result["serving"]["local"]):
        loc, s3 = result["serving"]["local"][level], result["serving"]["s3"][level]
        rows.append([level, f"{loc['p50_ms']:.1f}", f"{s3['p50_ms']:.1f}", f"{loc['p99_ms']:.1f}",
                     f"{s3['p99_ms']:.1f}", f"{loc['pairs_per_s']:.1f}", f"{s3['pairs_per_s']:.1f}",
                     loc["errors"] + s3["errors"]])
    table = md_table(["raters", "p50 local ms", "p50 s3 ms", "p99 local ms", "p99 s3 ms", "pairs/s local",
                      "pairs/s s3", "errors"], rows)
    up = result["upload_ms"]
    text = (f"{table}\n\nUpload per clip ({result['clip_bytes_median']} bytes median, n={up['s3']['n']} per store): "
            f"local p50 {up['local']['p50']:.1f} ms, p99 {up['local']['p99']:.1f} ms; s3 p50 {up['s3']['p50']:.1f} ms, "
            f"p99 {up['s3']['p99']:.1f} ms.\n")
    (RESULTS_DIR / "storage.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
