"""Size (and render time) of `dfscan report` for 1,000 videos.

Scans the five bundled clips once (meso4_df, 32 frames), then writes a JSONL of
N rows whose paths are hard links to those clips (so every row's video exists
and is re-decoded, as in a real archive) and renders it: thumbnails for all N
videos (k = 4), and Grad-CAM (k = 4) for the first `--cam` videos, whose extra
bytes per video are extrapolated to N.

    python bench/report_size.py [--videos 1000] [--cam 20] [--out bench/results/report_size.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from engines.benchmark import machine_info
from scanner.cli import main as dfscan
from scanner.report import ReportOptions, load_rows, write_report
from engines.files import write_json

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [ROOT / "tests/data" / n for n in ("d1.mp4", "d2.mp4", "d18.mp4")] + \
        [ROOT / "scanner/samples" / n for n in ("d5.mp4", "d7.mp4")]


def _rows(tmp: Path, n: int) -> Path:
    base = tmp / "base.jsonl"
    dfscan(["scan", *map(str, CLIPS), "--out", str(base), "--frames", "32", "--no-progress"])
    rows = {Path(r["path"]).name: r for r in load_rows(base)[0]}
    links, out = tmp / "archive", tmp / f"rows{n}.jsonl"
    links.mkdir()
    with open(out, "w") as f:
        for i in range(n):
            src = CLIPS[i % len(CLIPS)]
            dst = links / f"v{i:05d}_{src.name}"
            os.link(src, dst)
            f.write(json.dumps({**rows[src.name], "path": str(dst)}) + "\n")
    return out


def _render(results: Path, out: Path, **kw) -> dict:
    t0 = time.perf_counter()
    stats = write_report(results, out, ReportOptions(**kw))
    return {"bytes": stats["bytes"], "videos": stats["videos"], "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--cam", type=int, default=20, help="videos rendered with Grad-CAM to measure its cost")
    ap.add_argument("--out", default=str(ROOT / "bench/results/report_size.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = _rows(tmp, args.videos)
        full = _render(rows, tmp / "full.html")
        few = tmp / "few.jsonl"
        few.write_text("".join(rows.read_text().splitlines(keepends=True)[: args.cam]))
        plain = _render(few, tmp / "few.html")
        cam = _render(few, tmp / "few_cam.html", explain="gradcam")
        bare = _render(rows, tmp / "bare.html", thumbnails=False)
    per_cam = (cam["bytes"] - plain["bytes"]) / max(args.cam, 1)
    result = {
        "command": f"python bench/report_size.py --videos {args.videos} --cam {args.cam}",
        "videos": args.videos, "top_k": 4, "frames_per_video": 32,
        "report_thumbnails": full, "report_no_thumbnails": bare,
        "bytes_per_video_thumbnails": round(full["bytes"] / args.videos),
        "gradcam_sample": {"videos": args.cam, "with": cam, "without": plain,
                           "extra_bytes_per_video": round(per_cam)},
        "estimated_mb_thumbnails_and_gradcam": round((full["bytes"] + per_cam * args.videos) / 1e6, 1),
        "machine": {**machine_info(), "note": "shared 2-core VM, loaded by other jobs: times are indicative"},
    }
    write_json(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
