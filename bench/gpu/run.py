"""Steps of ``bench/gpu/run.sh`` (CUDA): each a command with a time budget, all within one deadline.

Every step runs in its own process with a timeout cut to what is left of
``--budget`` seconds, so the whole run ends in time even when a step hangs; a
step that fails or times out is recorded and the next one runs. The summary
(``bench/results/gpu_run_cuda.json``) has the device details and, per step, the
command, exit status, seconds and the JSON file it wrote.

    python bench/gpu/run.py --plan      # print the steps (no GPU needed)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("DFSCAN_GPU_RESULTS") or ROOT / "bench" / "results")  # of the summary
sys.path.insert(0, str(ROOT))
from engines.files import write_json  # noqa: E402
PY = sys.executable
CLI = [PY, "-m", "scanner.cli"]
# Every detector that ships with weights (tests check this is `dfscan bench`'s default set);
# the F2F MesoNets share the DF graphs (same speed), so the other runs take one of each graph.
DETECTORS = ["meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f", "effnet_lite0_sbi",
             "effnet_lite0_adm"]
ARCHS = ["meso4_df", "mesoinception4_df", "effnet_lite0_sbi", "effnet_lite0_adm"]
# Engines that build in seconds, and those that compile (minutes at worst): separate steps,
# so a compile that overruns its budget costs only its own rows.
FAST = ["eager", "eager-cl", "onnxruntime"]
# (engines, detector) per compiled step, each with eager as the speed-up reference. Every
# engine of a step is built before any is timed, and a cold inductor/Triton compile takes
# tens of seconds per shape: one compiling engine per step, at batch 32 only. TensorRT and
# ONNX Runtime's TensorRT provider are refused at once where their packages are missing.
COMPILED = [(["eager", "compile-cg", "tensorrt", "ort-trt"], "meso4_df"),
            (["eager", "compile-cg", "tensorrt"], "effnet_lite0_sbi"),
            (["eager", "compile"], "effnet_lite0_sbi")]
BATCHES = ["1", "8", "32", "128"]


def _engines_step(name: str, budget: int, prec: str, dets: list[str], engines: list[str],
                  batches: list[str]) -> dict:
    return {"name": name, "budget": budget, "json": f"{name.replace('engines_', 'engines_cuda_')}.json",
            "cmd": [*CLI, "bench", "--device", "cuda", "--precision", prec, "--detectors", *dets,
                    "--engines", *engines, "--batch-sizes", *batches, "--iters", "30", "--warmup", "5",
                    "--allow-parity-failure", "--out", "bench/results",
                    "--name", name.replace("engines_", "engines_cuda_")]}


def steps(clips: list[str]) -> list[dict]:
    """(name, budget seconds, command, JSON written) of every step, most wanted first.

    ``dfscan bench`` writes its JSON after every timed batch size, so a step stopped by
    its time limit still leaves the rows it measured."""
    out = [{"name": "gpu_tests", "budget": 90, "json": None,
            # one module that cannot be imported there must not stop the others' GPU tests; -v
            # prints each result as it comes, so a step cut by its limit still shows them
            "cmd": [PY, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "gpu",
                    "--continue-on-collection-errors", "tests"]},
           {"name": "nvdec", "budget": 15, "json": "nvdec_cuda.json",
            "cmd": [PY, "bench/gpu/nvdec.py", "--out", "bench/results/nvdec_cuda.json", *clips]},
           _engines_step("engines_fp32_fast", 40, "fp32", DETECTORS, FAST, BATCHES),
           _engines_step("engines_fp16_fast", 25, "fp16", ARCHS, FAST, BATCHES),
           _engines_step("engines_bf16_fast", 20, "bf16", ARCHS, ["eager", "eager-cl"], BATCHES)]
    out.append({"name": "pipeline", "budget": 60, "json": "pipeline_cuda.json",
                "cmd": [*CLI, "bench", "--pipeline", *clips, "--device", "cuda", "--engines", "eager",
                        "--batch-sizes", "32", "--out", "bench/results", "--name", "pipeline_cuda"]})
    out.append({"name": "live_capacity", "budget": 70, "json": "live_capacity_cuda.json",
                "cmd": [PY, "bench/live_capacity.py", "--device", "cuda", "--counts", "4,8,16,32",
                        "--resolution", "1920x1080", "--pct", "99",
                        "--warmup", "4", "--seconds", "10", "--reconnect-cycles", "0",
                        "--out", "bench/results/live_capacity_cuda.json"]})
    out += [_engines_step(f"engines_fp32_{engines[1].replace('-', '')}_{det}", 40, "fp32", [det], engines, ["32"])
            for engines, det in COMPILED]
    return out


def device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", devices=torch.cuda.device_count())
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,mig.mode.current",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        info["nvidia_smi"] = q.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    for mod in ("onnxruntime", "tensorrt", "torch_tensorrt", "av", "kornia", "facenet_pytorch"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as such
            info[mod] = None
    return info


def bench_clips() -> list[str]:
    """The four clips of bench/scan_throughput.py (the 1080p portrait made on the spot); where
    ``../shared`` did not travel (the device copies the repository only), stand-ins made from
    the tree's own footage (:func:`tree_clips`)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from scan_throughput import bench_clips as clips

    shared = Path(os.environ.get("DFSCAN_SHARED") or ROOT.parent / "shared")
    if (shared / "media" / "crowd_1080p.mp4").is_file():
        return [str(c) for c in clips(shared)]
    return [str(c) for c in tree_clips()]


