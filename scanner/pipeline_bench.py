"""``dfscan bench --pipeline``: end-to-end videos/s, frames/s, faces/s and stage shares.

Per video it also times *pure decoding* of exactly the frames the scan decodes
(same sampler, seeking, skipped frames and downscaled copy, nothing else), and
reports ``pipeline_over_decode``: the scan's time over that floor (1.0 would
mean face detection, alignment and scoring cost nothing on top of decoding).

Videos are scanned as ``dfscan scan`` scans them: ``workers`` at a time, torch using
``threads`` intra-op threads (both recorded per result). The floor is decoded with as
many videos at a time, so both times see the same contention for the cores.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .decode import FrameSampler

from .config import ScanConfig
from .pipeline import build_context, scan_paths, scan_video
from .sources import expand_inputs

STAGES = ("decode", "detect", "align", "infer", "aggregate")


def decode_only_s(path, cfg: ScanConfig) -> float:
    """Seconds to decode the frames a scan of ``path`` with ``cfg`` decodes (nothing else)."""
    t0 = time.perf_counter()
    for _ in FrameSampler(path, cfg.frames, cfg.fps, cfg.det_max_side, cfg.seek):
        pass
    return time.perf_counter() - t0


def video_labels(paths: list) -> dict[str, str]:
    """Path -> the shortest tail of it no other video shares: ``clip.mp4``, or ``a/clip.mp4``
    and ``b/clip.mp4`` when two folders hold one. Per-video results were keyed by file name
    alone, so one of two same-named videos silently overwrote the other's."""
    parts = {str(p): Path(p).parts for p in paths}
    labels: dict[str, str] = {}
    depth = 0
    while len(labels) < len(parts):
        depth += 1
        tails = Counter(v[-depth:] for v in parts.values())
        for k, v in parts.items():
            if k in labels:
                continue
            if tails[v[-depth:]] == 1:
                labels[k] = str(Path(*v[-depth:]))
            elif depth >= len(v):  # all of it is the tail of another path ("x/a.mp4", "/r/x/a.mp4")
                labels[k] = k
    return labels


def decode_ratios(rows: list[dict], cfg: ScanConfig, labels: dict[str, str] | None = None,
                  workers: int = 1, decode_s: dict[str, float] | None = None) -> dict:
    """Per video (keyed by ``labels``, default :func:`video_labels`): pure decode seconds,
    pipeline seconds and their ratio; ``workers`` videos decoded at a time, as scanned.
    ``decode_s`` (path -> seconds): decode times measured already (else measured here)."""
    labels = labels or video_labels([r["path"] for r in rows])
    ok = [r for r in rows if r["verdict"] != "error"]
    if decode_s is not None:
        decode_s = [decode_s[str(r["path"])] for r in ok]
    else:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            decode_s = list(pool.map(lambda r: decode_only_s(r["path"], cfg), ok))
    out = {}
    for r, dec in zip(ok, decode_s):
        dec = round(dec, 4)  # the ratio uses the figure reported
        total = r["timings"]["total"]
        out[labels[r["path"]]] = {"decode_only_s": dec, "pipeline_s": total,
                                  "pipeline_over_decode": round(total / max(dec, 1e-9), 2)}
    return out


def _summarise(rows: list[dict], wall: float, labels: dict[str, str] | None = None) -> dict:
    labels = labels or video_labels([r["path"] for r in rows])
    ok = [r for r in rows if r["verdict"] != "error"]
    stages = {s: sum((r.get("timings") or {}).get(s, 0.0) for r in ok) for s in STAGES}
    total = sum(stages.values()) or 1.0
    frames, faces = sum(r["frames"] for r in ok), sum(r["faces"] for r in ok)
    return {
        "videos": len(rows), "errors": len(rows) - len(ok), "wall_s": round(wall, 3),
        # Scanned videos only: a missing or unreadable one fails in microseconds and was
        # counted (3000 videos/s for one missing file).
        "videos_per_s": round(len(ok) / wall, 3), "frames_per_s": round(frames / wall, 2),
        "faces_per_s": round(faces / wall, 2), "frames": frames, "faces": faces,
        "stage_s": {k: round(v, 3) for k, v in stages.items()},
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "per_video_s": {labels[r["path"]]: r["timings"]["total"] for r in rows},
    }


