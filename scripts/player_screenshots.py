"""Screenshots of the pair page's player for the README: desktop (1280x900) and phone (390x844).

Builds a throwaway MP4 study with the demo's two synthetic CPU renderers (no AI model, no weights), generates
its clips with the real worker code in-process, serves it with uvicorn and takes the pictures with Playwright
and the system Chromium (never a downloaded one):

    .venv/bin/python scripts/player_screenshots.py [--out docs]

Writes docs/player-desktop.png, docs/player-phone.png (first screen) and docs/player-phone-scrolled.png (the
form scrolled to its last question: the player stays pinned above it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _prepare(data_dir: Path) -> str:
    """A migrated database with an open MP4 demo study whose clips are made; returns the invite token."""
    from app.db import session_scope
    from app.migrate import upgrade
    from app.services.generation import queue_batch
    from app.services.prompts import PromptSpec
    from app.services.studies import ModelSpec, create_study, set_status
    from worker import tasks

    upgrade()
    prompts = [PromptSpec(external_id=f"demo-{i}", text=text, theme="nature", detail="medium", tags=[])
               for i, text in enumerate(["A red kite drifts over a windy hill at sunset, its tail twisting",
                                         "Waves roll onto a pebble beach and pull back, foam sparkling"])]
    with session_scope() as session:
        study = create_study(
            session, name="Player screenshots", models=[ModelSpec(name="demo-smooth", preset="demo-smooth"),
                                                        ModelSpec(name="demo-jittery", preset="demo-jittery")],
            prompts=prompts, votes_per_pair=3, pairs_per_session=2,
            settings={"frames": 16, "width": 256, "height": 256, "fps": 8, "clip_format": "mp4",
                      "base_model": "none (demo renderer)", "dtype": "float32"})
        study_id, invite = study.id, study.invite_token
    sent: list[int] = []
    with session_scope() as session:
        queue_batch(session, study_id=study_id, send=sent.extend)
    for clip_id in sent:
        assert tasks.run_clip(clip_id) == "done", clip_id
    with session_scope() as session:
        set_status(session, study_id=study_id, status="open")
    return invite


def _serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:  # a free port: another server may hold any fixed one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/static/css/app.css", timeout=1)
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("uvicorn did not start")


def _shoot(base: str, invite: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        for name, viewport, scale in (("desktop", {"width": 1280, "height": 900}, 1),
                                      ("phone", {"width": 390, "height": 844}, 2)):
            context = browser.new_context(viewport=viewport, device_scale_factor=scale, is_mobile=name == "phone",
                                          has_touch=name == "phone")
            page = context.new_page()
            page.goto(f"{base}/join/{invite}")
            page.get_by_label("I have read the above and agree to take part.").check()
            page.get_by_role("button", name="Start").click()
            page.wait_for_selector("#player[data-played=true]", timeout=30_000)
            page.get_by_role("button", name="Pause both").click()
            page.wait_for_timeout(400)
            page.locator("#step-forward").click()
            page.wait_for_timeout(400)
            page.mouse.move(0, 0)
            page.screenshot(path=str(out / f"player-{name}.png"))
            if name == "phone":
                page.locator("fieldset.criterion").last.scroll_into_view_if_needed()
                page.wait_for_timeout(300)
                page.screenshot(path=str(out / "player-phone-scrolled.png"))
            context.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blindpair-shots-") as tmp:
        os.environ.update(BLINDPAIR_DATA_DIR=tmp, BLINDPAIR_DATABASE_URL=f"sqlite:///{tmp}/bp.sqlite",
                          BLINDPAIR_MEDIA_DIR=f"{tmp}/media", BLINDPAIR_SECRET_KEY=secrets.token_urlsafe(48),
                          BLINDPAIR_BROKER_URL=f"sqla+sqlite:///{tmp}/broker.sqlite", PYTHONPATH=str(ROOT))
        sys.path.insert(0, str(ROOT))
        invite = _prepare(Path(tmp))
        proc, base = _serve()
        try:
            _shoot(base, invite, args.out)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"wrote {', '.join(str(p) for p in sorted(args.out.glob('player-*.png')))}")


if __name__ == "__main__":
    main()
