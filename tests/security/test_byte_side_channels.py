"""The served bytes tell no more than the pixels do: an attacker's scripts over the bytes of /m/<token>.

Issue 12: clips of a prompt were padded to one size with a trailing comment block, so anyone parsing the
GIF read each clip's real size ("the larger real size is model X" was right on 3 of 4 real pairs), and the
attention-check copies carried a local colour table on every frame where the originals had one, so a script
answered every check from the bytes. Here the attacker fetches every clip as an evaluator's browser does and
reads everything the encoding could carry (tests/app/media/anatomy.py::byte_features: size, block layout,
colour-table placement and sizes, unused palette entries, extensions, disposal and delays, LZW code size,
per-frame data lengths, sub-block layout), then tries to tell the models apart, and the checks from real
pairs. The same scripts on the uploaded files succeed, which shows they can.

What a parser can still read, how well each frame's pixels compress, is a function of the pixels
(test_what_a_parser_reads_is_a_function_of_the_pixels); anyone shown the clip has those.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import GifImagePlugin, Image
from scipy.stats import binom
from sqlalchemy import select

from app.media import canonical
from app.models import Clip, Pair, Prompt, StudyModel
from app.services.attention import ensure_attention_pairs
from app.services.clips import import_gif_folder
from tests.app.media.anatomy import byte_features, leading_clears, lzw_indices, parse
from tests.factories import NO_CHECKS, make_study

REAL_GIFS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "animatediff_gifs"
N_PAIRS = 240
SIZE = 40


def chance_band(n: int, level: float = 0.99) -> tuple[float, float]:
    """The accuracies a coin-flipping attacker reaches on ``n`` pairs with probability ``level``."""
    lo, hi = binom.ppf((1 - level) / 2, n, 0.5), binom.ppf(1 - (1 - level) / 2, n, 0.5)
    return lo / n, hi / n


def _scene(rng: np.random.Generator, *, busy: bool, frames: int = 4) -> list[Image.Image]:
    """A gradient with a moving square; model X ("busy") adds texture, so its files are naturally larger."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    hue = rng.uniform(0, 255, 3)
    base = (hue[None, None, :] * 0.5 + np.stack([x, y, x + y], axis=-1) * 2).astype(np.float32)
    out = []
    for i in range(frames):
        f = base.copy()
        f[8:20, i * 5:i * 5 + 12] = 240 - hue / 2
        if busy:
            f += rng.normal(0, 18, f.shape)
        out.append(Image.fromarray(np.clip(f, 0, 255).astype(np.uint8)).quantize(128, method=Image.Quantize.FASTOCTREE))
    return out


def _gif(frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=125, loop=0)
    return buf.getvalue()


def _import(session, tmp_path, study, files: dict[tuple[str, str], bytes]) -> None:
    folder = tmp_path / "gifs"
    for (model, prompt), data in files.items():
        (folder / model).mkdir(parents=True, exist_ok=True)
        (folder / model / f"{prompt}.gif").write_bytes(data)
    import_gif_folder(session, study_id=study.id, folder=folder)
    session.commit()