def benchmark_pipeline(paths: list[str], options: dict, on_update: Callable[[dict], None] | None = None) -> dict:
    """Scan ``paths`` once per detector x engine (after one warm-up video) and report throughput.

    ``options``: detectors, weights (name -> path), engines (names; default the scan's),
    precision, batch_sizes, device, cache_dir. A detector x engine that cannot be built
    (unavailable here, failed parity) is listed under ``skipped``, as ``dfscan bench`` does.
    ``on_update(result)`` is called with the result so far (``complete`` False) after each
    detector x engine, so a run interrupted or crashing after an hour keeps what it measured;
    never before the first, so an earlier run's file is only replaced by one with results.
    """
    from engines.benchmark import load_detectors, machine_info
    from engines.errors import DfscanError

    videos = expand_inputs(paths)
    if not videos:  # the warm-up scan of the first was an IndexError traceback
        raise DfscanError(f"bench --pipeline: no video file found in {' '.join(map(str, paths))}")
    device, weights = options.get("device") or "cpu", options.get("weights") or {}
    detectors = options.get("detectors") or [ScanConfig().detector]
    # Each one created once before any scan, and dropped (build_context creates its own): a
    # later one needing --weights was listed as skipped after the first's results were in.
    load_detectors(detectors, device, weights)
    out = {"machine": machine_info(device), "videos": [str(v) for v in videos], "results": [], "skipped": [],
           "complete": False}
    update = on_update or (lambda result: None)
    # Every engine asked for: only the first was run, the others dropped without a word.
    engines = options.get("engines") or [ScanConfig().engine]  # as dfscan scan
    for det in detectors:
        for engine in engines:
            cfg = ScanConfig(detector=det, weights=weights.get(det), engine=engine,
                             precision=options.get("precision") or "fp32",
                             batch_size=max(options.get("batch_sizes") or [32]), device=device,
                             details=False, progress=False)
            try:
                out["results"].append(_bench_one(videos, cfg, options.get("cache_dir")))
            except DfscanError as e:
                out["skipped"].append({"detector": det, "engine": engine, "error": str(e)})
            update(out)
    out["complete"] = True
    return out


def _bench_one(videos: list, cfg: ScanConfig, cache_dir: str | None) -> dict:
    import torch

    from engines.backends import resolve_engine_name

    t0 = time.perf_counter()
    with _engine_cache(cache_dir):
        ctx = build_context(cfg)
    ready = time.perf_counter() - t0
    scan_video(videos[0], ctx)  # warm-up: thread pools, allocator, lazy inits
    t0 = time.perf_counter()
    # ctx.workers videos at a time, as dfscan scan: build_context set torch to cores/workers
    # threads, so scanning one video at a time left most cores idle (videos/s under-reported).
    rows = list(scan_paths(videos, ctx=ctx))
    labels = video_labels(videos)
    res = _summarise(rows, time.perf_counter() - t0, labels)
    # The engine that ran ('auto' named none), and the name asked for.
    return {"detector": cfg.detector, "engine": resolve_engine_name(cfg.engine, cfg.device),
            "engine_requested": cfg.engine, "precision": cfg.precision, "ready_s": round(ready, 3),
            "workers": ctx.workers, "threads": torch.get_num_threads(), **res,
            "decode": decode_ratios(rows, cfg, labels, ctx.workers)}


@contextmanager
def _engine_cache(cache_dir: str | None):
    """``--cache-dir`` for the scan's engine build: the scan takes its cache from
    $DFSCAN_CACHE_DIR only (it was ignored here, and the default cache used)."""
    if not cache_dir:
        yield
        return
    old = os.environ.get("DFSCAN_CACHE_DIR")
    os.environ["DFSCAN_CACHE_DIR"] = str(cache_dir)
    try:
        yield
    finally:
        if old is None:
            del os.environ["DFSCAN_CACHE_DIR"]
        else:
            os.environ["DFSCAN_CACHE_DIR"] = old
