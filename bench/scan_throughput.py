"""End-to-end scan throughput: dfscan vs a DFDC-2020-winner-style front end.

Clips (made once into bench/.cache from ../shared/media, not committed):
  crowd_1080p.mp4   1920x1080, 4.2 s, many small faces (as shipped)
  portrait_1080p.mp4  d13 upscaled to 1080x1920, first 10 s (libx264 defaults: long GOP, B-frames)
  d0.mp4 (512x512, 3.1 s) and d6.mp4 (480x480, 33.6 s) as shipped

Baseline front end (as the DFDC winner's inference code does it): decode every frame up to
the last sampled one, convert only the 32 sampled frames, run facenet MTCNN on half-size
frames (thresholds 0.7/0.8/0.8, min face 20 px), crop each box, resize to the detector
input, score with the *same* detector as dfscan. dfscan: ``scan_video`` with defaults.

    python bench/scan_throughput.py [--device cpu] [--repeat 2] [--out bench/results/scan_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from engines import create_detector
from engines.benchmark import machine_info
from scanner.config import ScanConfig
from scanner.decode import FrameSampler
from scanner.pipeline import build_context, scan_paths

CACHE = Path(__file__).resolve().parent / ".cache"


def shared_dir(arg: str | None) -> Path:
    p = Path(arg) if arg else Path(__file__).resolve().parents[2] / "shared"
    if not (p / "media").is_dir():
        raise SystemExit(f"shared media not found at {p} (pass --shared PATH)")
    return p


def _upscaled_portrait(src: Path, dst: Path, seconds: float = 10.0) -> Path:
    if dst.exists():
        return dst
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        s = out.add_stream("libx264", rate=vin.average_rate)
        s.width, s.height, s.pix_fmt = 1080, 1920, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "20"}
        for i, f in enumerate(inp.decode(vin)):
            if f.time > seconds:
                break
            g = f.reformat(width=1080, height=1920, format="yuv420p", interpolation="BICUBIC")
            g.pts, g.time_base = i, s.codec_context.time_base or (1 / vin.average_rate)
            for p in s.encode(g):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def _repeated(src: Path, dst: Path, times: int = 8) -> Path:
    """``src`` remuxed ``times`` times end to end (no re-encode): a long multi-GOP clip."""
    if dst.exists():
        return dst
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        span = None
        for k in range(times):
            inp.seek(0)
            last = 0
            for pkt in inp.demux(vin):
                if pkt.dts is None:
                    continue
                off = 0 if span is None else k * span
                pkt.pts, pkt.dts = pkt.pts + off, pkt.dts + off
                last = max(last, pkt.pts - off + (pkt.duration or 0))
                pkt.stream = vout
                out.mux(pkt)
            span = span or last
    return dst


def bench_clips(shared: Path) -> list[Path]:
    CACHE.mkdir(exist_ok=True)
    media = shared / "media"
    return [media / "crowd_1080p.mp4",
            _upscaled_portrait(media / "portrait" / "d13.mp4", CACHE / "portrait_1080p.mp4"),
            media / "portrait" / "d0.mp4", media / "portrait" / "d6.mp4"]


class Baseline:
    """DFDC-winner-style front end with the same detector as dfscan."""

    def __init__(self, detector_name: str, device: str):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(margin=0, thresholds=[0.7, 0.8, 0.8], keep_all=True, device=device)
        self.det = create_detector(detector_name, device=device)
        self.device = device

    def frames(self, path: Path, n: int = 32) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            total = s.frames or sum(1 for _ in c.demux(s))
        want = set(np.linspace(0, total - 1, n).round().astype(int).tolist())
        out = []
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for i, f in enumerate(c.decode(s)):  # every frame up to the last sampled one
                if i in want:
                    out.append(f.to_ndarray(format="rgb24"))
                if i >= max(want):
                    break
        return out

    def __call__(self, path: Path) -> dict:
        t = {}
        t0 = time.perf_counter()
        frames = self.frames(path)
        t["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        h, w = frames[0].shape[:2]
        half = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
        half = F.interpolate(half, size=(h // 2, w // 2), mode="bilinear", antialias=True)
        boxes, _ = self.mtcnn.detect(half.permute(0, 2, 3, 1).round().byte().numpy())
        t["detect"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        S = self.det.spec.size
        crops = []
        for img, bb in zip(frames, boxes):
            for b in ([] if bb is None else bb):
                x1, y1, x2, y2 = (np.asarray(b) * 2).astype(int)
                crop = img[max(0, y1):y2, max(0, x1):x2]
                if crop.size:
                    c = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
                    crops.append(F.interpolate(c, size=(S, S), mode="bilinear"))
        with torch.inference_mode():
            scores = self.det.p_fake(self.det(torch.cat(crops))) if crops else torch.zeros(0)
        t["infer"] = time.perf_counter() - t0
        return {"faces": len(crops), "frames": len(frames), "timings": t,
                "score": float(scores.mean()) if len(scores) else None}


def decode_only(path: Path, seek: bool, frames: int = 32) -> float:
    t0 = time.perf_counter()
    for _ in FrameSampler(path, frames=frames, det_max_side=960, seek=seek):
        pass
    return time.perf_counter() - t0


def decode_everything(path: Path) -> float:
    """Naive reference: decode every frame of the file (no skipping, no seeking)."""
    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for _ in c.decode(video=0):
            pass
    return time.perf_counter() - t0


def run(clips: list[Path], device: str, repeat: int, detector: str) -> dict:
    ctx = build_context(ScanConfig(device=device, detector=detector, details=False))
    base = Baseline(detector, device)
    res = {"clips": {}, "detector": detector, "device": device, "repeat": repeat}
    res["dfscan_workers"] = ctx.workers
    threads = torch.get_num_threads()
    # dfscan scans videos concurrently (ctx.workers); the baseline one after another.
    runners = (("dfscan", lambda ps: scan_paths(ps, ctx=ctx)), ("baseline", lambda ps: map(base, ps)))
    for name, run_all in runners:
        # build_context lowered torch's threads for its workers; the sequential
        # baseline gets every core, as it would on its own.
        torch.set_num_threads(os.cpu_count() if name == "baseline" else threads)
        list(run_all([clips[-2]]))  # warm-up (thread pools, allocator)
        walls, per_clip, stages = [], {}, {}
        for _ in range(repeat):
            t0 = time.perf_counter()
            for p, row in zip(clips, run_all(clips)):
                name_ = Path(row.get("path", p)).name
                per_clip.setdefault(name_, []).append(
                    {"wall_s": row["timings"].get("total", sum(row["timings"].values())),
                     "faces": row["faces"], "frames": row["frames"]})
                for k, v in row["timings"].items():
                    if k != "total":
                        stages[k] = stages.get(k, 0.0) + v
            walls.append(time.perf_counter() - t0)
        best = min(walls)
        faces = sum(r[0]["faces"] for r in per_clip.values())
        frames = sum(r[0]["frames"] for r in per_clip.values())
        tot = sum(stages.values())
        res[name] = {
            "wall_s_best": round(best, 3), "videos_per_s": round(len(clips) / best, 3),
            "frames_per_s": round(frames / best, 1), "faces_per_s": round(faces / best, 1),
            "faces": faces, "stage_share": {k: round(v / tot, 3) for k, v in stages.items()},
            "per_clip_s": {k: round(min(x["wall_s"] for x in v), 3) for k, v in per_clip.items()},
        }
    res["speedup_videos_per_s"] = round(res["dfscan"]["videos_per_s"] / res["baseline"]["videos_per_s"], 2)
    long = _repeated(clips[-1], CACHE / "d6_x8.mp4")  # 4.5 min, 40 GOPs: where seeking pays
    res["decode_only_s"] = {
        p.name: {"planned_seek_32": round(decode_only(p, True), 3),
                 "planned_no_seek_32": round(decode_only(p, False), 3),
                 "planned_seek_8": round(decode_only(p, True, 8), 3),
                 "planned_no_seek_8": round(decode_only(p, False, 8), 3),
                 "decode_every_frame": round(decode_everything(p), 3)}
        for p in [*clips, long]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--detector", default="meso4_df")
    ap.add_argument("--shared", default=None, help="path of shared/ (default: beside the repo)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    clips = bench_clips(shared_dir(args.shared))
    res = {"machine": machine_info(args.device), **run(clips, args.device, args.repeat, args.detector)}
    out = Path(args.out or f"bench/results/scan_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("dfscan", "baseline", "speedup_videos_per_s")}, indent=2))


if __name__ == "__main__":
    main()
