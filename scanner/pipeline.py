"""The streaming scan pipeline: decode -> faces -> align -> infer -> verdict row.

Per video, a decode thread fills a bounded frame queue (files wait for the
consumer, so memory stays bounded whatever the video's length) while the main
thread detects faces on small batches of frames, aligns them on the model's
device and scores crops in engine-sized batches. Every input produces exactly
one row; a failure becomes an ``error`` row with a reason and the scan goes on.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from engines import create_detector
from engines.detector import Detector, scores_for
from engines.errors import EngineUnavailable
from engines.registry import file_hash

from . import metrics
from .align import align_faces
from .appearance import face_look
from .config import ScanConfig
from .cpus import usable_cpus
from .decode import Frame, FrameSampler, VideoError, check_regular_file, classify_os_error
from .faces import FaceDetector, Faces
from .orientation import Orientation
from .region import region_search
from .rows import base_row, check_decoded, record_sampling, set_total, start_identity, unless_changed, video_info
from .streaming import BoundedPrefetch, DeadlinePassed, Inline, call_before
from .summary import FaceRec, video_row

log = logging.getLogger("dfscan")
DETECT_BATCH = 4  # frames per MTCNN call: 4 measured fastest on CPU (cache-friendly, still batched)


class ScanInterrupted(BaseException):
    """``ctx.stop`` was set (SIGINT/SIGTERM): the video is abandoned, not an error row.

    A BaseException so that no ``except Exception`` turns it into a row."""


@dataclass
class ScanContext:
    """Everything built once per process and reused for every video."""

    cfg: ScanConfig
    detector: Detector
    engine: Callable[[torch.Tensor], object]
    faces: FaceDetector
    threshold: float
    engine_info: dict = field(default_factory=dict)
    workers: int = 1
    # Set by the signal handler of `dfscan scan`: videos in flight stop at their next
    # frame batch, finished ones are still yielded (see scan_paths).
    stop: threading.Event = field(default_factory=threading.Event)
    # Decode threads started before the context was built (scanner.warmstart), by str(path).
    prestarted: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.device)


def build_context(cfg: ScanConfig, inputs: int | None = None) -> ScanContext:
    """Create detector, engine (built, parity-checked, warmed up) and face detector;
    ``inputs``: how many videos the scan has, when known (see :func:`resolve_workers`)."""
    from engines.backends import batch_sizes_for, prepare_engine, resolve_engine_name

    workers = resolve_workers(cfg, resolve_engine_name(cfg.engine, cfg.device), inputs)
    if not cfg.device.startswith("cuda"):
        # Video-level parallelism beats intra-op threads for these small networks
        # (2 workers x 1 thread scanned the bench clips 1.5x faster than 1 x 2 here).
        torch.set_num_threads(max(1, usable_cpus() // workers))
    detector = create_detector(cfg.detector, weights=cfg.weights, device=cfg.device)
    sizes = batch_sizes_for(cfg.batch_size, cfg.device)
    # Warm-up matters where the first call compiles or records (CUDA, torch.compile); an
    # eager/ONNX Runtime CPU engine's first batch costs ~0.2 s more, its warm-up 1.2 s.
    warm = cfg.device.startswith("cuda") or not resolve_engine_name(cfg.engine, cfg.device).startswith(
        ("eager", "onnx", "ort"))
    try:
        engine = prepare_engine(detector, cfg.engine, precision=cfg.precision, batch_sizes=sizes,
                                device=cfg.device, warmup=warm)
    except EngineUnavailable as e:  # say which engine auto chose: the user named none
        if cfg.engine != "auto":
            raise
        chosen = resolve_engine_name(cfg.engine, cfg.device)
        raise EngineUnavailable(f"engine auto (here {chosen}): {e}; choose one with --engine") from e
    faces = FaceDetector(device=cfg.device, max_side=cfg.det_max_side, min_face=cfg.min_face,
                         min_prob=cfg.face_prob, max_faces=cfg.max_faces, engine=cfg.face_engine)
    threshold = cfg.threshold if cfg.threshold is not None else detector.threshold
    info = engine.describe()
    # the engine that runs, as rows name it ("auto" said nothing about which one ran)
    metrics.set_build_info(cfg.detector, info.get("backend", cfg.engine), cfg.device)
    return ScanContext(cfg, detector, engine, faces, threshold, info, workers)


def resolve_workers(cfg: ScanConfig, engine_name: str, inputs: int | None = None) -> int:
    """Parallel videos: as configured, else one per usable CPU (max 8; :mod:`scanner.cpus`) on CPU for engines
    safe to call from several threads (eager, ONNX Runtime), at most one per input, else 1."""
    if cfg.workers:
        return cfg.workers
    if cfg.device.startswith("cuda") or not engine_name.startswith(("eager", "onnx", "ort")):
        return 1  # GPU work serialises anyway; compiled graphs are not called concurrently
    # Why cap by inputs: an idle worker still takes its share of the cores (threads =
    # cores / workers), so one 1080p crowd clip alone scanned in 4.2 s with 2 threads vs
    # 4.9-6.4 s with 1 on 2 cores (same scores).
    return max(1, min(usable_cpus(), 8, inputs or 8))


def file_sha256(path: Path) -> str:
    return file_hash(path, None)


@dataclass
class _VideoState:
    frames: list[dict] = field(default_factory=list)
    faces: list[FaceRec] = field(default_factory=list)
    crops: list[torch.Tensor] = field(default_factory=list)
    pending: list[FaceRec] = field(default_factory=list)
    t: dict = field(default_factory=lambda: dict.fromkeys(("detect", "align", "infer", "aggregate"), 0.0))
    region: object = None  # scanner.region.RegionSearch of this video (None: whole frames)
    orientation: Orientation | None = None  # upright check of this video (None: frames as stored)


def detect_and_align(batch: list[Frame], faces: FaceDetector, spec, device, antialias=True,
                     timings: dict | None = None, region=None, orientation: Orientation | None = None
                     ) -> list[tuple[Frame, Faces, torch.Tensor, torch.Tensor]]:
    """Faces of a frame batch and their aligned crops (``(K, 3, S, S)`` float [0, 255]).

    ``timings``, when given, accumulates seconds under ``detect`` and ``align``;
    ``region`` (a per-video :class:`scanner.region.RegionSearch`) searches where faces were;
    ``orientation`` (per video) turns sideways videos upright (returned frames are turned).
    """
    t = timings if timings is not None else {"detect": 0.0, "align": 0.0}
    t0 = time.perf_counter()
    if orientation is not None:
        batch = orientation.apply(batch)
    found = (region or faces).detect(batch)
    if orientation is not None and orientation.settle(batch, found):
        batch = orientation.apply(batch)
        if region is not None:  # what it knows is in the stored frame's pixels
            region.reset()
        found = (region or faces).detect(batch)
    t1 = time.perf_counter()
    t["detect"] += t1 - t0
    out = [(fr, fc, *align_faces([fr.image], [0] * len(fc), fc.landmarks, spec, device, antialias))
           for fr, fc in zip(batch, found)]
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # the warps run asynchronously: count them here, not in infer
    t["align"] += time.perf_counter() - t1
    return out


def _timed(state: _VideoState, stage: str, fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        state.t[stage] += time.perf_counter() - t0


def _infer(state: _VideoState, ctx: ScanContext) -> None:
    if not state.pending:
        return
    crops = torch.cat(state.crops)
    out = ctx.engine(crops)
    p = scores_for(ctx.detector, out, len(state.pending))
    extras = ctx.detector.extras(out, p)
    for rec, s, ex in zip(state.pending, p.tolist(), extras):
        rec.score, rec.extras = s, ex
    metrics.CROPS_INFERRED.inc(len(state.pending))
    state.crops, state.pending = [], []


def _add_looks(frame: Frame, recs: list[FaceRec]) -> None:
    for r in recs:
        r.look = face_look(frame, r.box)


def _drop_faces_before(state: _VideoState, pos: int) -> None:
    """Forget the faces of the frames before ``pos``: found in the frame as stored before
    the video's turn was known, which proved wrong. Why: a sideways clip whose first batch
    of samples settled nothing (a black intro, then one probe) kept that probe's sideways
    face (its box in the stored frame, outside the turned one the row describes; scored
    0.54 where the turned faces scored 0.003-0.07); those frames are gone (not re-detected
    turned), so they stay faceless."""
    n = sum(r.frame < pos for r in state.pending)  # pending is in frame order: a prefix
    if n:
        rest = torch.cat(state.crops)[n:]
        state.crops, state.pending = ([rest] if len(rest) else []), state.pending[n:]
    state.faces = [r for r in state.faces if r.frame >= pos]


def _process_batch(batch: list[Frame], state: _VideoState, ctx: ScanContext) -> None:
    cfg = ctx.cfg
    unsettled = state.orientation is not None and state.orientation.k is None
    results = detect_and_align(batch, ctx.faces, ctx.detector.spec, ctx.device, cfg.antialias, state.t,
                               state.region, state.orientation)
    if unsettled and state.orientation.k:  # turned just now: earlier faces were found sideways
        _drop_faces_before(state, len(state.frames))
    for fr, fc, crops, mats in results:
        pos = len(state.frames)
        state.frames.append({"index": fr.index, "time_s": round(fr.time_s, 4)})
        if len(fc) == 0:
            continue
        recs = [FaceRec(pos, fc.boxes[k], float(fc.probs[k]), mats[k]) for k in range(len(fc))]
        if cfg.aggregate == "tracks" or cfg.details:  # only tracks use looks (scanner.tracks)
            _timed(state, "aggregate", _add_looks, fr, recs)
        state.faces += recs
        state.pending += recs
        state.crops.append(crops)
        metrics.FACES_DETECTED.inc(len(fc))
    if len(state.pending) >= cfg.batch_size:
        _timed(state, "infer", _infer, state, ctx)


def _analyse(path: Path, ctx: ScanContext, row: dict, deadline: float | None = None) -> dict:
    cfg = ctx.cfg
    pre = ctx.prestarted.pop(str(path), None)  # decoding began while the model loaded
    sampler = pre.sampler if pre else FrameSampler(path, cfg.frames, cfg.fps, cfg.det_max_side, cfg.seek)
    state = _VideoState(region=region_search(ctx.faces, cfg), orientation=Orientation(ctx.faces))

    def produce():
        if cfg.hash:
            check_regular_file(path)  # before hashing: reading a FIFO would block forever
            try:
                row["sha256"] = file_sha256(path)
            except OSError as e:  # same kinds as opening it (not_found, permission, ...)
                raise classify_os_error(path, e) from e
        return sampler

    source = BoundedPrefetch if _decode_in_thread(cfg) else Inline
    try:
        # a thread with a deadline only for a hash (the one read that may block before decoding)
        with (pre.take(lambda: call_before(produce, deadline if cfg.hash else None, "hash")) if pre
              else source(produce, maxsize=cfg.queue_frames, name="decode")) as frames:
            frames.deadline = deadline
            _consume(frames, path, state, ctx, deadline)
            decode_s = frames.busy_s
    except DeadlinePassed as e:
        raise _timed_out(cfg, sampler, state) from e
    finally:
        record_sampling(row, sampler)
    check_decoded(sampler, len(state.frames), cfg.min_face_frames)
    result = _timed(state, "aggregate", video_row, state, ctx.cfg, ctx.threshold)
    if sampler.index is not None:
        result["video"] = video_info(sampler)
    result["timings"] = {"decode": round(decode_s, 4),
                         **{k: round(v, 4) for k, v in state.t.items()}}
    return result


def _consume(frames, path: Path, state: _VideoState, ctx: ScanContext, deadline: float | None) -> None:
    """Detect, align and score ``frames`` in batches; checks ``deadline`` after each batch
    (a BoundedPrefetch also bounds each wait for a frame by it)."""
    batch: list[Frame] = []
    for fr in frames:
        if ctx.stop.is_set():
            raise ScanInterrupted(str(path))
        metrics.FRAMES_DECODED.inc()
        batch.append(fr)
        if len(batch) == DETECT_BATCH:
            _process_batch(batch, state, ctx)
            batch = []  # drop full-resolution frames as soon as they are used
            _check_deadline(deadline)
    if batch:
        _process_batch(batch, state, ctx)
    _timed(state, "infer", _infer, state, ctx)
    _check_deadline(deadline)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlinePassed("video_timeout_s")


def _timed_out(cfg: ScanConfig, sampler: FrameSampler, state: _VideoState) -> VideoError:
    """The ``timeout`` error of a video whose scan outlived ``video_timeout_s``."""
    where = ("before its index was read (a stalled read or a very large file)" if sampler.index is None
             else f"after {len(state.frames)} of {sampler.requested} sampled frames were analysed")
    return VideoError("timeout", f"scan gave up after video_timeout_s={cfg.video_timeout_s:g} s, {where}; "
                      "raise --video-timeout, or rescan with --resume --retry-errors")


def _decode_in_thread(cfg: ScanConfig) -> bool:
    # On 2 cores too: the four bench clips scanned in 3.6 s with decode threads vs 4.1 s
    # inline (2 workers, in one process; an earlier measurement, before CPU engines were
    # capped at 8 crops a call and alignment resized on uint8, found the threads slower).
    return cfg.decode_thread is not False


def scan_video(path: str | Path, ctx: ScanContext) -> dict:
    """Scan one video; always returns a row (``verdict == "error"`` on failure).

    Every read of the file (hash, index, decode passes) happens between two stats of
    its identity; a file that changed in between gets a ``changed`` error row."""
    path = Path(path)
    if ctx.stop.is_set():
        raise ScanInterrupted(str(path))
    t0 = time.perf_counter()
    timeout = ctx.cfg.video_timeout_s
    deadline = None if timeout is None else time.monotonic() + timeout
    start = start_identity(path, ctx)
    row = base_row(path, ctx, start)
    try:
        row.update(_analyse(path, ctx, row, deadline))
    except VideoError as e:
        row["error"] = {"kind": e.kind, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - one video's failure must never end the scan
        log.warning("scan of %s failed: %s: %s", path, type(e).__name__, e, exc_info=True)
        row.update(verdict="error", score=None)
        row["error"] = {"kind": "internal", "message": f"{type(e).__name__}: {e}"}
    row = unless_changed(path, ctx, start, row)  # after the last read: decode threads are done
    set_total(row, t0)
    metrics.record_row(row)
    return row


def scan_paths(paths: Iterable[str | Path], cfg: ScanConfig | None = None,
               ctx: ScanContext | None = None) -> Iterator[dict]:
    """Rows for ``paths`` (builds the context once when not given).

    With ``ctx.workers > 1`` videos are scanned concurrently and rows come in
    completion order; at most ``2 * workers`` videos are in flight. Once
    ``ctx.stop`` is set no video starts, videos in flight are abandoned at their
    next frame batch, and rows of videos already finished are still yielded.
    """
    ctx = ctx or build_context(cfg or ScanConfig())
    if ctx.workers <= 1:
        for p in paths:
            try:
                yield scan_video(p, ctx)
            except ScanInterrupted:
                return
        return
    it = iter(paths)
    with ThreadPoolExecutor(ctx.workers, thread_name_prefix="scan") as pool:
        pending = {pool.submit(scan_video, p, ctx) for p in itertools.islice(it, 2 * ctx.workers)}
        try:
            yield from _completed(pool, pending, it, ctx)
        except BaseException:  # consumer stopped (output failed, interrupt): do not wait for videos
            ctx.stop.set()
            raise


def _completed(pool, pending, it, ctx: ScanContext) -> Iterator[dict]:
    """Rows of finished futures; submits the next input as each finishes."""
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            nxt = None if ctx.stop.is_set() else next(it, None)
            if nxt is not None:
                pending.add(pool.submit(scan_video, nxt, ctx))
            if fut.cancelled():
                continue
            try:
                yield fut.result()
            except ScanInterrupted:
                continue
        if ctx.stop.is_set():
            for fut in pending:
                fut.cancel()  # not started yet: never start