def _served(client, session, study) -> dict[int, bytes]:
    """Every clip of the study as an evaluator's browser gets it, by clip id."""
    out = {}
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id)):
        r = client.get(f"/m/{clip.media_token}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        out[clip.id] = r.content
    return out


def _vectors(pairs: list[tuple[bytes, bytes]], *, palettes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors of both sides of every pair, on one set of keys (missing = -1)."""
    feats = [(byte_features(a, palettes=palettes), byte_features(b, palettes=palettes)) for a, b in pairs]
    keys = sorted({k for fa, fb in feats for k in (*fa, *fb)})
    left = np.array([[fa.get(k, -1.0) for k in keys] for fa, _ in feats])
    right = np.array([[fb.get(k, -1.0) for k in keys] for _, fb in feats])
    return left, right


def attack(left: np.ndarray, right: np.ndarray, x_is_left: np.ndarray) -> float:
    """Two-fold cross-validated accuracy of the attacker's best rule for "which side is model X".

    Rules: "X is the side whose feature k is larger" (or smaller), for every feature, and a nearest-centroid
    rule on the signs of all feature differences; the rule that does best on one half is scored on the other.
    Where a rule cannot tell (equal features) it guesses left.
    """
    diff = np.sign(left - right)
    n = len(diff)
    halves = (np.arange(n) % 2 == 0, np.arange(n) % 2 == 1)
    correct = 0
    for train, test in (halves, halves[::-1]):
        rules = []
        for k in range(diff.shape[1]):
            for s in (1, -1):
                rules.append(lambda d, k=k, s=s: s * d[:, k])
        centroid = diff[train][x_is_left[train]].mean(axis=0) - diff[train][~x_is_left[train]].mean(axis=0) \
            if x_is_left[train].any() and (~x_is_left[train]).any() else np.zeros(diff.shape[1])
        rules.append(lambda d, c=centroid: d @ c)

        def accuracy(rule, rows) -> float:
            score = rule(diff[rows])
            return float(np.mean(np.where(score == 0, True, score > 0) == x_is_left[rows]))

        best = max(rules, key=lambda r: accuracy(r, train))
        correct += accuracy(best, test) * test.sum()
    return correct / n


def _synthetic_study(session, tmp_path):
    study = make_study(session, models=("model-x", "model-y"), n_prompts=N_PAIRS, qc=NO_CHECKS)
    rng = np.random.default_rng(2024)
    raw = {}
    for prompt in study.prompts:
        raw["model-x", prompt.external_id] = _gif(_scene(rng, busy=True))
        raw["model-y", prompt.external_id] = _gif(_scene(rng, busy=False))
    _import(session, tmp_path, study, raw)
    return study, raw


def _pairs(session, study, served: dict[int, bytes], raw: dict[tuple[str, str], bytes], order: random.Random):
    models = {m.id: m.name for m in session.scalars(select(StudyModel).where(StudyModel.study_id == study.id))}
    prompts = {p.id: p.external_id for p in session.scalars(select(Prompt).where(Prompt.study_id == study.id))}
    by_prompt: dict[int, dict[str, Clip]] = {}
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")):
        by_prompt.setdefault(clip.prompt_id, {})[models[clip.model_id]] = clip
    served_pairs, raw_pairs, x_left = [], [], []
    for prompt_id, clips in sorted(by_prompt.items()):
        x, y = clips["model-x"], clips["model-y"]
        sides = [("model-x", x), ("model-y", y)]
        order.shuffle(sides)
        served_pairs.append((served[sides[0][1].id], served[sides[1][1].id]))
        raw_pairs.append((raw[sides[0][0], prompts[prompt_id]], raw[sides[1][0], prompts[prompt_id]]))
        x_left.append(sides[0][0] == "model-x")
    return served_pairs, raw_pairs, np.array(x_left)


def test_an_attackers_classifier_over_the_served_bytes_is_at_chance(client, session, tmp_path):
    study, raw = _synthetic_study(session, tmp_path)
    served = _served(client, session, study)
    served_pairs, raw_pairs, x_left = _pairs(session, study, served, raw, random.Random(7))
    assert len(served_pairs) >= 200

    # The uploads differ as the issue found: model X's files are larger, frame by frame.
    raw_left, raw_right = _vectors(raw_pairs)
    raw_accuracy = attack(raw_left, raw_right, x_left)
    assert raw_accuracy >= 0.95, raw_accuracy  # the attack works on what was uploaded ...

    left, right = _vectors(served_pairs)
    lo, hi = chance_band(len(served_pairs))
    served_accuracy = attack(left, right, x_left)
    assert lo <= served_accuracy <= hi, (served_accuracy, (lo, hi))  # ... and is a coin flip on what is served
    # Stronger than chance: no byte feature differs within any pair.
    differing = [i for i in range(len(left)) if not np.array_equal(left[i], right[i])]
    assert differing == []
    assert len({len(a) for a, _ in served_pairs} | {len(b) for _, b in served_pairs}) > 1  # sizes vary by prompt


def _poster_features(data: bytes) -> dict[str, float]:
    """What a script reads from a poster PNG without decoding it: its size and its chunk layout."""
    features: dict[str, float] = {"size": len(data)}
    pos, k = 8, 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        features[f"chunk{k}_type"] = float(int.from_bytes(data[pos + 4:pos + 8], "big"))
        features[f"chunk{k}_length"] = float(length)
        pos, k = pos + 12 + length, k + 1
    features["chunks"] = k
    return features


def test_an_attackers_classifier_over_the_served_posters_is_at_chance(client, session, tmp_path):
    """The first-frame posters are a second file per clip: written plainly, the busy model's PNG is the longer
    one; served, every poster of a prompt has one size and one layout."""
    from app.media import poster

    study, raw = _synthetic_study(session, tmp_path)
    served = {}
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id)):
        r = client.get(f"/m/{clip.media_token}/poster")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        served[clip.id] = r.content
    served_pairs, raw_pairs, x_left = _pairs(session, study, served, raw, random.Random(11))
    # Posters as a plain writer would make them from the same first frames, unequalised.
    plain_pairs = [tuple(poster.png(poster.first_frame(g, "gif"), palette=True) for g in pair) for pair in raw_pairs]

    def vectors(pairs):
        feats = [(_poster_features(a), _poster_features(b)) for a, b in pairs]
        keys = sorted({k for fa, fb in feats for k in (*fa, *fb)})
        return (np.array([[fa.get(k, -1.0) for k in keys] for fa, _ in feats]),
                np.array([[fb.get(k, -1.0) for k in keys] for _, fb in feats]))

    assert attack(*vectors(plain_pairs), x_left) >= 0.95  # the attack works on plain posters ...
    left, right = vectors(served_pairs)
    lo, hi = chance_band(len(served_pairs))
    assert lo <= attack(left, right, x_left) <= hi  # ... and is a coin flip on the served ones
    assert [i for i in range(len(left)) if not np.array_equal(left[i], right[i])] == []


def test_what_a_parser_reads_is_a_function_of_the_pixels(client, session, tmp_path):
    """Served frame = the frame's palette indices through the one LZW coder, grown by clear codes to the
    prompt's length: nothing in it but the pixels (in a colour order keyed with the secret) and a length
    both clips share. So how many clear codes lead a frame, the one thing that differs, is what anyone holding
    the decoded frames computes."""
    study = make_study(session, models=("model-x", "model-y"), n_prompts=6, qc=NO_CHECKS)
    rng = np.random.default_rng(5)
    _import(session, tmp_path, study, {(m, p.external_id): _gif(_scene(rng, busy=m == "model-x"))
                                       for p in study.prompts for m in ("model-x", "model-y")})
    for data in _served(client, session, study).values():
        gif = parse(data)
        for frame in gif.frames:
            indices = lzw_indices(frame.min_code_size, frame.stream)
            rebuilt = canonical._grow(canonical._lzw(np.frombuffer(indices, np.uint8), SIZE, SIZE),
                                      len(frame.stream))
            assert rebuilt == frame.stream
        # What a parser counts (the clear codes leading each frame) follows from the frame's length before
        # growing, and that length is the pixels' own: computed here from the decoded frames alone.
        natural = canonical.canonical_lengths(data)
        assert [leading_clears(f.min_code_size, f.stream) - 1 for f in gif.frames] == [
            8 * (len(f.stream) - n) // 9 for f, n in zip(gif.frames, natural, strict=True)]


@pytest.mark.skipif(not REAL_GIFS.is_dir(), reason="../shared/data/animatediff_gifs is not on this machine")
def test_real_animatediff_pairs_are_served_alike(client, session, tmp_path):
    """mmv15 against mmv15v2, the four real pairs of the issue: every byte feature the same within a pair."""
    study = make_study(session, models=("mmv15", "mmv15v2"), n_prompts=4, qc=NO_CHECKS)
    files = {}
    for prompt in study.prompts:
        n = int(prompt.external_id[1:])
        for model in ("mmv15", "mmv15v2"):
            files[model, prompt.external_id] = (REAL_GIFS / f"adiff_compare_{model}_{n}.gif").read_bytes()
    _import(session, tmp_path, study, files)
    served = _served(client, session, study)
    by_prompt: dict[int, list[bytes]] = {}
    for clip in session.scalars(select(Clip).where(Clip.study_id == study.id, Clip.variant == "")):
        by_prompt.setdefault(clip.prompt_id, []).append(served[clip.id])
    raw_sizes = [(len(files["mmv15", p.external_id]), len(files["mmv15v2", p.external_id])) for p in study.prompts]
    assert all(a != b for a, b in raw_sizes)  # what the attack read
    for pair in by_prompt.values():
        a, b = (byte_features(x, palettes=False) for x in pair)
        assert a == b
        assert a["extensions"] == 1 and a["global_table"] == 0  # no padding block, one layout


def _old_copy(data: bytes) -> bytes:
    """An attention-check copy as app/media/degrade.py wrote one before issue 12 (Pillow, a local colour
    table on every frame): the control that shows the check scripts below can tell."""
    with Image.open(io.BytesIO(data)) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(im.convert("RGB").quantize(256))
    header, _ = GifImagePlugin.getheader(frames[0].copy(), info={"loop": 0, "duration": 100})
    out = io.BytesIO()
    out.write(b"".join(header))
    for frame in frames:
        for chunk in GifImagePlugin.getdata(frame, duration=100, include_color_table=True):
            out.write(chunk)
    out.write(b";")
    return out.getvalue()


def _pair_features(a: bytes, b: bytes) -> list[float]:
    """What a byte-only script compares between the two sides of a pair."""
    fa, fb = byte_features(a, palettes=False), byte_features(b, palettes=False)
    sa, sb = [f.stream for f in parse(a).frames], [f.stream for f in parse(b).frames]
    return [
        float(fa == fb),
        float(hashlib.sha256(a).digest() == hashlib.sha256(b).digest()),
        float(len(a) == len(b)),
        len(sa) - len(set(sa)) + len(sb) - len(set(sb)),  # frames repeated byte for byte within a side
        len(set(sa) & set(sb)),  # frames repeated byte for byte across the sides
        sum(abs(fa.get(k, -1) - fb.get(k, -1)) > 0 for k in fa.keys() | fb.keys()),
    ]


def _auc(scores: list[float], labels: list[bool]) -> float:
    """How often a check scores above a normal pair (ties count half): 0.5 is chance."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _best_auc(rows: list[list[float]], labels: list[bool]) -> float:
    columns = list(zip(*rows, strict=True))
    return max(max(a, 1 - a) for a in (_auc(list(col), labels) for col in columns))


def test_attention_checks_cannot_be_told_from_real_pairs_by_their_bytes(client, session, tmp_path):
    n_prompts = 90
    study = make_study(session, models=("model-x", "model-y"), n_prompts=n_prompts, qc={"attention_rate": 0.2})
    rng = np.random.default_rng(11)
    _import(session, tmp_path, study, {(m, p.external_id): _gif(_scene(rng, busy=m == "model-x"))
                                       for p in study.prompts for m in ("model-x", "model-y")})
    ensure_attention_pairs(session, study_id=study.id, n_sources=n_prompts, rng=random.Random(3))
    session.commit()
    served = _served(client, session, study)
    clips = {c.id: c for c in session.scalars(select(Clip).where(Clip.study_id == study.id))}
    order = random.Random(9)
    rows, is_check, degraded_rows, copy_left, controls = [], [], [], [], []
    for pair in session.scalars(select(Pair).where(Pair.study_id == study.id)):
        sides = [pair.clip_a_id, pair.clip_b_id]
        order.shuffle(sides)
        a, b = served[sides[0]], served[sides[1]]
        rows.append(_pair_features(a, b))
        is_check.append(pair.kind != "normal")
        if pair.kind == "check_degraded":
            degraded_rows.append((a, b))
            copy_left.append(clips[sides[0]].origin == "degraded")
        if pair.kind != "normal" and len(controls) < 20:  # the control: the copy as it used to be written
            controls.append(_pair_features(served[pair.clip_a_id], _old_copy(served[pair.clip_a_id])))
    kinds = Counter(p.kind for p in session.scalars(select(Pair).where(Pair.study_id == study.id)))
    assert kinds["check_same"] >= 60 and kinds["check_degraded"] >= 60 and kinds["normal"] == n_prompts

    # Is this pair a check? Each comparison a script could make, scored as a detector: none beats a coin.
    n_pos, n_neg = sum(is_check), len(is_check) - sum(is_check)
    sd = math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))  # the AUC's spread under chance (Mann-Whitney)
    assert _best_auc(rows, is_check) <= 0.5 + 3.3 * sd  # 3.3 sd: 99.9 % one-sided, over six comparisons
    # The control: the same comparisons flag every old-style copy against a normal pair.
    normals = [r for r, c in zip(rows, is_check, strict=True) if not c][:20]
    assert _best_auc(controls + normals, [True] * len(controls) + [False] * len(normals)) == 1.0

    # Which side of a degraded check is the copy? Every byte feature of the two sides, as for the models.
    left, right = _vectors(degraded_rows, palettes=False)
    lo, hi = chance_band(len(degraded_rows))
    assert lo <= attack(left, right, np.array(copy_left)) <= hi
    assert all(np.array_equal(a, b) for a, b in zip(left, right, strict=True))


