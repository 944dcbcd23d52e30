"""Prometheus metrics of batch scans, all defined here.

Naming: ``dfscan_`` prefix, base units (seconds), ``_total`` counters, and no
file paths or ids as label values (label sets stay small and bounded).
A dedicated registry keeps scans embeddable and testable.
"""
from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

STAGES = ("decode", "detect", "align", "infer", "aggregate")
VERDICTS = ("real", "fake", "no_face", "error")

FRAMES_DECODED = Counter("dfscan_frames_decoded", "Sampled frames decoded", registry=REGISTRY)
FACES_DETECTED = Counter("dfscan_faces_detected", "Faces kept after detection", registry=REGISTRY)
CROPS_INFERRED = Counter("dfscan_crops_inferred", "Aligned face crops scored", registry=REGISTRY)
NONFINITE_SCORES = Counter("dfscan_nonfinite_scores", "Face crop scores dropped as NaN/inf",
                           registry=REGISTRY)
VIDEOS = Counter("dfscan_videos", "Videos finished, by verdict", ["verdict"], registry=REGISTRY)
ERRORS = Counter("dfscan_errors", "Inputs that failed, by kind", ["kind"], registry=REGISTRY)
SINK_ERRORS = Counter("dfscan_sink_errors", "Rows a sink failed to write", ["sink"], registry=REGISTRY)
STAGE_SECONDS = Histogram(
    "dfscan_stage_duration_seconds",
    "Time per video spent in each pipeline stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
VIDEO_SECONDS = Histogram(
    "dfscan_video_duration_seconds", "Wall time to scan one video",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY,
)
BUILD = Info("dfscan_build", "Versions of dfscan and its main libraries", registry=REGISTRY)

for _s in STAGES:  # expose zero series up front so dashboards see every stage
    STAGE_SECONDS.labels(stage=_s)
for _v in VERDICTS:
    VIDEOS.labels(verdict=_v)


def set_build_info(detector: str, engine: str, device: str) -> None:
    import av
    import torch

    from . import __version__

    BUILD.info({
        "version": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "av": av.__version__, "detector": detector, "engine": engine, "device": device,
    })


def serve(port: int, host: str = "127.0.0.1"):
    """Serve ``/metrics`` on ``host:port`` (loopback unless told otherwise).

    Returns the server (``.shutdown()`` to stop) and the bound port (useful with port 0).
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as e:  # busy port, bad address: a usage error, not a traceback
        from .config import ConfigError

        raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    return server, server.server_address[1]


def record_row(row: dict) -> None:
    """Count one finished video's row."""
    VIDEOS.labels(verdict=row["verdict"]).inc()
    if row["verdict"] == "error":
        ERRORS.labels(kind=(row.get("error") or {}).get("kind", "internal")).inc()
    for stage, secs in (row.get("timings") or {}).items():
        if stage in STAGES:
            STAGE_SECONDS.labels(stage=stage).observe(secs)
    if "total" in (row.get("timings") or {}):
        VIDEO_SECONDS.observe(row["timings"]["total"])
