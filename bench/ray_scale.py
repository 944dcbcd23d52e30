"""Ray scan throughput with 1 and 2 nodes on this machine (``dfscan scan --ray``).

Starts a real Ray cluster on loopback (``ray start --head`` with ``--num-cpus``
CPUs), scans the repository's real clips (repeated to ``--videos`` inputs) with
one actor per CPU, then joins a second node (``ray start --address``) and scans
again. Reported: videos/s over the timed scan (actors already built and warmed
up on two videos, median of alternating rounds), actor start-up time, and a
local ``scan_paths`` baseline (this process, one video per core).
Both "nodes" share this machine's cores, so 2 nodes x 1 CPU is the scaling of
going from one core to two, not of two machines.

    nice python bench/ray_scale.py --out bench/results/ray_scale_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engines.files import write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

CLIPS = [ROOT / "tests/data/d1.mp4", ROOT / "tests/data/d2.mp4", ROOT / "tests/data/d18.mp4",
         ROOT / "scanner/samples/d5.mp4", ROOT / "scanner/samples/d7.mp4"]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str) -> None:
    subprocess.run([RAY, *args], check=True, capture_output=True, timeout=300)


def _node_args(cpus: int, tmp: str) -> list[str]:
    return ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--object-store-memory=200000000",
            "--disable-usage-stats", f"--temp-dir={tmp}"]


def _timed_scan(address: str, inputs: list[str], cfg_kw: dict) -> dict:
    from scanner.config import ScanConfig
    from scanner.distributed import RayScanContext

    t0 = time.perf_counter()
    ctx = RayScanContext(ScanConfig(ray=address, **cfg_kw))
    ready = time.perf_counter() - t0
    try:
        list(ctx.rows(inputs[: 2 * ctx.workers]))  # warm-up: every actor scans once
        t1 = time.perf_counter()
        rows = list(ctx.rows(inputs))
        wall = time.perf_counter() - t1
    finally:
        ctx.close()
    assert len(rows) == len(inputs) and all(r["verdict"] != "error" for r in rows)
    return {"actors": ctx.workers, "nodes": ctx.engine_info["nodes"], "videos": len(rows),
            "wall_s": round(wall, 2), "videos_per_s": round(len(rows) / wall, 3),
            "actor_startup_s": round(ready, 1), "faces": sum(r["faces"] for r in rows)}


def _local(inputs: list[str], cfg_kw: dict) -> dict:
    from scanner.config import ScanConfig
    from scanner.pipeline import build_context, scan_paths

    ctx = build_context(ScanConfig(**cfg_kw))
    list(scan_paths(inputs[:2], ctx=ctx))
    t0 = time.perf_counter()
    rows = list(scan_paths(inputs, ctx=ctx))
    wall = time.perf_counter() - t0
    return {"workers": ctx.workers, "videos": len(rows), "wall_s": round(wall, 2),
            "videos_per_s": round(len(rows) / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating 1-/2-node measurements")
    ap.add_argument("--out", default=str(ROOT / "bench/results/ray_scale_cpu.json"))
    args = ap.parse_args()
    try:
        import ray
    except ImportError:
        raise SystemExit("bench/ray_scale.py needs Ray: pip install 'ray>=2.9'") from None

    inputs = [str(CLIPS[i % len(CLIPS)]) for i in range(args.videos)]
    cfg_kw = {"frames": args.frames, "details": False}
    load_before = os.getloadavg()
    port, dirs = _free_port(), [tempfile.mkdtemp(prefix="dfb"), tempfile.mkdtemp(prefix="dfb")]
    runs: dict[str, list[dict]] = {"1_node": [], "2_nodes": []}
    try:
        _ray("start", "--head", f"--port={port}", "--include-dashboard=false",
             *_node_args(args.cpus_per_node, dirs[0]))
        _ray("start", f"--address=127.0.0.1:{port}", *_node_args(args.cpus_per_node, dirs[1]))
        # Alternate the settings so the machine's changing load (shared VM) hits both alike.
        # "1 node" = actors of one node's CPUs (they are placed on one node: each node has
        # exactly cpus_per_node CPUs); "2 nodes" = actors on both.
        for _ in range(args.rounds):
            for key, actors in (("1_node", args.cpus_per_node), ("2_nodes", 2 * args.cpus_per_node)):
                r = _timed_scan(f"127.0.0.1:{port}", inputs, dict(cfg_kw, ray_actors=actors))
                runs[key].append(r)
                print(key, r, flush=True)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    results = {k: {"median_videos_per_s": round(statistics.median(r["videos_per_s"] for r in v), 3),
                   "nodes": v[0]["nodes"], "actors": v[0]["actors"], "runs": v} for k, v in runs.items()}
    results["local_scan_paths"] = _local(inputs, cfg_kw)
    print("local:", results["local_scan_paths"], flush=True)
    results["speedup_2_vs_1_node"] = round(results["2_nodes"]["median_videos_per_s"]
                                           / results["1_node"]["median_videos_per_s"], 2)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    out = {
        "benchmark": "bench/ray_scale.py", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "nice python bench/ray_scale.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                    "ray": ray.__version__, "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "note": "shared 2-core VM, other jobs running (see loadavg); both Ray nodes on "
                            "this machine, one CPU each: 2 nodes = two cores, not two machines"},
        "setup": {"clips": [str(c.relative_to(ROOT)) for c in CLIPS], "videos": args.videos,
                  "cpus_per_node": args.cpus_per_node, "actor_cpus": 1, "detector": "meso4_df",
                  "engine": "auto", **cfg_kw},
        "results": results,
    }
    write_json(out, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
