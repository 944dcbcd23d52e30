"""Cross-stream batching: one inference worker per device.

The worker takes sampled frames from *all* streams assigned to its device
(round-robin, one frame per stream per pass, so a busy stream cannot starve the
others) until ``max_frames`` are collected or the oldest collected frame has
waited ``max_wait_s``. Then one batch goes through face detection, alignment and
the deepfake detector: N streams cost about one model call per batch, not N.
Streams whose frames arrive faster than the worker keeps up lose their *oldest*
frames in their own buffer (counted), so latency stays bounded.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from engines.detector import scores_for

from .source import LiveFrame, LiveSource
from .throttle import LogThrottle

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """Faces of one frame: ``boxes (K,4)`` xyxy frame px, ``probs (K,)`` face prob, ``p_fake (K,)``,
    ``looks`` (K :func:`scanner.appearance.look` histograms or None: tracks stay one person)."""

    boxes: np.ndarray
    probs: np.ndarray
    p_fake: np.ndarray
    looks: list | None = None


class FrameAnalyzer:
    """Faces -> aligned crops -> detector for a list of frames on one device."""

    def __init__(self, detector: str, weights: str | None = None, device: str = "cpu",
                 face_kwargs: dict | None = None, max_crops: int = 64, engine: str = "eager",
                 precision: str = "fp32"):
        from engines.backends import batch_sizes_for, prepare_engine
        from engines.registry import create_detector

        from ..faces import FaceDetector

        self.device = torch.device(device)
        self.faces = FaceDetector(device=device, **(face_kwargs or {}))
        self.model = create_detector(detector, weights=weights, device=device)
        # Same engines and batch sizes as batch scanning (built, parity-checked, warmed up);
        # a call with more crops than the largest size is split into chunks.
        self.engine = prepare_engine(self.model, engine, precision=precision,
                                     batch_sizes=batch_sizes_for(max_crops, device), device=device)
        self.spec = self.model.spec
        self.threshold = self.model.threshold
        self.max_crops = max_crops

    def __call__(self, frames: Sequence) -> list[FrameResult]:
        """``frames``: :class:`scanner.decode.Frame` list -> one :class:`FrameResult` each.

        Faces and crops come from the batch scanner's own detect+align path, so live
        and file scans see identical crops; all crops of the batch go to the
        detector together (``max_crops`` per call).
        """
        from ..appearance import face_look
        from ..pipeline import detect_and_align

        found = detect_and_align(list(frames), self.faces, self.spec, self.device)
        crops = [c for _, fc, c, _ in found if len(fc)]
        p = self._score(torch.cat(crops)) if crops else np.zeros(0, np.float32)
        out, k = [], 0
        for fr, fc, _, _ in found:
            n = len(fc)
            out.append(FrameResult(fc.boxes, fc.probs, p[k:k + n], [face_look(fr, b) for b in fc.boxes]))
            k += n
        return out

    @torch.inference_mode()
    def _score(self, crops: torch.Tensor) -> np.ndarray:
        ps = []
        for k in range(0, crops.shape[0], self.max_crops):
            chunk = crops[k:k + self.max_crops]
            ps.append(scores_for(self.model, self.engine(chunk), len(chunk)))
        # NaN/inf stay in the result (their boxes still track); the service counts them per
        # stream and the rolling verdicts leave them out.
        return torch.cat(ps).numpy()


class InferenceWorker:
    """Batches frames from the sources assigned to one device; calls ``on_result`` per frame."""

    def __init__(self, device: str, analyzer: Callable[[Sequence], list[FrameResult]],
                 on_result: Callable[[LiveFrame, FrameResult], None],
                 max_frames: int = 8, max_wait_s: float = 0.05, metrics=None,
                 on_error: Callable[[Sequence[LiveFrame], Exception], None] | None = None):
        self.device = device
        self.analyzer = analyzer
        self.on_result = on_result
        self.on_error = on_error
        self.max_frames, self.max_wait_s = max(1, max_frames), max_wait_s
        self.sources: list[LiveSource] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._rr = 0
        self._m = metrics
        self._throttle = LogThrottle()
        self.batches = self.frames = 0
        self._busy_since: float | None = None  # monotonic start of the batch in progress
        self._busy_lock = threading.Lock()  # the hang is seen by probe/watchdog threads, ended by ours
        self._batch_no = self._hang_logged = 0  # the hung batch logged: once, however often asked
        self._thread = threading.Thread(target=self._run, name=f"dfscan-infer-{device}", daemon=True)

    def assign(self, src: LiveSource) -> None:
        with self._lock:
            self.sources.append(src)

    def unassign(self, src: LiveSource) -> None:
        with self._lock:
            if src in self.sources:
                self.sources.remove(src)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> "InferenceWorker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stuck(self, limit_s: float, now: float | None = None) -> bool:
        """True when one batch has run longer than ``limit_s``: a hung device or detector.

        The thread is alive then, yet no stream is scored: without this, /healthz said ok.
        The first call that sees a batch hung logs it (not every probe: they come each second)."""
        now = now or time.monotonic()
        with self._busy_lock:  # logged outside it: a blocked log handler must not block the worker
            t = self._busy_since
            hung = t is not None and now - t > limit_s
            first = hung and self._hang_logged != self._batch_no
            if first:
                self._hang_logged = self._batch_no
        if first:
            log.error("inference batch on %s running for %.1fs (over model.batch_timeout_s %gs): "
                      "the device or detector hangs, no stream is scored and /healthz fails until it ends",
                      self.device, now - t, limit_s)
        return hung

    def _batch_started(self) -> None:
        with self._busy_lock:
            self._batch_no += 1
            self._busy_since = time.monotonic()

    def _batch_ended(self) -> None:
        with self._busy_lock:
            t, self._busy_since = self._busy_since, None
            was_logged = t is not None and self._hang_logged == self._batch_no
        if was_logged:
            log.info("inference batch on %s ended after %.1fs: scoring resumes", self.device, time.monotonic() - t)

    def _take_round(self, batch: list[LiveFrame]) -> bool:
        """One fair pass over the sources (rotating start); True if anything was taken."""
        with self._lock:
            srcs = list(self.sources)
        if not srcs:
            return False
        self._rr = (self._rr + 1) % len(srcs)
        got = False
        for src in srcs[self._rr:] + srcs[:self._rr]:
            if len(batch) >= self.max_frames:
                break
            item = src.buffer.get()
            if item is not None:
                batch.append(item)
                got = True
        return got

    def collect(self) -> list[LiveFrame]:
        """Frames for one batch: full, or the oldest has waited ``max_wait_s``."""
        batch: list[LiveFrame] = []
        while not self._stop.is_set() and len(batch) < self.max_frames:
            if self._take_round(batch):
                continue
            if not batch:
                return batch
            remaining = min(f.t_capture for f in batch) + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.collect()
            if not batch:
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            self._process(batch)

    def _analyse(self, batch: list[LiveFrame]) -> list[tuple[LiveFrame, FrameResult]]:
        """Results of the frames that could be analysed. When the batch fails, each
        frame is retried alone, so one bad frame costs only its own stream's frame."""
        try:
            # strict: an analyzer returning fewer results than frames lost the rest silently
            return list(zip(batch, self.analyzer([f.frame for f in batch]), strict=True))
        except Exception as e:  # noqa: BLE001 - a bad batch must not kill the worker
            if len(batch) == 1:
                self._throttle.log(log, (batch[0].stream, type(e).__name__), "inference failed on %s for stream %s",
                                   self.device, batch[0].stream)
                if self.on_error:
                    self.on_error(batch, e)
                return []
            if self._throttle(("batch", type(e).__name__)) is not None:
                log.warning("inference batch failed on %s (%s: %s); retrying frame by frame",
                            self.device, type(e).__name__, e)
        return [r for f in batch for r in self._analyse([f])]

    def _process(self, batch: list[LiveFrame]) -> None:
        t0 = time.perf_counter()
        self._batch_started()
        try:
            done = self._analyse(batch)
        finally:
            self._batch_ended()
        if not done:
            return
        dt = time.perf_counter() - t0
        self.batches += 1
        self.frames += len(batch)
        if self._m is not None:
            self._m.batch_frames.labels(self.device).observe(len(batch))
            self._m.batch_seconds.labels(self.device).observe(dt)
        for f, r in done:
            try:
                self.on_result(f, r)
            except Exception:  # noqa: BLE001
                log.exception("result handling failed for stream %s", f.stream)
