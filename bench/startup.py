"""Start-up times of the command line: ``dfscan --help``, and ``dfscan scan`` until its
first decoded frame (engine cache already warm, as on every scan but the first).

The first-frame time comes from the scan's own log line (``-v``: "first frame decoded
X s after process start", measured from the process's start time in /proc), so it
includes the interpreter's start-up. Also records the whole scan's wall time.

    nice python bench/startup.py [--runs 5] [--out bench/results/startup_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engines.files import write_json

ROOT = Path(__file__).resolve().parents[1]
FIRST = re.compile(r"first frame decoded ([0-9.]+) s after process start")
READY = re.compile(r"ready in ([0-9.]+)s")


def dfscan_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("dfscan")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scanner.cli"]


def time_help(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([*dfscan_cmd(), "--help"], check=True, capture_output=True)
        out.append(round(time.perf_counter() - t0, 3))
    return out


def time_scan(clips: list[str], runs: int, env: dict) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            rows = Path(tmp) / "rows.jsonl"
            rows.unlink(missing_ok=True)
            t0 = time.perf_counter()
            p = subprocess.run([*dfscan_cmd(), "-v", "scan", *clips, "--out", str(rows), "--no-progress",
                                "--no-details"], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            first, ready = FIRST.search(p.stderr), READY.search(p.stdout.replace("\n", " "))
            out.append({"rc": p.returncode, "first_frame_s": float(first.group(1)) if first else None,
                        "engine_ready_s": float(ready.group(1)) if ready else None, "wall_s": round(wall, 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default="bench/results/startup_cpu.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from engines.benchmark import machine_info

    cases = {"crowd_1080p": [str(Path(args.shared) / "media" / "crowd_1080p.mp4")], "bundled_samples": []}
    if not Path(cases["crowd_1080p"][0]).is_file():  # else every timed scan of it is an exit-2 run, recorded
        raise SystemExit(f"bench/startup.py: {cases['crowd_1080p'][0]} not found (--shared PATH names shared/)")
    cache = tempfile.mkdtemp(prefix="dfscan-startup-cache-")
    env = {**os.environ, "DFSCAN_CACHE_DIR": cache}
    load0 = os.getloadavg()[0]
    res = {"machine": machine_info("cpu"), "help_s": time_help(args.runs), "scan": {}}
    try:
        for name, clips in cases.items():
            time_scan(clips, 1, env)  # fills the engine cache: the measured runs are cache hits
            res["scan"][name] = time_scan(clips, args.runs, env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    firsts = [r["first_frame_s"] for v in res["scan"].values() for r in v if r["first_frame_s"] is not None]
    res["summary"] = {"help_median_s": statistics.median(res["help_s"]),
                      "first_frame_median_s": statistics.median(firsts) if firsts else None,
                      "first_frame_max_s": max(firsts) if firsts else None}
    res["load_avg_1m_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res["note"] = "2-core VM shared with other jobs; run under nice (see load averages)"
    write_json(res, args.out)
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    main()
