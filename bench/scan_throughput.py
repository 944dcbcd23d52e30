"""End-to-end scan throughput: dfscan vs the DFDC-2020 winner's front end, in one run.

Clips (``--shared``/media; the 1080p portrait is made once into bench/.cache):
  crowd_1080p.mp4     1920x1080, 4.2 s, many small faces (as shipped)
  d6.mp4, d13.mp4     two talking heads from portrait/ (as shipped)
  portrait_1080p.mp4  d13 upscaled to 1080x1920, first 10 s (stands in for the winner's
                      10 s 1080p DFDC clip, which this project may not hold)

Peer front end, as the DFDC winner's inference code does it (same detector as dfscan,
32 frames per video, one video at a time): decode every frame up to the last sampled
one, keeping each as an RGB array; facenet-pytorch's own ``MTCNN.detect`` (thresholds
0.7/0.8/0.8) on half-size frames in one batch per video; crop each box from the full
frame, resize and normalise on the CPU; score. Its per-clip stage times are compared
with the medians of the winner's own code measured on this machine (``PEER_MEDIANS``,
from issue 14) as a calibration check.

Both are timed alternately, ``--repeat`` times: inside one process (context built
once) and as whole processes (``dfscan scan`` vs this script's ``--peer-process``).

    nice python bench/scan_throughput.py [--repeat 3] [--out bench/results/scan_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engines.files import write_json

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
# The winner's own front end here (issue 14): total / decode / MTCNN / classifier seconds.
PEER_MEDIANS = {
    "crowd_1080p.mp4": {"total": 4.46, "decode": 0.89, "detect": 2.52, "infer": 0.47},
    "d6.mp4": {"total": 0.99, "decode": 0.24, "detect": 0.52, "infer": 0.09},
    "d13.mp4": {"total": 1.67, "decode": 0.45, "detect": 0.82, "infer": 0.08},
    "portrait_1080p.mp4": {"total": 4.29, "decode": 0.88, "detect": 2.58, "infer": 0.10},
}


def shared_dir(arg: str | None) -> Path:
    p = Path(arg) if arg else ROOT.parent / "shared"
    if not (p / "media").is_dir():
        raise SystemExit(f"shared media not found at {p} (pass --shared PATH)")
    return p


def _upscaled_portrait(src: Path, dst: Path, seconds: float = 10.0) -> Path:
    import av

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


def bench_clips(shared: Path) -> list[Path]:
    CACHE.mkdir(exist_ok=True)
    media = shared / "media"
    return [media / "crowd_1080p.mp4", media / "portrait" / "d6.mp4", media / "portrait" / "d13.mp4",
            _upscaled_portrait(media / "portrait" / "d13.mp4", CACHE / "portrait_1080p.mp4")]


class Peer:
    """The DFDC winner's front end (see module docstring) with dfscan's detector."""

    def __init__(self, detector_name: str, device: str = "cpu", frames: int = 32):
        from facenet_pytorch import MTCNN

        from engines import create_detector

        self.mtcnn = MTCNN(margin=0, thresholds=[0.7, 0.8, 0.8], keep_all=True, device=device)
        self.det = create_detector(detector_name, device=device).eval()
        self.n = frames

    def frames(self, path: Path) -> list:
        """Every frame up to the last sampled one, as RGB arrays; then the samples."""
        import av
        import numpy as np

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            total = s.frames or sum(1 for _ in c.demux(s))
            want = np.linspace(0, total - 1, self.n).round().astype(int)
            kept = []
            for i, f in enumerate(c.decode(s)):
                kept.append(f.to_ndarray(format="rgb24"))
                if i >= want[-1]:
                    break
        return [kept[i] for i in want if i < len(kept)]

    def __call__(self, path: Path) -> dict:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image

        t = {}
        t0 = time.perf_counter()
        frames = self.frames(path)
        t["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        half = [Image.fromarray(f).resize((f.shape[1] // 2, f.shape[0] // 2)) for f in frames]
        boxes, _ = self.mtcnn.detect(half)
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
        t["total"] = sum(t.values())
        return {"path": str(path), "faces": len(crops), "frames": len(frames), "timings": t,
                "score": float(scores.mean()) if len(scores) else None}


def _in_loop(run_all, clips) -> tuple[float, dict]:
    t0 = time.perf_counter()
    per = {Path(r["path"]).name: r for r in run_all(clips)}
    return time.perf_counter() - t0, per


def _process(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _median_stages(rows: list[dict]) -> dict:
    keys = rows[0]["timings"].keys()
    return {k: round(statistics.median(r["timings"][k] for r in rows), 3) for k in keys}


def run(clips: list[Path], repeat: int, detector: str) -> dict:
    import torch

    from scanner.allocator import keep_freed_memory
    from scanner.config import ScanConfig
    from scanner.pipeline import build_context, scan_paths
    from scanner.pipeline_bench import decode_only_s, decode_ratios

    # As `dfscan scan` does; in one process the peer gains from it too (whole-process
    # runs below: only dfscan has it).
    keep_freed_memory()
    cfg = ScanConfig(detector=detector, details=False, progress=False)
    ctx = build_context(cfg)
    threads = torch.get_num_threads()
    peer = Peer(detector)
    runners = {"dfscan": lambda ps: scan_paths(ps, ctx=ctx), "peer": lambda ps: map(peer, ps)}
    # build_context lowered torch's threads for its workers; the sequential peer gets
    # every core, as it would on its own.
    set_threads = {"dfscan": threads, "peer": os.cpu_count()}
    for name, fn in runners.items():  # warm-up (thread pools, allocator, lazy inits)
        torch.set_num_threads(set_threads[name])
        list(fn([clips[1]]))
    walls = {k: [] for k in runners}
    rows = {k: {c.name: [] for c in clips} for k in runners}
    decode = {c.name: [] for c in clips}  # decode-only seconds, measured in every repetition
    for rep in range(repeat):
        for name in (("dfscan", "peer") if rep % 2 == 0 else ("peer", "dfscan")):
            torch.set_num_threads(set_threads[name])
            wall, per = _in_loop(runners[name], clips)
            walls[name].append(wall)
            for clip, r in per.items():
                rows[name][clip].append(r)
        torch.set_num_threads(threads)
        for c in clips:  # in the same minutes as the scans: the host's speed drifts (2.6 vs 3.8 s)
            decode[c.name].append(decode_only_s(c, cfg))
    torch.set_num_threads(threads)
    out = {"dfscan_workers": ctx.workers, "in_loop": {}}
    for name in runners:
        best = min(walls[name])
        out["in_loop"][name] = {
            "wall_s": [round(w, 3) for w in walls[name]], "videos_per_s": round(len(clips) / best, 3),
            "faces": {c: rows[name][c][0]["faces"] for c in rows[name]},
            "per_clip_median_s": {c: _median_stages(v) for c, v in rows[name].items()}}
    out["in_loop"]["ratio_videos_per_s"] = round(
        out["in_loop"]["dfscan"]["videos_per_s"] / out["in_loop"]["peer"]["videos_per_s"], 2)
    winner_s = sum(v["total"] for v in PEER_MEDIANS.values())
    out["in_loop"]["vs_winner_medians"] = {
        "winner_total_s": round(winner_s, 2), "dfscan_best_wall_s": round(min(walls["dfscan"]), 3),
        "ratio_videos_per_s": round(winner_s / min(walls["dfscan"]), 2),
        "note": "the winner's own code, one video at a time, per-clip medians from issue 14 (same machine, "
                "another day): the calibration target of the in-repo peer"}
    out["peer_calibration"] = {
        c: {"ours": out["in_loop"]["peer"]["per_clip_median_s"][c], "winner_code": PEER_MEDIANS[c],
            "total_ratio_ours_over_winner": round(
                out["in_loop"]["peer"]["per_clip_median_s"][c]["total"] / PEER_MEDIANS[c]["total"], 2)}
        for c in PEER_MEDIANS}
    last = [r[-1] for r in rows["dfscan"].values()]
    best_decode = {str(r["path"]): min(decode[Path(r["path"]).name]) for r in last}
    out["dfscan_decode"] = decode_ratios(last, cfg, decode_s=best_decode)
    out["dfscan_decode"]["all_clips"] = all_clips_ratio(out["dfscan_decode"], min(walls["dfscan"]))
    out["dfscan_decode"]["decode_only_runs_s"] = {k: [round(x, 4) for x in v] for k, v in decode.items()}
    out["dfscan_decode"]["note"] = ("decode_only_s: the frames a scan decodes, alone, one video at a time, "
                                    "the fastest of one run per repetition; pipeline_s: the video's time "
                                    "inside a scan with parallel workers")
    return out


def all_clips_ratio(per_clip: dict, best_wall: float) -> dict:
    """The whole in-loop scan against decoding every clip's sampled frames one after another
    (per-clip ratios compare a video sharing the cores with another worker against a solo decode)."""
    dec = sum(v["decode_only_s"] for v in per_clip.values() if isinstance(v, dict))
    return {"decode_only_s": round(dec, 3), "scan_wall_s": round(best_wall, 3),
            "scan_over_decode": round(best_wall / max(dec, 1e-9), 2)}


def whole_process(clips: list[Path], repeat: int, detector: str) -> dict:
    """Wall seconds of whole processes, alternating: ``dfscan scan`` vs the peer script."""
    with tempfile.TemporaryDirectory() as tmp:
        cmds = {"dfscan": [sys.executable, "-m", "scanner.cli", "scan", *map(str, clips), "--detector", detector,
                           "--out", str(Path(tmp) / "rows.jsonl"), "--no-progress", "--no-details"],
                "peer": [sys.executable, str(Path(__file__).resolve()), "--peer-process", *map(str, clips),
                         "--detector", detector]}
        walls = {k: [] for k in cmds}
        for rep in range(repeat):
            for name in (("dfscan", "peer") if rep % 2 == 0 else ("peer", "dfscan")):
                (Path(tmp) / "rows.jsonl").unlink(missing_ok=True)
                walls[name].append(round(_process(cmds[name]), 3))
    res = {k: {"wall_s": v, "videos_per_s": round(len(clips) / min(v), 3)} for k, v in walls.items()}
    res["ratio_videos_per_s"] = round(res["dfscan"]["videos_per_s"] / res["peer"]["videos_per_s"], 2)
    return res


def startup_note() -> dict:
    p = ROOT / "bench" / "results" / "startup_cpu.json"
    return json.loads(p.read_text()).get("summary", {}) if p.exists() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--detector", default="meso4_df")
    ap.add_argument("--shared", default=None, help="path of shared/ (default: beside the repo)")
    ap.add_argument("--out", default="bench/results/scan_cpu.json")
    ap.add_argument("--peer-process", nargs="+", metavar="VIDEO", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_process:  # one whole peer process: load, then every video in turn
        peer = Peer(args.detector)
        for p in args.peer_process:
            peer(Path(p))
        return
    sys.path.insert(0, str(ROOT))
    from engines.benchmark import machine_info

    clips = bench_clips(shared_dir(args.shared))
    load0 = os.getloadavg()
    res = {"machine": machine_info("cpu"), "clips": [c.name for c in clips], "detector": args.detector,
           "frames_per_video": 32, "repeat": args.repeat}
    res["whole_process"] = whole_process(clips, args.repeat, args.detector)
    res.update(run(clips, args.repeat, args.detector))
    res["load_avg_1m_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    res["note"] = ("2-core VM shared with other jobs (see load averages): absolute times vary run to run; "
                   "the ratios come from alternating runs in the same minutes")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(res, args.out)
    print(json.dumps({"in_loop_ratio": res["in_loop"]["ratio_videos_per_s"],
                      "whole_process_ratio": res["whole_process"]["ratio_videos_per_s"],
                      "load": res["load_avg_1m_before_after"]}, indent=2))


if __name__ == "__main__":
    main()
