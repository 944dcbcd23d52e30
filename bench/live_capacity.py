"""How many concurrent live streams this machine sustains, per protocol.

Each stream is a real H.264 25 fps stream of a face clip (``--clip``, default the
bundled ``scanner/samples/d5.mp4``, re-encoded to ``--resolution``, default
1280x720, and looped),
served on loopback over ``--protocol``:

* ``http``: MPEG-TS over HTTP by :class:`scanner.live.publish.HttpTsPublisher`;
* ``rtsp``: VLC (``cvlc``) serving RTSP, RTP over UDP (reached through the
  default ``rtsp_transport: auto``, which VLC's 461 to TCP sends to UDP).

The live service decodes every stream and samples it at ``--sample-fps``
(default 2). For each N of ``--counts`` (default 1, 2, ..., ``--max-streams``)
it runs ``--warmup`` s, then records every analysed frame's decode-to-verdict
latency for ``--seconds`` s. N is *sustained* when the ``--pct`` (95th)
percentile latency < ``--p95-max`` (1 s), no sampled frame was dropped, and the analysed rate is >= 90 % of
N x sample_fps; the search stops at the first N that is not. Then the server is
killed and restarted ``--reconnect-cycles`` times and hung once (timed).

    python bench/live_capacity.py --out bench/results/live_capacity_cpu.json
    nice python bench/live_capacity.py --protocol http,rtsp --counts 1,2,4,6,8 \
        --out bench/results/live_capacity_protocols.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from engines.files import write_json
from scanner.config import DEFAULT_DETECTOR
from scanner.live.config import parse_config
from scanner.live.publish import HttpTsPublisher, transcode_clip, vlc_rtsp
from scanner.live.service import LiveService

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "scanner" / "samples" / "d5.mp4"  # bundled real face clip
PROTOCOLS = {"http": "MPEG-TS over loopback HTTP (scanner.live.publish.HttpTsPublisher)",
             "rtsp": "RTSP from VLC (cvlc, as nobody), RTP over UDP via rtsp_transport auto"}


class HttpServer:
    """The in-process HTTP MPEG-TS publisher; hang = keep sockets open, send nothing."""

    def __init__(self, clip: str, workdir: Path, size: tuple[int, int] = (1280, 720)):
        self.ts = transcode_clip(clip, *size, fps=25, seconds=4.0)
        self.pub = HttpTsPublisher(self.ts)
        self.url = None

    def start(self):
        self.pub.start()
        self.url = self.pub.url
        return self

    def stop(self):
        self.pub.stop()

    def hang(self, on: bool):
        (self.pub.paused.set if on else self.pub.paused.clear)()


class RtspServer:
    """VLC serving the clip over RTSP; hang = SIGSTOP the server (a frozen camera)."""

    def __init__(self, clip: str, workdir: Path, size: tuple[int, int] = (1280, 720)):
        if shutil.which("cvlc") is None:
            raise SystemExit("--protocol rtsp needs VLC (Debian: vlc-bin vlc-plugin-base)")
        mp4 = workdir / "clip.mp4"
        mp4.write_bytes(transcode_clip(clip, *size, fps=25, seconds=4.0, fmt="mp4"))
        mp4.chmod(0o644)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = vlc_rtsp(mp4, port, workdir / "vlc.log")
        self.url = f"rtsp://127.0.0.1:{port}/live"

    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop()

    def hang(self, on: bool):
        os.killpg(self.server.proc.pid, signal.SIGSTOP if on else signal.SIGCONT)


SERVERS = {"http": HttpServer, "rtsp": RtspServer}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--resolution {text!r}: expected WxH, e.g. 1920x1080") from None
    return w, h


class TimedService(LiveService):
    """LiveService that also records every frame's frame-to-verdict latency."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lat: list[float] = []
        self.recording = False
        self._lat_lock = threading.Lock()

    def _on_result(self, frame, r):
        super()._on_result(frame, r)
        if self.recording:
            with self._lat_lock:
                self.lat.append(time.monotonic() - frame.t_capture)


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "loadavg_1m_at_start": os.getloadavg()[0],
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_n(n: int, url: str, a) -> dict:
    cfg = parse_config({
        "api": {"enabled": False},
        "model": {"detector": a.detector, "engine": a.engine, "devices": [a.device], "batch_frames": a.batch_frames,
                  "max_wait_ms": a.max_wait_ms},
        "defaults": {"sample_fps": a.sample_fps, "buffer_frames": 4},
        "streams": [{"name": f"s{i}", "url": url} for i in range(n)],
    })
    svc = TimedService(cfg).start()
    try:
        time.sleep(a.warmup)
        before = {d["name"]: d for d in svc.describe()}
        batches0, frames0 = sum(w.batches for w in svc.workers), sum(w.frames for w in svc.workers)
        cpu0 = time.process_time()
        svc.recording = True
        time.sleep(a.seconds)
        svc.recording = False
        cpu = time.process_time() - cpu0
        after = {d["name"]: d for d in svc.describe()}
        batches = sum(w.batches for w in svc.workers) - batches0
        frames = sum(w.frames for w in svc.workers) - frames0
    finally:
        svc.stop()
    lat = np.array(svc.lat) if svc.lat else np.array([np.inf])
    dropped = sum(after[k]["frames_dropped"] - before[k]["frames_dropped"] for k in after)
    sampled = sum(after[k]["frames_sampled"] - before[k]["frames_sampled"] for k in after)
    rate = len(svc.lat) / a.seconds
    res = {
        "streams": n, "analysed_fps": round(rate, 2), "target_fps": n * a.sample_fps,
        "sampled": sampled, "dropped": dropped, "analysed": len(svc.lat),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
        "latency_p99_s": round(float(np.percentile(lat, 99)), 3),
        "latency_max_s": round(float(lat.max()), 3),
        "batches": batches, "mean_batch_frames": round(frames / batches, 2) if batches else 0,
        "process_cpu_s_per_s": round(cpu / a.seconds, 2),
        "decode_fps_per_stream": round(np.mean([after[k]["fps"] for k in after]), 1),
        "faces_last_frame": [after[k]["faces"] for k in sorted(after)],
        "states": sorted({after[k]["state"] for k in after}),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    res["sustained"] = bool(float(np.percentile(lat, a.pct)) < a.p95_max and dropped == 0
                            and rate >= 0.9 * n * a.sample_fps)
    return res


def _threads_rss() -> tuple[int, float]:
    rss = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return len(os.listdir("/proc/self/task")), rss


def _wait(pred, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def measure_reconnects(server, a, cycles: int) -> dict:
    """Kill/restart ``server`` ``cycles`` times (default backoff settings); time each phase."""
    cfg = parse_config({"api": {"enabled": False},
                        "model": {"detector": a.detector, "engine": a.engine, "devices": [a.device]},
                        "defaults": {"sample_fps": a.sample_fps},
                        "streams": [{"name": "r", "url": server.url}]})
    svc = LiveService(cfg).start()
    src = svc._streams["r"].source
    rows = []
    try:
        _wait(lambda: src.state == "live", 30)
        time.sleep(2)
        start = _threads_rss()
        for _ in range(cycles):
            connects = src.stats.connects
            t0 = time.monotonic()
            server.stop()
            t_drop = _wait(lambda: src.state in ("stalled", "backoff", "connecting"), 30)
            t_drop = t_drop is not None and time.monotonic() - t0
            time.sleep(1.0)  # server down for 1 s
            t1 = time.monotonic()
            server.start()
            t_back = _wait(lambda: src.state == "live" and src.stats.connects > connects, 60)
            t_back = t_back is not None and time.monotonic() - t1
            rows.append({"down_to_not_live_s": t_drop and round(t_drop, 3),
                         "restart_to_live_s": t_back and round(t_back, 3)})
            time.sleep(2)
        end = _threads_rss()
        server.hang(True)  # a hung server: connection open, no data
        t_stall = _wait(lambda: src.state != "live", 30)  # stalled (watchdog) or backoff (FFmpeg's timeout)
        server.hang(False)
        t_live = _wait(lambda: src.state == "live", 60)
    finally:
        svc.stop()
    return {"cycles": rows, "threads_before_after": [start[0], end[0]],
            "rss_mb_before_after": [round(start[1], 1), round(end[1], 1)],
            "hung_server_to_not_live_s": t_stall and round(t_stall, 2),
            "stalled_to_live_after_resume_s": t_live and round(t_live, 2),
            "rtsp_transport": src.transport,
            "settings": cfg.defaults.model_dump(include={"stall_s", "backoff_initial_s", "backoff_max_s",
                                                         "backoff_jitter", "open_timeout_s"})}


def run_protocol(protocol: str, a, workdir: Path, on_update=lambda res: None) -> dict:
    """Capacity search, then the reconnect drill, over one protocol; ``on_update`` gets the
    result so far after every stream count (a run stopped by a time limit keeps those)."""
    server = SERVERS[protocol](a.clip, workdir, a.size).start()
    res = {"transport": PROTOCOLS[protocol], "max_sustained_streams": 0, "runs": [], "reconnect": None}
    try:
        for n in a.counts:
            r = run_n(n, server.url, a)
            res["runs"].append(r)
            ok = [x["streams"] for x in res["runs"] if x["sustained"]]
            res["max_sustained_streams"] = max(ok) if ok else 0
            on_update(res)
            print(json.dumps({"protocol": protocol, **r}), flush=True)
            if not r["sustained"]:
                break
        res["reconnect"] = measure_reconnects(server, a, a.reconnect_cycles) if a.reconnect_cycles else None
    finally:
        server.stop()
    if res["reconnect"]:
        print(json.dumps({"protocol": protocol, "reconnect": res["reconnect"]}), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="http", help=f"comma list of {', '.join(PROTOCOLS)}")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clip", default=str(CLIP), help="face clip (default: the bundled scanner/samples/d5.mp4)")
    ap.add_argument("--sample-fps", type=float, default=2.0)
    ap.add_argument("--batch-frames", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=50.0)
    ap.add_argument("--warmup", type=float, default=6.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--p95-max", type=float, default=1.0, help="seconds the --pct latency percentile must stay under")
    ap.add_argument("--pct", type=float, default=95.0, help="latency percentile that decides (95; 99 on GPUs)")
    ap.add_argument("--resolution", default="1280x720", help="WxH of every stream")
    ap.add_argument("--max-streams", type=int, default=16)
    ap.add_argument("--counts", default=None, help="stream counts to try, e.g. 1,2,4,8 (default 1..max-streams)")
    ap.add_argument("--reconnect-cycles", type=int, default=5, help="0 skips the reconnect measurement")
    ap.add_argument("--note", default=None, help="free text stored in the JSON (e.g. machine load)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    protocols = [p.strip() for p in a.protocol.split(",") if p.strip()]
    if not protocols or set(protocols) - set(PROTOCOLS):
        ap.error(f"--protocol must be a comma list of {', '.join(PROTOCOLS)}")
    if not Path(a.clip).is_file():
        ap.error(f"clip not found: {a.clip}")
    a.counts = ([int(x) for x in a.counts.split(",")] if a.counts else list(range(1, a.max_streams + 1)))
    a.size = _size(a.resolution)

    out = _header(a)
    save = (lambda: write_json(out, a.out)) if a.out else (lambda: None)
    workdir = Path(tempfile.mkdtemp(prefix="dfscan-bench-"))
    workdir.chmod(0o777)  # VLC runs as nobody when we are root
    try:
        for p in protocols:
            out["protocols"][p] = run_protocol(p, a, workdir, lambda r, p=p: (out["protocols"].update({p: r}), save()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    out["max_sustained_streams"] = {p: r["max_sustained_streams"] for p, r in out["protocols"].items()}
    out["complete"] = True
    print(json.dumps({"max_sustained_streams": out["max_sustained_streams"]}))
    save()
    return 0


def _header(a) -> dict:
    """The result before any run (``complete`` False until every protocol finished)."""
    return {
        "benchmark": "live_capacity", "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "note": a.note,
        "setup": {"resolution": a.resolution, "source_fps": 25, "codec": "h264 (libx264 ultrafast, gop 25)",
                  "clip": Path(a.clip).name, "detector": a.detector, "engine": a.engine, "device": a.device,
                  "sample_fps": a.sample_fps, "batch_frames": a.batch_frames, "max_wait_ms": a.max_wait_ms,
                  "faces_max_side": 960, "warmup_s": a.warmup, "measure_s": a.seconds, "p95_max_s": a.p95_max,
                  "counts": a.counts, "server_runs_on": "the same machine (its CPU use counts against capacity)",
                  "latency": "decoder output -> rolling verdict updated (monotonic clock)",
                  "latency_pct": a.pct,
                  "sustained_if": "latency at latency_pct < p95_max and no dropped frames and analysed >= 90% of target"},
        "max_sustained_streams": {}, "protocols": {}, "complete": False,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }


if __name__ == "__main__":
    sys.exit(main())
