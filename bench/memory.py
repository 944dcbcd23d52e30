"""Peak memory of ``dfscan scan``: video length and input count must not grow it.

Two measurements (issue 11, item 4), each a real ``dfscan scan`` subprocess:

1. peak RSS scanning a 1-hour 1080p video vs a 1-minute one (same sampling);
   target: 1 hour <= 1.2x 1 minute;
2. RSS over a 10,000-input scan (one short clip hard-linked 10,000 times), sampled
   while it runs; target: flat (no growth with the number of rows).

Videos are synthetic (a moving gradient, libx264) and made once in a cache folder
outside git: 10 s are encoded, then their packets are muxed again with shifted
timestamps up to the wanted length, so a 1-hour file takes seconds to make and
has a real 1-hour packet index (90,000 packets at 25 fps).

    python bench/memory.py [--cache DIR] [--inputs 10000] [--out bench/results/memory_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np

from engines.files import write_json

ROOT = Path(__file__).resolve().parents[1]


def _gradient(i: int, w: int, h: int) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :] + 2 * i
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    g = ((x + y) % 256).astype(np.uint8)
    return np.stack([g, np.roll(g, i, axis=1), 255 - g], axis=-1)


def make_video(path: Path, seconds: int, size=(1920, 1080), fps: int = 25, chunk_s: int = 10) -> Path:
    """A ``seconds`` long H.264 MP4: ``chunk_s`` encoded once, re-muxed with shifted timestamps."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    w, h = size
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "40", "g": str(fps * chunk_s), "bf": "0"}
        for i in range(fps * chunk_s):
            for p in s.encode(av.VideoFrame.from_ndarray(_gradient(i, w, h), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(tmp)) as src, av.open(str(path), "w") as dst:
        ist = src.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        packets = [p for p in src.demux(ist) if p.size]
        step = int(round(chunk_s / ist.time_base))  # chunk length in stream time base
        for k in range(seconds // chunk_s):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * step, p.dts + k * step
                q.time_base, q.stream = ist.time_base, ost
                q.is_keyframe = p.is_keyframe
                dst.mux(q)
    tmp.unlink()
    return path


def _rss_kib(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_scan(args: list[str], out: Path | None = None, every_s: float = 1.0) -> dict:
    """Run ``dfscan scan ARGS``; peak RSS (wait4) and an RSS-vs-rows series."""
    cmd = [sys.executable, "-m", "scanner.cli", "scan", *args, "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    series, done = [], threading.Event()

    def sample():
        t0 = time.monotonic()
        while not done.wait(every_s):
            rss = _rss_kib(proc.pid)
            rows = sum(1 for _ in open(out)) if out is not None and out.exists() else None
            if rss:
                series.append({"t_s": round(time.monotonic() - t0, 1), "rows": rows, "rss_mib": round(rss / 1024, 1)})

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()[-2000:]
    return {"cmd": " ".join(["dfscan", "scan", *args]), "exit_code": proc.returncode,
            "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "series": series, "stderr_tail": err if proc.returncode not in (0, 1) else ""}


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1), "python": platform.python_version(),
            "av": av.__version__, "os": platform.platform(),
            "note": "shared 2-core VM (8 engineers working on it at the same time), run under nice"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/dfscan/bench-memory"))
    ap.add_argument("--inputs", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory_cpu.json"))
    a = ap.parse_args()
    cache = Path(a.cache)
    res: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    one_min = make_video(cache / "gradient_1080p_60s.mp4", 60)
    one_hour = make_video(cache / "gradient_1080p_3600s.mp4", 3600)
    common = ["--frames", str(a.frames), "--workers", "1", "--detector", "meso4_df"]
    # Warm-up (not measured): the first scan builds the ONNX engine into the cache, which
    # costs memory that has nothing to do with the video's length.
    run_scan([str(one_min), *common, "--out", str(cache / "warmup.jsonl")])
    length = {}
    for name, video in (("1_minute", one_min), ("1_hour", one_hour)):
        r = run_scan([str(video), *common, "--out", str(cache / f"{name}.jsonl")])  # new file each time
        r.pop("series")
        r["video"] = {"seconds": 60 if name == "1_minute" else 3600, "size": "1920x1080", "fps": 25,
                      "bytes": video.stat().st_size}
        length[name] = r
    ratio = length["1_hour"]["peak_rss_mib"] / length["1_minute"]["peak_rss_mib"]
    res["video_length"] = {**length, "ratio_1h_over_1min": round(ratio, 3), "target": "<= 1.2",
                           "pass": ratio <= 1.2}

    clip = make_video(cache / "gradient_160x120_2s.mp4", 2, size=(160, 120), chunk_s=2)
    links = cache / f"links_{a.inputs}"
    links.mkdir(exist_ok=True)
    for i in range(a.inputs):
        p = links / f"c{i:05d}.mp4"
        if not p.exists():
            os.link(clip, p)
    out = cache / "many.jsonl"
    out.unlink(missing_ok=True)
    run_scan([str(clip), "--frames", "2", "--detector", "test_tiny", "--out", str(cache / "warmup.jsonl")])
    r = run_scan([str(links), "--frames", "2", "--detector", "test_tiny", "--workers", "2",
                  "--out", str(out)], out=out, every_s=2.0)
    rows = [s for s in r["series"] if s["rows"]]
    early = next((s for s in rows if s["rows"] >= a.inputs // 10), rows[0] if rows else None)
    late = rows[-1] if rows else None
    r["rss_at_10pct_mib"], r["rss_at_end_mib"] = (early or {}).get("rss_mib"), (late or {}).get("rss_mib")
    r["growth_mib_from_10pct_to_end"] = round(late["rss_mib"] - early["rss_mib"], 1) if rows else None
    r["series"] = r["series"][:: max(1, len(r["series"]) // 60)]  # keep the JSON small
    res["many_inputs"] = {"inputs": a.inputs, **r}
    write_json(res, a.out)
    print(json.dumps({k: v for k, v in res.items() if k != "many_inputs"} | {
        "many_inputs": {k: v for k, v in r.items() if k != "series"}}, indent=2))


if __name__ == "__main__":
    main()
