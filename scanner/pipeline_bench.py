"""``dfscan bench --pipeline``: end-to-end videos/s, frames/s, faces/s and stage shares."""
from __future__ import annotations

import time
from pathlib import Path

from .config import ScanConfig
from .pipeline import build_context, scan_video
from .sources import expand_inputs

STAGES = ("decode", "detect", "align", "infer", "aggregate")


def _summarise(rows: list[dict], wall: float) -> dict:
    ok = [r for r in rows if r["verdict"] != "error"]
    stages = {s: sum((r.get("timings") or {}).get(s, 0.0) for r in ok) for s in STAGES}
    total = sum(stages.values()) or 1.0
    frames, faces = sum(r["frames"] for r in ok), sum(r["faces"] for r in ok)
    return {
        "videos": len(rows), "errors": len(rows) - len(ok), "wall_s": round(wall, 3),
        "videos_per_s": round(len(rows) / wall, 3), "frames_per_s": round(frames / wall, 2),
        "faces_per_s": round(faces / wall, 2), "frames": frames, "faces": faces,
        "stage_s": {k: round(v, 3) for k, v in stages.items()},
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "per_video_s": {Path(r["path"]).name: r["timings"]["total"] for r in rows},
    }


def benchmark_pipeline(paths: list[str], options: dict) -> dict:
    """Scan ``paths`` once per detector (after one warm-up video) and report throughput.

    ``options``: detectors, weights (name -> path), engine, precision, batch_sizes, device.
    """
    from engines.benchmark import machine_info

    videos = expand_inputs(paths)
    device = options.get("device") or "cpu"
    out = {"machine": machine_info(device), "videos": [str(v) for v in videos], "results": []}
    for det in options.get("detectors") or [ScanConfig().detector]:
        cfg = ScanConfig(detector=det, weights=(options.get("weights") or {}).get(det),
                         engine=options.get("engine") or ScanConfig().engine,  # as dfscan scan
                         precision=options.get("precision") or "fp32",
                         batch_size=max(options.get("batch_sizes") or [32]), device=device,
                         details=False, progress=False)
        t0 = time.perf_counter()
        ctx = build_context(cfg)
        ready = time.perf_counter() - t0
        scan_video(videos[0], ctx)  # warm-up: thread pools, allocator, lazy inits
        t0 = time.perf_counter()
        rows = [scan_video(v, ctx) for v in videos]
        res = _summarise(rows, time.perf_counter() - t0)
        out["results"].append({"detector": det, "engine": cfg.engine, "precision": cfg.precision,
                               "ready_s": round(ready, 3), **res})
    return out