def test_a_clip_and_its_rival_cost_the_same_to_serve(client, session, tmp_path, monkeypatch):
    """The first request for any clip of a prompt builds every clip of it; the rival's request then reads a
    cache. Whichever side the page asks for first, the work per side is the same."""
    from app.web import media

    study = make_study(session, models=("model-x", "model-y"), n_prompts=2, qc=NO_CHECKS)
    rng = np.random.default_rng(1)
    _import(session, tmp_path, study, {(m, p.external_id): _gif(_scene(rng, busy=m == "model-x"))
                                       for p in study.prompts for m in ("model-x", "model-y")})
    built: list[int] = []
    real_pad = canonical.pad_frames
    monkeypatch.setattr(canonical, "pad_frames", lambda data, targets: built.append(1) or real_pad(data, targets))
    prompt = study.prompts[0]
    tokens = [c.media_token for c in session.scalars(select(Clip).where(Clip.prompt_id == prompt.id))]
    for first, second in (tokens, tokens[::-1]):
        media._body.cache_clear()
        media._frame_lengths.cache_clear()
        built.clear()
        r1 = client.get(f"/m/{first}")
        assert len(built) == 2  # both clips of the prompt, on the first request
        r2 = client.get(f"/m/{second}")
        assert len(built) == 2  # none on the second
        assert r1.headers["content-length"] == r2.headers["content-length"]
        assert r1.headers["etag"] != r2.headers["etag"]


