"""Lighthouse (mobile preset: simulated slow 4G, 4x CPU slowdown) on the pair page of a built demo, served from a
given source tree, so two trees (before and after a change) are measured on the same data and the same pair.

Not part of ``make bench``: it needs Node and Lighthouse, which the project does not depend on.

    blindpair demo --no-serve                      # with BLINDPAIR_DATA_DIR=/tmp/lh-demo: a demo to measure
    npm install --prefix /tmp/lh lighthouse@12     # Lighthouse itself, outside the repository
    python bench/pair_lighthouse.py --data-dir /tmp/lh-demo --lighthouse /tmp/lh/node_modules/.bin/lighthouse \
        --tree /path/to/before --tree . --runs 3

One evaluator joins once (its cookie is kept in the data folder, so every tree shows the same pair) under an
external id and platform session id, so the demo's per-address session limit is not in the way. Chrome is
/usr/bin/chromium unless CHROME_PATH says otherwise. Prints per run and the median per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx


def _serve(tree: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree), BLINDPAIR_DATA_DIR=str(data_dir),
               BLINDPAIR_ENVIRONMENT="development")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"], cwd=tree, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1)
            return proc
        except urllib.error.HTTPError:
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server from {tree} did not start; see {log}")


def _cookie(base: str, data_dir: Path) -> str:
    saved = data_dir / "lighthouse-evaluator.cookie"
    if saved.exists():
        return saved.read_text()
    db = sqlite3.connect(data_dir / "blindpair.sqlite")
    invite = db.execute("select invite_token from studies where slug = 'demo'").fetchone()[0]
    client = httpx.Client(base_url=base)
    ids = {"external_id": "lighthouse-bench", "platform_session_id": "lighthouse-1"}
    page = client.get(f"/join/{invite}", params={"PROLIFIC_PID": ids["external_id"],
                                                 "SESSION_ID": ids["platform_session_id"]}).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if csrf is None:
        raise SystemExit("the invite page has no consent form (is the demo study open?)")
    answer = client.post(f"/join/{invite}", data={"csrf_token": csrf.group(1), "consent": "yes", **ids})
    if answer.status_code != 303:
        raise SystemExit(f"joining failed with {answer.status_code}: {answer.text[:300]}")
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    saved.write_text(cookie)
    return cookie


def _lcp_element(audits: dict) -> str:
    """The element Lighthouse took as the largest paint (its selector), to see what the number is the time of."""
    try:
        for table in audits["largest-contentful-paint-element"]["details"]["items"]:
            for item in table.get("items", [table]):
                node = item.get("node")
                if node:
                    return str(node.get("selector") or node.get("snippet"))
    except (KeyError, TypeError):
        pass
    return "?"


def measure(tree: Path, *, data_dir: Path, lighthouse: str, runs: int, port: int,
            throttling: str = "simulate") -> list[dict]:
    base = f"http://127.0.0.1:{port}"
    proc = _serve(tree, data_dir, port, data_dir / f"lighthouse-serve-{port}.log")
    out = []
    try:
        cookie = _cookie(base, data_dir)
        pair = httpx.get(f"{base}/e/pair", headers={"Cookie": cookie})
        if pair.status_code != 200:
            raise SystemExit(f"/e/pair answered {pair.status_code} from {tree}")
        clips = [len(httpx.get(base + src, headers={"Cookie": cookie}).content)
                 for src in re.findall(r' src="(/m/[^"]+)"', pair.text)]
        with tempfile.TemporaryDirectory() as tmp:
            headers = Path(tmp) / "headers.json"
            headers.write_text(json.dumps({"Cookie": cookie}))
            for i in range(runs):
                report = Path(tmp) / f"run-{i}.json"
                subprocess.run([lighthouse, f"{base}/e/pair", "--only-categories=performance", "--quiet",
                                f"--extra-headers={headers}", "--output=json", f"--output-path={report}",
                                f"--throttling-method={throttling}",
                                "--chrome-flags=--headless=new --no-sandbox --disable-gpu"],
                               env={"CHROME_PATH": "/usr/bin/chromium", **os.environ}, timeout=300)
                if not report.exists():
                    print(f"{tree}: run {i} failed, skipped", flush=True)
                    continue
                data = json.loads(report.read_text())
                if data.get("runtimeError") or data["categories"]["performance"]["score"] is None:
                    print(f"{tree}: run {i}: Lighthouse failed ({data.get('runtimeError', {}).get('code')}), "
                          "skipped", flush=True)
                    continue
                audits = data["audits"]
                row = {"score": round(data["categories"]["performance"]["score"] * 100),
                       "lcp_ms": audits["largest-contentful-paint"]["numericValue"],
                       "fcp_ms": audits["first-contentful-paint"]["numericValue"],
                       "si_ms": audits["speed-index"]["numericValue"],
                       "bytes": audits["total-byte-weight"]["numericValue"], "clips": clips,
                       "lighthouse": data["lighthouseVersion"], "lcp_element": _lcp_element(audits)}
                out.append(row)
                print(f"{tree}: run {i}: performance {row['score']}, LCP {row['lcp_ms']:.0f} ms, "
                      f"FCP {row['fcp_ms']:.0f} ms, speed index {row['si_ms']:.0f} ms, "
                      f"{row['bytes']:.0f} bytes (clips {clips}), LCP element "
                      f"{row['lcp_element']}", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="BLINDPAIR_DATA_DIR of a built demo")
    parser.add_argument("--lighthouse", required=True, help="the lighthouse command (from npm)")
    parser.add_argument("--tree", type=Path, action="append", required=True, help="a source tree; repeat")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--throttling", choices=("simulate", "devtools"), default="simulate",
                        help="Lighthouse's throttling method: simulate (its default: a model replayed from an "
                        "unthrottled load) or devtools (the page really loads at the throttled speed)")
    args = parser.parse_args()
    for k, tree in enumerate(args.tree):
        rows = measure(tree.resolve(), data_dir=args.data_dir, lighthouse=args.lighthouse, runs=args.runs,
                       port=args.port + k, throttling=args.throttling)
        if rows:
            print(f"{tree}: median of {len(rows)}: performance {statistics.median(r['score'] for r in rows):.0f}, "
                  f"LCP {statistics.median(r['lcp_ms'] for r in rows):.0f} ms, "
                  f"FCP {statistics.median(r['fcp_ms'] for r in rows):.0f} ms")


if __name__ == "__main__":
    main()
