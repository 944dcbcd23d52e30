"""Every Prometheus metric of dfscan, batch scans and the live service, defined here.

Naming: ``dfscan_`` prefix, base units (seconds), ``_total`` counters, and no
file paths or ids as label values (label sets stay small and bounded).
Batch scans use the module registry ``REGISTRY``; each live service gets its own
registry (:class:`LiveMetrics`), so scans and services stay embeddable and testable.
"""
from __future__ import annotations

import platform
import threading

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest,
                               start_http_server)

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
# Sink counters carry the same names in the batch registry and each live one.
SINK_EVENTS = Counter("dfscan_sink_events", "Rows or events a sink delivered", ["sink"], registry=REGISTRY)
SINK_FAILURES = Counter("dfscan_sink_failures", "Rows or events a sink failed to deliver", ["sink"],
                        registry=REGISTRY)
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
# How the scan ended, pushed with its last values: a scan that failed to start (weights
# missing) pushed only zero counters, which read as a clean scan and cleared the error alerts.
SCAN_STATES = ("running", "complete", "failed", "interrupted")
SCAN_STATE = Gauge("dfscan_scan_state", "1 for the scan's state: running, complete (every input has its "
                   "row), failed (ended by an error, or an output lost rows), interrupted (a signal)",
                   ["state"], registry=REGISTRY)
# Pushed with every push (--metrics-push): a scan killed outright (out of memory, SIGKILL, node
# lost) never pushes its end, so the gateway keeps "running" for good; the alert rules tell it
# from a live one by push_time_seconds falling behind this interval.
PUSH_INTERVAL = Gauge("dfscan_scan_push_interval_seconds", "Seconds between this scan's periodic "
                      "metric pushes (0: pushed only at its end)", registry=REGISTRY)

for _s in STAGES:  # expose zero series up front so dashboards see every stage
    STAGE_SECONDS.labels(stage=_s)
for _v in VERDICTS:
    VIDEOS.labels(verdict=_v)


def set_scan_state(state: str) -> None:
    for s in SCAN_STATES:
        SCAN_STATE.labels(state=s).set(1.0 if s == state else 0.0)


def set_build_info(detector: str, engine: str, device: str, info: Info = BUILD) -> None:
    """Fill ``dfscan_build_info`` (the batch registry's, or a live service's ``info``)."""
    import av
    import torch

    from . import __version__

    info.info({
        "version": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "av": av.__version__, "detector": detector, "engine": engine, "device": device,
    })


def serve(port: int, host: str = "127.0.0.1"):
    """Serve ``/metrics`` on ``host:port`` (loopback unless told otherwise).

    Returns the server (``.shutdown()`` then ``.server_close()`` to stop and free the port) and
    the bound port (useful with port 0).
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as e:  # busy port, bad address: a usage error, not a traceback
        from .config import ConfigError

        raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    return server, server.server_address[1]


# Counted by the pipeline while it scans (frames decoded before a video failed count too),
# not read back from rows. A Ray actor's registry is not scraped: it ships what one video
# added (counts_since) and the driver adds that to its own (add_counts), so both scans
# count the same wherever these counters are incremented.
PIPELINE_COUNTERS = {c.describe()[0].name: c
                     for c in (FRAMES_DECODED, FACES_DETECTED, CROPS_INFERRED, NONFINITE_SCORES)}


def pipeline_counts() -> dict[str, float]:
    """Current totals of :data:`PIPELINE_COUNTERS`, by metric name."""
    return {name: next(s.value for s in c.collect()[0].samples if s.name.endswith("_total"))
            for name, c in PIPELINE_COUNTERS.items()}


def counts_since(before: dict[str, float]) -> dict[str, float]:
    """What :data:`PIPELINE_COUNTERS` gained since ``before`` (a :func:`pipeline_counts`)."""
    return {name: v - before.get(name, 0.0) for name, v in pipeline_counts().items()}


def add_counts(delta: dict[str, float]) -> None:
    """Add a :func:`counts_since` (from another process) to this registry's counters."""
    for name, v in delta.items():
        if v > 0 and name in PIPELINE_COUNTERS:
            PIPELINE_COUNTERS[name].inc(v)


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


# -- live service (dfscan serve / watch) ---------------------------------------------------
# Each service owns its own CollectorRegistry, so tests and embedded services never collide
# with the batch scanner's series above. Per-stream series carry a ``stream`` label whose
# value is always a *configured stream name* (validated, never a URL) and are removed with
# the stream, so label cardinality is bounded by the config.