_DECODE_IN_BROWSER = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const decoder = new ImageDecoder({data: bytes, type: 'image/gif'});
  await decoder.tracks.ready;
  const frames = [];
  for (let i = 0; i < decoder.tracks.selectedTrack.frameCount; i++) {
    const {image} = await decoder.decode({frameIndex: i});
    const canvas = new OffscreenCanvas(image.displayWidth, image.displayHeight);
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    frames.push(Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data));
    image.close();
  }
  return frames;
}"""


@pytest.mark.browser
def test_a_browser_shows_the_grown_clip_as_the_stored_one():
    """Chromium's own GIF decoder (WebCodecs ImageDecoder) reads thousands of clear codes ahead of each frame
    and shows the very pixels Pillow decodes from the clip before growing."""
    import base64
    import shutil

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.conftest import IN_CI

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("the playwright Python package is not installed")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is not installed")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    stored = canonical.encode([np.asarray(f.convert("RGB")) for f in _scene(np.random.default_rng(3), busy=True)],
                              [125] * 4)
    grown = canonical.pad_frames(stored, [n + 5000 + 7 * i for i, n in enumerate(canonical.frame_data_lengths(stored))])
    def decode_in_chromium() -> list:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                # ImageDecoder needs a secure context; http://localhost is one.
                page.route("http://localhost/**", lambda route: route.fulfill(body="<html></html>",
                                                                              content_type="text/html"))
                page.goto("http://localhost/")
                return [page.evaluate(_DECODE_IN_BROWSER, base64.b64encode(d).decode()) for d in (stored, grown)]
            finally:
                browser.close()

    # In a thread of its own: Playwright's sync API refuses to start where an earlier test of the same xdist
    # worker left an asyncio loop running, and a fresh thread has none.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        shown = pool.submit(decode_in_chromium).result(timeout=300)
    with Image.open(io.BytesIO(stored)) as im:
        pillow = []
        for i in range(im.n_frames):
            im.seek(i)
            pillow.append(np.asarray(im.convert("RGBA")).ravel().tolist())
    assert len(shown[1]) == 4 and shown[1] == shown[0] == pillow
