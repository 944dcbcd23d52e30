"""Make the README's screenshots with headless Chromium (Debian's ``chromium`` package).

    python docs/screenshots.py [--chromium /usr/bin/chromium] [--only report|status]

report.png: `dfscan scan` of the bundled clips plus one text file renamed .mp4,
then `dfscan report --explain gradcam` (meso4_df). status.png: `dfscan serve`
with two live MPEG-TS streams of a bundled clip over loopback HTTP.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CLIPS = [ROOT / "scanner/samples/d5.mp4", ROOT / "scanner/samples/d7.mp4", ROOT / "tests/data/d1.mp4",
         ROOT / "tests/data/d2.mp4", ROOT / "tests/data/d18.mp4"]
CROWD = ROOT.parent / "shared/media/crowd_1080p.mp4"  # several faces: one timeline line per track
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--proxy-server=http://127.0.0.1:9"]


def _dfscan(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "scanner.cli", *args], cwd=ROOT, check=False)


def _shoot(url: str, png: Path, chromium: str, wait_for: str | None = None, height: int = 1100) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = b.new_page(viewport={"width": 1280, "height": height}, device_scale_factor=1)
        page.goto(url)
        if wait_for:
            page.wait_for_function(wait_for, timeout=120_000)
        page.screenshot(path=str(png))
        b.close()
    print(f"wrote {png}")


def report(tmp: Path, chromium: str) -> None:
    vids = tmp / "videos"
    vids.mkdir()
    for c in CLIPS + ([CROWD] if CROWD.exists() else []):
        shutil.copy(c, vids / c.name)
    (vids / "notes.mp4").write_text("meeting notes, not a video\n" * 20)
    results = tmp / "results.jsonl"
    _dfscan("scan", str(vids), "--out", str(results), "--no-progress")
    _dfscan("report", str(results), "--out", str(tmp / "report.html"), "--explain", "gradcam", "--top-k", "3")
    _shoot((tmp / "report.html").as_uri(), DOCS / "report.png", chromium, height=1500)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(tmp: Path, chromium: str) -> None:
    from scanner.live.publish import HttpTsPublisher

    pubs = [HttpTsPublisher(str(c)).start() for c in CLIPS[:2]]
    port = _free_port()
    cfg = tmp / "serve.yaml"
    streams = "".join(f"  - {{name: cam-{i + 1}, url: '{p.url}'}}\n" for i, p in enumerate(pubs))
    streams += f"  - {{name: lobby, url: 'rtsp://viewer:secret@127.0.0.1:{_free_port()}/lobby'}}\n"
    cfg.write_text(f"api: {{host: 127.0.0.1, port: {port}}}\nmodel: {{detector: meso4_df}}\n"
                   f"faces: {{min_face: 40}}\nsinks: []\nstreams:\n{streams}")
    proc = subprocess.Popen([sys.executable, "-m", "scanner.cli", "serve", "--config", str(cfg)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        _shoot(url, DOCS / "status.png", chromium, height=330,
               wait_for="() => [...document.querySelectorAll('#streams td.score')].filter("
                        "td => td.textContent !== '–').length >= 2")
    finally:
        proc.terminate()
        proc.wait(30)
        for p in pubs:
            p.stop()


def _missing(chromium: str) -> str | None:
    """What the screenshots need and this machine lacks, checked before any scan is run."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return f"needs Playwright (the test extra: pip install -e '.[test]') and Debian's chromium: {e}"
    if not (Path(chromium).is_file() or shutil.which(chromium)):
        return f"needs Chromium: {chromium} not found (apt-get install chromium, or pass --chromium PATH)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--only", choices=["report", "status"])
    args = ap.parse_args()
    missing = _missing(args.chromium)
    if missing:
        sys.exit(f"docs/screenshots.py: {missing}")
    with tempfile.TemporaryDirectory() as d:
        if args.only in (None, "report"):
            report(Path(d), args.chromium)
        if args.only in (None, "status"):
            status(Path(d), args.chromium)


if __name__ == "__main__":
    main()