STATES = ("connecting", "live", "stalled", "backoff", "stopped")
TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")  # RTSP lower transports (bounded label values)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class StreamMetrics:
    """The per-stream children of :class:`LiveMetrics` (labels already bound)."""

    def __init__(self, m: "LiveMetrics", name: str):
        self.name = name
        self._m = m
        self.decoded = m.decoded.labels(name)
        self.sampled = m.sampled.labels(name)
        self.corrupt = m.corrupt.labels(name)
        self.dropped = m.dropped.labels(name)
        self.reconnects = m.reconnects.labels(name)
        self.errors = m.errors.labels(name)
        self.faces = m.faces.labels(name)
        self.nonfinite = m.nonfinite.labels(name)
        self.alerts = m.alerts.labels(name)
        self.score = m.score.labels(name)
        self.fake = m.fake.labels(name)
        self.heartbeat_age = m.heartbeat_age.labels(name)
        self.latency = m.latency.labels(name)

    closed = False  # set when the stream is removed: late calls must not re-create its series

    # Checked and set under the registry's lock, as remove_stream closes: checked outside it, a
    # watchdog marking the stream stalled while it was removed re-created its state series after
    # the removal (a removed stream "stalled" for good, its down alert firing forever).
    def set_state(self, state: str) -> None:
        with self._m._lock:
            if self.closed:
                return
            for s in STATES:
                self._m.state.labels(self.name, s).set(1.0 if s == state else 0.0)

    def set_transport(self, transport: str | None) -> None:
        """1 for the RTSP transport in use (what ``auto`` negotiated), 0 for the others."""
        with self._m._lock:
            if self.closed or transport not in TRANSPORTS:
                return
            for t in TRANSPORTS:
                self._m.transport.labels(self.name, t).set(1.0 if t == transport else 0.0)


class LiveMetrics:
    """All live metrics, registered on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        s = ["stream"]
        self.state = Gauge("dfscan_stream_state", "1 for the stream's current state, else 0", s + ["state"], registry=r)
        self.decoded = Counter("dfscan_stream_frames_decoded_total", "Frames decoded", s, registry=r)
        self.sampled = Counter("dfscan_stream_frames_sampled_total", "Frames sampled for analysis", s, registry=r)
        self.corrupt = Counter("dfscan_stream_frames_corrupt_total",
                               "Decoded frames the decoder flagged corrupt (concealed), never sampled", s, registry=r)
        self.dropped = Counter(
            "dfscan_stream_frames_dropped_total", "Sampled frames dropped (buffer full, oldest first)", s, registry=r
        )
        self.reconnects = Counter("dfscan_stream_reconnects_total", "Reconnect attempts after EOF/error/stall", s, registry=r)
        self.errors = Counter("dfscan_stream_errors_total", "Open/read/decode errors and frames whose analysis failed",
                              s, registry=r)
        self.faces = Counter("dfscan_stream_faces_total", "Face crops scored", s, registry=r)
        self.nonfinite = Counter("dfscan_stream_nonfinite_scores_total",
                                 "Face crops the detector scored NaN/inf (left out of the verdicts)", s, registry=r)
        self.alerts = Counter("dfscan_stream_alerts_total", "Verdict changes to fake", s, registry=r)
        self.score = Gauge("dfscan_stream_score_ratio", "Rolling P(fake) of the stream (0..1)", s, registry=r)
        self.fake = Gauge("dfscan_stream_fake", "1 while the stream verdict is fake", s, registry=r)
        self.heartbeat_age = Gauge("dfscan_stream_heartbeat_age_seconds", "Seconds since the last decoded frame", s, registry=r)
        self.latency = Histogram(
            "dfscan_stream_frame_to_verdict_seconds", "Decode-to-verdict latency of sampled frames", s,
            buckets=LATENCY_BUCKETS, registry=r,
        )
        d = ["device"]
        self.batch_frames = Histogram(
            "dfscan_stream_batch_frames", "Frames per inference batch", d,
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=r,
        )
        self.batch_seconds = Histogram(
            "dfscan_stream_batch_seconds", "Wall time of one inference batch (faces + detector)", d, registry=r
        )
        k = ["sink"]
        self.sink_events = Counter("dfscan_sink_events", "Rows or events a sink delivered", k, registry=r)
        self.sink_failures = Counter("dfscan_sink_failures", "Rows or events a sink failed to deliver", k, registry=r)
        self.sink_dropped = Counter("dfscan_sink_dropped", "Events dropped, sink queue full", k, registry=r)
        self.transport = Gauge("dfscan_stream_transport_info", "1 for the RTSP lower transport in use, else 0",
                               s + ["transport"], registry=r)
        self.streams = Gauge("dfscan_stream_configured", "Number of configured streams", registry=r)
        self.build = Info("dfscan_build", "Versions of dfscan and its main libraries", registry=r)
        self._children: dict[str, StreamMetrics] = {}
        self._lock = threading.RLock()  # stream() sets the first state under it

    def stream(self, name: str) -> StreamMetrics:
        with self._lock:
            if name not in self._children:
                self._children[name] = StreamMetrics(self, name)
                self._children[name].set_state("connecting")
                self.streams.set(len(self._children))
            return self._children[name]

    def remove_stream(self, name: str) -> None:
        """Drop every series of ``name`` so removed streams stop being exported."""
        with self._lock:
            child = self._children.pop(name, None)
            if child is None:
                return
            child.closed = True
            self._remove_series(name)
            self.streams.set(len(self._children))

    def _remove_series(self, name: str) -> None:
        for metric in (self.decoded, self.sampled, self.corrupt, self.dropped, self.reconnects, self.errors, self.faces,
                       self.nonfinite, self.alerts, self.score, self.fake, self.heartbeat_age, self.latency):
            try:
                metric.remove(name)
            except KeyError:
                pass
        for s in STATES:
            try:
                self.state.remove(name, s)
            except KeyError:
                pass
        for t in TRANSPORTS:
            try:
                self.transport.remove(name, t)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
