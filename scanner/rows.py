"""The layout of a scan's rows, shared by local, warm-started and Ray scans.

The fields a row holds before analysis, what the frame sampler learnt about the file
(sampling losses, the stream judged, the container's facts), the ``changed`` row of a
file replaced during its scan, and error rows made without scanning.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .aggregate import frames_needed
from .decode import FrameSampler, VideoError
from .identity import FileIdentity, describe_change, file_identity

log = logging.getLogger("dfscan")


def video_info(sampler: FrameSampler) -> dict | None:
    """The row's ``video`` field: the container's facts and the sampler's counts."""
    ix = sampler.index
    if ix is None:
        return None
    return {"width": ix.width, "height": ix.height, "codec": ix.codec,
            "frames_total": ix.frames, "duration_s": round(ix.duration_s, 3),
            "decode_errors": sampler.decode_errors, "frames_corrupt": sampler.corrupt, "seeks": sampler.seeks,
            "frames_refetched": sampler.refetched, "deinterlaced": sampler.deinterlaced,
            "hdr": sampler.hdr, "tone_mapped": sampler.tone_mapped,
            # Why: time_s of output-order frames is ordinal / nominal rate, not
            # the file's clock; the row must say which a reader is looking at.
            "timing": "output_order" if ix.ordinal else "pts",
            **judged_stream(sampler)}


def judged_stream(sampler: FrameSampler) -> dict:
    """``streams``: the file's video streams (cover art / attached pictures not counted);
    ``stream_index``: the container index of the one judged (FFmpeg's choice, as ffplay's).

    Why: only that stream is judged, so a face in another one (a second angle, a track a
    QuickTime player keeps disabled) got a "real" or "no_face" row with no hint that the
    file holds more video. The row now says which stream it judged and how many there
    are, and a warning names the file.
    """
    count, index = sampler.video_streams, sampler.stream_index
    if count > 1:
        log.warning("%s: %d video streams; only stream #%s (FFmpeg's pick, what ffplay shows) was "
                    "judged, %d other(s) not scanned", sampler.path, count, index, count - 1)
    return {"streams": count, "stream_index": index}


def record_sampling(row: dict, sampler: FrameSampler) -> None:
    """Sampled frames asked for and lost (a lost frame is visible, never silent)."""
    row["frames_requested"] = sampler.requested
    row["frames_missed"] = sampler.missed
    if sampler.missed:
        damaged = f" ({sampler.corrupt} only decoded damaged)" if sampler.corrupt else ""
        log.warning("%s: %d of %d sampled frames could not be decoded%s", sampler.path,
                    sampler.missed, sampler.requested, damaged)


def check_decoded(sampler: FrameSampler, decoded: int, min_face_frames: int) -> None:
    """Too few sampled frames decoded for a verdict is an error, not a verdict: the
    frames a verdict needs are capped at the frames sampled (a 2-frame clip), not at the
    ones a damaged file let through, where 2 faces of 32 sampled frames would decide."""
    need = frames_needed(min_face_frames, sampler.requested)
    if decoded < need:
        raise VideoError("frames_missed", f"only {decoded} of {sampler.requested} sampled frames "
                         f"could be decoded ({sampler.decode_errors} corrupt packets); a verdict "
                         f"needs {need}")


def base_row(path: Path, ctx, ident: FileIdentity | None = None) -> dict:
    """The row's fields before analysis (``ctx``: a scan context, local or a Ray driver's); ``ident`` (the row's start identity) gives the
    size, so a regular file is stat'ed once at the start (a FIFO or device: again here)."""
    size = ident.size if ident is not None else _stat_size(path)
    return {"path": str(path), "size_bytes": size, "sha256": None, "verdict": "error",
            "score": None, "threshold": ctx.threshold, "frames": 0, "frames_with_faces": 0,
            "faces": 0, "frames_requested": None, "frames_missed": None,
            "detector": ctx.detector.name, "weights_hash": ctx.detector.weights_hash,
            "engine": ctx.engine_info.get("backend", ctx.cfg.engine), "precision": ctx.cfg.precision,
            "error": None}


def _stat_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def start_identity(path: Path, ctx) -> FileIdentity | None:
    """The file's identity before anything read it: a video decoded while the model
    loaded (scanner.warmstart) was stat'ed before its decode thread opened it."""
    pre = ctx.prestarted.get(str(path))
    return pre.identity if pre is not None else file_identity(path)


def unless_changed(path: Path, ctx, start: FileIdentity | None, row: dict) -> dict:
    """``row``, or a ``changed`` error row when the file is no longer the one the row
    started on: then its size, hash and frames may each describe another state of it,
    so nothing of the analysis is kept (the hash names no verified bytes either)."""
    why = describe_change(start, file_identity(path))
    if why is None:
        return row
    out = base_row(path, ctx, start)
    out.update(error={"kind": "changed", "message": why}, timings=row.get("timings") or {})
    if start is None:
        out["size_bytes"] = None  # no regular file at the start: a size now is the end state's
    return out


def error_row(path: str, ctx, kind: str, message: str, t0: float) -> dict:
    """An error row made without scanning (a Ray driver's ``worker_lost``), laid out as
    :func:`scan_video`'s: its fields, and timings holding the total since ``t0``."""
    row = base_row(Path(path), ctx)
    row.update(path=path, error={"kind": kind, "message": message})
    set_total(row, t0)
    return row


def set_total(row: dict, t0: float) -> None:
    row.setdefault("timings", {})["total"] = round(time.perf_counter() - t0, 4)
