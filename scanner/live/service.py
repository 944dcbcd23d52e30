"""The live service: sources + per-device inference workers + rolling verdicts + sinks.

Threads (all daemon, all named ``dfscan-*``): one decode thread per stream, one
inference worker per device, one watchdog (stall detection, periodic verdict
events), one per sink, plus the HTTP API's request threads. Reconnects reuse the
stream's thread, so the count only changes when streams are added or removed.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from typing import Callable

import numpy as np

from engines.errors import DfscanError

from .batcher import FrameAnalyzer, FrameResult, InferenceWorker
from .config import ConfigError, ServeConfig, SinkConfig, StreamConfig
from .metrics import LiveMetrics, set_build_info
from .rolling import StreamVerdicts, VerdictSettings
from .sinks import JsonlSink, Sink, SinkSet, StdoutSink, WebhookSink
from .source import LiveFrame, LiveSource, SourceSettings
from .throttle import LogThrottle
from .watchdog import Watchdog
from .urls import parse_source

log = logging.getLogger(__name__)

AnalyzerFactory = Callable[[str], Callable]


class StreamExists(DfscanError):
    """A stream with that name is already configured."""


class StreamLimit(DfscanError):
    """``max_streams`` streams are already configured."""


class StreamNotFound(DfscanError):
    """No stream with that name."""


class StreamNotStarted(DfscanError):
    """The stream's decode thread could not be started (the process's thread limit)."""


def build_sink(c: SinkConfig, metrics: LiveMetrics) -> Sink:
    kw = dict(name=c.name or c.type, queue_size=c.queue_size, metrics=metrics,
              only_alerts=c.only_alerts if c.only_alerts is not None else c.type == "webhook")
    if c.type == "jsonl":
        return JsonlSink(c.path, **kw)
    if c.type == "stdout":
        return StdoutSink(**kw)
    return WebhookSink(c.url, timeout_s=c.timeout_s, retries=c.retries, backoff_s=c.backoff_s,
                       headers=_webhook_headers(c), **kw)


def _webhook_headers(c: SinkConfig) -> dict[str, str]:
    """The ``headers_env`` headers' values, stripped as the API token is: a Kubernetes Secret made
    ``--from-file`` ends in a newline, which failed every POST with the secret quoted in the log.
    One unset (or empty) went out as an empty header: every alert refused, "HTTP 401" the only hint."""
    values = {h: os.environ.get(env, "").strip() for h, env in c.headers_env.items()}
    unset = [f"{h} (${c.headers_env[h]})" for h, v in values.items() if not v]
    if unset:
        raise ConfigError(f"sink {c.name or c.type!r}: headers_env {', '.join(unset)}: not set or empty, "
                          "so the header would go out empty")
    return values


def _backend_of(analyzer, configured: str) -> str:
    """The engine an analyzer runs (its ``describe()``'s backend), else the configured name."""
    describe = getattr(getattr(analyzer, "engine", None), "describe", None)
    return str(describe().get("backend", configured)) if callable(describe) else configured


class _Stream:
    def __init__(self, cfg: StreamConfig, source: LiveSource, verdicts: StreamVerdicts, worker: InferenceWorker):
        self.cfg, self.source, self.verdicts, self.worker = cfg, source, verdicts, worker
        self.lock = threading.Lock()  # verdict state is touched by the worker and the watchdog
        # Frames captured before this are a removed namesake's, still in an inference batch.
        self.added = time.monotonic()
        self.closed = False  # its verdicts ended (removed, shutdown): a late result must not revive them


class LiveService:
    """Runs the streams of a :class:`ServeConfig`; streams can be added/removed at run time."""

    def __init__(self, cfg: ServeConfig, analyzer_factory: AnalyzerFactory | None = None,
                 extra_sinks: list[Sink] | None = None):
        self.cfg = cfg
        self.metrics = LiveMetrics()
        self._factory = analyzer_factory or self._default_analyzer
        self.sinks = SinkSet([build_sink(c, self.metrics) for c in cfg.sinks] + list(extra_sinks or []))
        self.workers: list[InferenceWorker] = []
        self._streams: dict[str, _Stream] = {}
        # Names whose removal still waits on its decode thread: re-adding one then would share
        # (and lose, once the removal ends) its metric series.
        self._removing: set[str] = set()
        self._lock = threading.RLock()
        self.watchdog = Watchdog(self._sources, interval_s=0.5, on_tick=self._tick)
        self._tick_throttle = LogThrottle()  # a stream failing every round logs once a minute
        self._nan_throttle = LogThrottle()  # a detector scoring NaN logs once a minute per stream
        self.ready = False
        self.started_at = time.time()
        self._stopped = threading.Event()
        self._run_id = uuid.uuid4().hex[:12]
        self._event_no = itertools.count(1)
        self._event_lock = threading.Lock()  # publishers hold only their own stream's lock

    def _default_analyzer(self, device: str):
        m, f = self.cfg.model, self.cfg.faces
        return FrameAnalyzer(m.detector, m.weights, device, face_kwargs=f.detector_kwargs(), max_crops=m.batch_size,
                             engine=m.engine, precision=m.precision)

    # ---- lifecycle -------------------------------------------------------
    def start(self) -> "LiveService":
        """Load one analyzer per device, start sinks, watchdog and configured streams."""
        self.sinks.start()
        m = self.cfg.model
        threshold, engines = 0.5, []
        for dev in m.devices:
            analyzer = self._factory(dev)
            engines.append(_backend_of(analyzer, m.engine))
            threshold = float(getattr(analyzer, "threshold", threshold))
            w = InferenceWorker(dev, analyzer, self._on_result, max_frames=m.batch_frames,
                                max_wait_s=m.max_wait_ms / 1000.0, metrics=self.metrics, on_error=self._on_error)
            self.workers.append(w.start())
        self.verdict_settings = VerdictSettings(**self.cfg.verdict.resolved(threshold))
        # the engine that runs ("auto" says nothing), as batch scans and their rows name it
        set_build_info(m.detector, ",".join(dict.fromkeys(engines)), ",".join(m.devices), self.metrics.build)
        self.watchdog.start()
        for s in self.cfg.streams:
            self.add_stream(s)
        self.ready = True
        return self

    def stop(self) -> None:
        """Stop streams, then workers, then flush sinks (graceful shutdown)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.ready = False
        with self._lock:
            streams = list(self._streams.values())
        for st in streams:
            st.source._stop.set()  # signal all first so slow closes overlap
        for st in streams:
            st.source.stop()
        self.watchdog.stop()
        for w in self.workers:
            w.stop()
        for st in streams:  # no result can arrive now: the verdicts end here
            self._close(st, "shutdown")
        self.sinks.stop()

    @property
    def healthy(self) -> bool:
        limit = self.cfg.model.batch_timeout_s
        return (not self._stopped.is_set() and all(w.alive and not w.stuck(limit) for w in self.workers)
                and self.watchdog.alive)

    # ---- streams ---------------------------------------------------------
    def _settings(self, sc: StreamConfig) -> SourceSettings:
        d = self.cfg.defaults.model_dump()
        for k in ("sample_fps", "buffer_frames", "stall_s", "max_retries", "rtsp_transport", "tls_verify", "ca_file"):
            v = getattr(sc, k)
            if v is not None:
                d[k] = v
        return SourceSettings(**d, allow_files=self.cfg.allow_files, det_max_side=self.cfg.faces.det_max_side)

    def add_stream(self, sc: StreamConfig) -> dict:
        """Start a stream; raises :class:`StreamExists` or a :class:`SourceError` for bad URLs."""
        with self._lock:
            if sc.name in self._streams:
                raise StreamExists(f"stream {sc.name!r} already exists")
            if sc.name in self._removing:
                raise StreamExists(f"stream {sc.name!r} is still being removed; retry in a few seconds")
            if len(self._streams) >= self.cfg.max_streams:
                raise StreamLimit(f"already {len(self._streams)} streams (max_streams={self.cfg.max_streams})")
            parse_source(sc.url, allow_files=self.cfg.allow_files)  # before any metric series exists
            try:  # a stream added through the API, with its own rate
                self.cfg.verdict.check_rate(self._settings(sc).sample_fps, f"stream {sc.name!r}")
            except ValueError as e:
                raise ConfigError(str(e)) from e
            worker = min(self.workers, key=lambda w: len(w.sources))
            src = LiveSource(sc.name, sc.url, self._settings(sc), notify=worker.wake,
                             metrics=self.metrics.stream(sc.name))
            verdicts = StreamVerdicts(sc.name, self.verdict_settings)
            self._streams[sc.name] = _Stream(sc, src, verdicts, worker)
            worker.assign(src)
            self._start_source(sc.name, src, worker)
        log.info("stream %s added (%s) on %s", sc.name, src.src.masked, worker.device)
        return self.describe(sc.name)

    def _start_source(self, name: str, src: LiveSource, worker: InferenceWorker) -> None:
        """Start ``src``'s decode thread, or undo its registration (caller holds ``_lock``).

        Past the process's thread limit (a container's pids.max, ``ulimit -u``) the stream stayed
        listed as ``connecting`` with no thread, its name taken for good: a DELETE of it failed
        ("cannot join thread before it is started") and left its metric series behind."""
        try:
            src.start()
        except RuntimeError as e:  # "can't start new thread"
            del self._streams[name]
            worker.unassign(src)
            self.metrics.remove_stream(name)
            raise StreamNotStarted(f"stream {name!r} not added: its decode thread could not be started "
                                   f"({e}; the process is at its thread limit)") from None

    def remove_stream(self, name: str) -> None:
        with self._lock:
            st = self._streams.pop(name, None)
            if st is not None:
                self._removing.add(name)
            elif name in self._removing:  # not gone yet (its series still exported): not a 404
                raise StreamExists(f"stream {name!r} is still being removed; retry in a few seconds")
        if st is None:
            raise StreamNotFound(f"no stream named {name!r}")
        try:
            st.worker.unassign(st.source)
            # Wait out an open/read in progress (FFmpeg checks its own timeouts only), so a
            # removed stream never leaves its decode thread behind.
            s = st.source.settings
            st.source.stop(timeout=s.open_timeout_s + 2 * s.stall_s + 5.0)
            if st.source.alive:
                log.warning("stream %s: decode thread still running after removal", name)
            self._close(st, "removed")
            self.metrics.remove_stream(name)
        finally:
            with self._lock:
                self._removing.discard(name)
        log.info("stream %s removed", name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def _sources(self) -> list[LiveSource]:
        with self._lock:
            return [s.source for s in self._streams.values()]

    def describe(self, name: str | None = None) -> dict | list[dict]:
        if name is None:  # one lookup per stream: one removed meanwhile is left out, not a 404
            with self._lock:
                streams = list(self._streams.values())
            return [self._describe(st) for st in streams]
        with self._lock:
            st = self._streams.get(name)
        if st is None:
            raise StreamNotFound(f"no stream named {name!r}")
        return self._describe(st)

    def _describe(self, st: _Stream) -> dict:
        with st.lock:
            summary = st.verdicts.summary
        return {**st.source.describe(), "device": st.worker.device, **summary}

    # ---- results ---------------------------------------------------------
    def _on_result(self, frame: LiveFrame, r: FrameResult) -> None:
        with self._lock:
            st = self._streams.get(frame.stream)
        if st is None or frame.t_capture < st.added:
            return  # removed (perhaps re-added since) while its frame was in flight
        with st.lock:
            if st.closed:  # looked up just before its removal closed it: its `removed` is out
                return
            events = st.verdicts.update(frame.t_capture, r.boxes, r.p_fake, r.looks)
            self._set_gauges(st)
            self._publish(events)  # under the lock: see _close
            self._count_nonfinite(st, r.p_fake)  # not closed: no removed series comes back
        sm = st.source._m
        sm.faces.inc(len(r.p_fake))
        sm.latency.observe(time.monotonic() - frame.t_capture)

    def _count_nonfinite(self, st: _Stream, p_fake) -> None:
        """Count and log (once a minute per stream) the frame's NaN/inf face scores, as a batch
        scan counts them in its row: the verdicts leave them out, and a detector scoring every
        face NaN kept a stream ``unknown`` with no sign of why."""
        bad = int((~np.isfinite(np.asarray(p_fake, np.float64))).sum())
        if not bad:
            return
        st.source._m.nonfinite.inc(bad)
        name = st.verdicts.name
        self._nan_throttle.log(log, name, "stream %s: %d face crop(s) scored NaN/inf by the "
                                "detector: left out of the verdicts", name, bad, level=logging.WARNING)

    @staticmethod
    def _set_gauges(st: _Stream) -> None:
        """Score and fake gauges from the stream's verdict (caller holds ``st.lock``).

        No score in the window is NaN, not the last score seen (a stale number)."""
        v = st.verdicts.stream
        st.source._m.score.set(float("nan") if v.roll.value is None else v.roll.value)
        st.source._m.fake.set(1.0 if v.hyst.verdict == "fake" else 0.0)

    def _close(self, st: _Stream, reason: str) -> None:
        """Emit the end of ``st``'s verdicts (``unknown``, ``reason``) to every sink.

        Events are queued under the stream's lock (``emit`` never blocks), here and wherever
        they are judged: published after it, the worker's and the watchdog's events reached
        the sinks in another order than the verdict changed, and a reader's last event (an
        interval summary, a result's ``fake`` after ``removed``) was not the current verdict."""
        with st.lock:
            st.closed = True
            events = st.verdicts.close(reason, time.monotonic())
            for ev in events:
                ev["state"] = "stopped"
            self._publish(events)  # never an alert: every verdict ends as unknown

    def _on_error(self, batch, e: Exception) -> None:
        """Count each failed frame as an error of its stream; not of a namesake added after the
        frame was captured (its removed predecessor's frame, still in the batch): as _on_result."""
        with self._lock:
            sts = [(f, self._streams.get(f.stream)) for f in batch]
        for f, st in sts:
            if st is not None and f.t_capture >= st.added:
                st.source._m.errors.inc()

    def _publish(self, events: list[dict]) -> None:
        for ev in events:
            if ev.get("alert") and ev["stream"] in self._streams:
                self.metrics.stream(ev["stream"]).alerts.inc()
            # One id per event of this run, rising in every sink's order (emit never blocks): a
            # receiver drops a retried duplicate and sees a gap where a full sink queue dropped some.
            with self._event_lock:
                ev["id"] = f"{self._run_id}-{next(self._event_no)}"
                self.sinks.emit(ev)

    def _tick(self, now: float) -> None:
        limit = self.cfg.model.batch_timeout_s
        for w in self.workers:  # a hung batch is logged even if no probe asks /healthz
            w.stuck(limit, now)
        with self._lock:
            streams = list(self._streams.values())
        for st in streams:  # each on its own: one failing must not keep the others' verdicts current
            try:
                self._age(st, now)
            except Exception:  # noqa: BLE001 - logged; the watchdog round goes on
                self._tick_throttle.log(log, (st.verdicts.name, "tick"), "stream %s: ageing its verdicts failed",
                                        st.verdicts.name)

    def _age(self, st: _Stream, now: float) -> None:
        with st.lock:  # windows age without frames too: a dead stream's verdict lapses
            if st.closed:  # listed just before its removal: it has ended
                return
            events = st.verdicts.expire(now) + st.verdicts.tick(now)
            self._set_gauges(st)
            for ev in events:
                ev["state"] = st.source.state
            self._publish(events)  # under the lock: see _close
