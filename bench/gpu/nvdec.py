"""NVDEC through PyAV's hardware acceleration: supported? as fast? the same frames?

For each clip: decode every frame on the CPU and with ``HWAccel("cuda")`` (no
software fallback), time both, and compare the RGB frames (H.264 decoding is
bit-exact, so the frames must be identical; the largest difference is reported).
When the FFmpeg inside PyAV has no CUDA device type, or opening it fails, the
JSON says why and dfscan keeps decoding on the CPU (the frames it scans are the
same either way).

    python bench/gpu/nvdec.py --out bench/results/nvdec_cuda.json CLIP...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import av
import numpy as np


def _decode(path: str, hwaccel=None, keep: int = 8) -> tuple[float, int, list[np.ndarray]]:
    t0, n, frames = time.perf_counter(), 0, []
    with av.open(path, hwaccel=hwaccel) if hwaccel is not None else av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            if n < keep:
                # Compared as decoded (YUV 4:2:0 planes): NVDEC's NV12 splits into them
                # losslessly, while NV12 and yuv420p reach RGB by different swscale paths.
                frames.append(f.to_ndarray(format="yuv420p"))
            n += 1
    return time.perf_counter() - t0, n, frames


def clip_report(path: str, hw) -> dict:
    cpu_s, n, ref = _decode(path)
    out = {"frames": n, "cpu_decode_s": round(cpu_s, 3)}
    try:
        gpu_s, m, got = _decode(path, hw)
        diff = max((int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(ref, got)), default=None)
    except Exception as e:  # noqa: BLE001 - the reason is the result
        return {**out, "nvdec": f"failed: {type(e).__name__}: {e}"}
    return {**out, "nvdec_decode_s": round(gpu_s, 3), "nvdec_frames": m,
            "compared_frames": min(len(ref), len(got)), "max_abs_diff": diff,
            "identical": m == n and diff == 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--out", default="bench/results/nvdec_cuda.json")
    args = ap.parse_args()
    from av.codec.hwaccel import HWAccel, hwdevices_available

    avail = list(hwdevices_available())
    res = {"pyav": av.__version__, "ffmpeg": av.library_versions.get("libavcodec"), "hw_devices": avail}
    if "cuda" not in avail:
        res["nvdec"] = "unsupported: the FFmpeg inside PyAV has no cuda device type; CPU decoding is used"
    else:
        hw = HWAccel(device_type="cuda", allow_software_fallback=False)
        res["clips"] = {Path(c).name: clip_report(c, hw) for c in args.clips}
        ok = [c.get("identical") for c in res["clips"].values()]
        res["nvdec"] = "works, identical frames" if all(ok) else "see clips (failed or frames differ)"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