def tree_clips() -> list[Path]:
    """A 1080p group clip panned over tests/data/multiface.jpg, the two bundled sample
    clips, and d7 upscaled to 1080x1920 (the roles of crowd, d6/d13 and the 1080p portrait)."""
    from scan_throughput import CACHE, _upscaled_portrait

    CACHE.mkdir(exist_ok=True)
    samples = ROOT / "scanner" / "samples"
    return [_panned_group(ROOT / "tests" / "data" / "multiface.jpg", CACHE / "multiface_1080p.mp4"),
            samples / "d5.mp4", samples / "d7.mp4", _upscaled_portrait(samples / "d7.mp4", CACHE / "d7_1080p.mp4")]


def _panned_group(still: Path, dst: Path, seconds: float = 4.0, fps: int = 25) -> Path:
    """A 1920x1080 H.264 clip of a still, slowly zoomed and panned (so frames differ)."""
    import av
    import numpy as np
    from PIL import Image

    if dst.exists():
        return dst
    img = Image.open(still).convert("RGB")
    w, h = img.size
    n = int(seconds * fps)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "20"}
        for i in range(n):
            z = 1.0 - 0.15 * i / n  # crop shrinks to 85 %: a slow zoom, drifting right
            cw = min(w, h * 16 / 9) * z
            ch = cw * 9 / 16
            x0, y0 = (w - cw) * i / n, (h - ch) / 2
            crop = img.resize((1920, 1080), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
            for p in s.encode(av.VideoFrame.from_ndarray(np.asarray(crop), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def missing_modules() -> list[str]:
    """What dfscan needs here and cannot import (``pack.py`` packs it into ``.gpu/``)."""
    missing = []
    for mod in ("av", "kornia", "pydantic", "fastapi", "facenet_pytorch", "scanner.cli", "scanner.live.server"):
        try:
            __import__(mod)
        except Exception as e:  # noqa: BLE001 - any failure to import is reported
            missing.append(f"{mod} ({type(e).__name__}: {e})")
    return missing


def run_step(step: dict, left: float) -> dict:
    limit = max(1.0, min(step["budget"], left))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(step["cmd"], cwd=ROOT, timeout=limit, capture_output=True, text=True)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:  # what it printed so far (progress goes to stderr)
        out = "".join(s.decode(errors="replace") if isinstance(s, bytes) else (s or "") for s in (e.stdout, e.stderr))
        rc, tail = "timeout", out[-4000:]
    return {"name": step["name"], "cmd": " ".join(step["cmd"]), "limit_s": round(limit, 1), "rc": rc,
            "seconds": round(time.perf_counter() - t0, 1), "json": step["json"], "output_tail": tail}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all steps together")
    ap.add_argument("--plan", action="store_true", help="print the steps and exit")
    ap.add_argument("--only", nargs="*", default=None, help="run only steps whose name starts with these")
    args = ap.parse_args()
    if args.plan:  # the plan names the clips only
        clips = ["crowd_1080p.mp4", "d6.mp4", "d13.mp4", "portrait_1080p.mp4"]
        plan = [s for s in steps(clips) if not args.only or s["name"].startswith(tuple(args.only))]
        print(json.dumps([{k: s[k] for k in ("name", "budget", "cmd")} for s in plan], indent=1))
        return 0
    deadline = time.monotonic() + args.budget
    summary = {"device": device_info(), "budget_s": args.budget, "steps": []}
    missing = missing_modules()
    if missing:  # every step would fail the same way: say what to carry and stop
        summary["missing"] = missing
        write_json(summary, RESULTS / "gpu_run_cuda.json", indent=1)
        print("cannot import: " + "; ".join(missing) + "\nrun `python bench/gpu/pack.py` on the development "
              "machine and carry .gpu (see bench/gpu/pack.py)", flush=True)
        return 1
    summary["clips"] = clips = bench_clips()
    plan = [s for s in steps(clips) if not args.only or s["name"].startswith(tuple(args.only))]
    for step in plan:
        left = deadline - time.monotonic()
        res = run_step(step, left) if left >= 5 else {"name": step["name"], "rc": "skipped: time budget spent"}
        summary["steps"].append(res)
        print(f"{res['name']:32s} rc={res['rc']} {res.get('seconds', 0)}s", flush=True)
        write_json(summary, RESULTS / "gpu_run_cuda.json", indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
