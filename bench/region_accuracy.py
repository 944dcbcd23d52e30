"""Region search vs whole-frame face search on real clips: same faces? how much faster?

For every clip, the sampled frames (32, as a scan) go through MTCNN twice in
batches of the pipeline's size: whole frames (``FaceDetector.detect``) and the
region search (``scanner.region.RegionSearch``). A frame matches when both found
the same faces (same count, one-to-one IoU >= 0.5). Also times both, and
compares the ONNX Runtime nets (``face_engine: onnxruntime``) with eager.

    python bench/region_accuracy.py [--out bench/results/region_accuracy_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.benchmark import machine_info  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.decode import FrameSampler  # noqa: E402
from scanner.faces import FaceDetector  # noqa: E402
from scanner.pipeline import DETECT_BATCH  # noqa: E402
from scanner.region import RegionSearch, same_faces  # noqa: E402
from engines.files import write_json


def real_clips(shared: Path) -> list[Path]:
    local = sorted((ROOT / "tests" / "data").glob("*.mp4")) + sorted((ROOT / "scanner" / "samples").glob("*.mp4"))
    media = shared / "media"
    return local + sorted((media / "portrait").glob("*.mp4"), key=lambda p: int(p.stem[1:])) + \
        [media / "crowd_1080p.mp4"]


def _run(detect, frames) -> tuple[list, float]:
    """Faces per frame and the CPU seconds spent (one thread: steadier than wall time
    on a shared machine)."""
    t0, out = time.process_time(), []
    for k in range(0, len(frames), DETECT_BATCH):
        out += detect(frames[k:k + DETECT_BATCH])
    return out, time.process_time() - t0


def clip_report(path: Path, det: FaceDetector, cfg: ScanConfig, **region_kw) -> dict:
    frames = list(FrameSampler(path, cfg.frames, None, cfg.det_max_side, cfg.seek))
    full, t_full = _run(det.detect, frames)
    region = RegionSearch(det, full_every=cfg.full_search_every, **region_kw)
    found, t_region = _run(region.detect, frames)
    match = [same_faces(a, b) for a, b in zip(full, found)]
    return {"frames": len(frames), "matched": sum(match), "faces_full": sum(map(len, full)),
            "faces_region": sum(map(len, found)), "detect_full_cpu_s": round(t_full, 3),
            "detect_region_cpu_s": round(t_region, 3), "searched": dict(region.stats),
            "mismatched_frames": [frames[i].index for i, m in enumerate(match) if not m]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a scan worker's share on 2 cores)")
    ap.add_argument("--out", default="bench/results/region_accuracy_cpu.json")
    ap.add_argument("--max-share", type=float, default=None, help="RegionSearch max_share (default: its own)")
    ap.add_argument("--clips", nargs="*", default=None, help="only clips with these names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ScanConfig()
    det = FaceDetector(max_side=cfg.det_max_side, min_face=cfg.min_face, min_prob=cfg.face_prob,
                       max_faces=cfg.max_faces)
    kw = {} if args.max_share is None else {"max_share": args.max_share}
    clips = {p.name: clip_report(p, det, cfg, **kw) for p in real_clips(Path(args.shared))
             if not args.clips or p.name in args.clips}
    frames = sum(c["frames"] for c in clips.values())
    matched = sum(c["matched"] for c in clips.values())
    t_full = sum(c["detect_full_cpu_s"] for c in clips.values())
    t_region = sum(c["detect_region_cpu_s"] for c in clips.values())
    res = {"machine": {**machine_info("cpu"), "note": "shared 2-core VM, other jobs running"},
           "config": {"frames": cfg.frames, "full_search_every": cfg.full_search_every,
                      "det_max_side": cfg.det_max_side, "min_face": cfg.min_face, "iou": 0.5},
           "frames": frames, "matched": matched, "match_rate": round(matched / frames, 4),
           "detect_full_cpu_s": round(t_full, 3), "detect_region_cpu_s": round(t_region, 3),
           "speedup": round(t_full / max(t_region, 1e-9), 2), "clips": clips}
    write_json(res, args.out)
    print(json.dumps({k: v for k, v in res.items() if k not in ("clips", "machine")}, indent=2))


if __name__ == "__main__":
    main()
