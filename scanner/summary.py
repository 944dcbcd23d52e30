"""A video's verdict row from its scored faces: frame scores, face tracks, details.

Shared by every scan (batch workers, Ray actors): non-finite scores are dropped and
counted here, never read as ``real``; faces and frames are aggregated by their scores as the row
writes them (:func:`~scanner.aggregate.written`), so its ``frames_detail`` gives its verdict.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import metrics
from .aggregate import decide, frame_score, frames_needed, written
from .decode import VideoError

log = logging.getLogger("dfscan")


@dataclass
class FaceRec:
    """One detected face of a sampled frame: full-frame box, MTCNN probability, the
    frame-to-crop affine ``matrix``, its detector score (NaN until scored) and its look
    (:func:`scanner.appearance.look`, which keeps tracks to one person)."""

    frame: int  # position in the video's sampled-frame list
    box: np.ndarray
    prob: float
    matrix: torch.Tensor
    score: float = float("nan")
    extras: dict = field(default_factory=dict)
    look: np.ndarray | None = None


def _artifact_boxes(rec: FaceRec) -> list | None:
    boxes = rec.extras.get("artifact_boxes")
    if not boxes:
        return None
    b = torch.tensor(boxes, dtype=torch.float32)
    b = b[torch.isfinite(b).all(1)]  # an untrained/diverging head can emit inf boxes
    if len(b) == 0:
        return None
    from engines.detectors.adm.boxes import map_boxes_to_frame  # loaded with the ADM detector

    framed = map_boxes_to_frame(b[:, :4], rec.matrix, pixel_edges=True)  # crop pixel edges
    return [[*map(lambda v: round(float(v), 1), fb), round(float(s), 4)]
            for fb, s in zip(framed, b[:, 4])]


def _finite_faces(state) -> int:
    """Drop non-finite crop scores (a NaN would otherwise pass every max/mean and
    compare False with the threshold, i.e. read as ``real``); returns how many."""
    bad = [r for r in state.faces if not math.isfinite(r.score)]
    if bad:
        metrics.NONFINITE_SCORES.inc(len(bad))
        log.warning("%d face crop(s) scored NaN/inf by the detector: dropped", len(bad))
    return len(bad)


def video_row(state, cfg, threshold: float) -> dict:
    """The verdict part of a video's row from its sampled frames and scored faces
    (``state``: the pipeline's per-video record; ``cfg``: the scan config)."""
    order = sorted(range(len(state.frames)), key=lambda k: state.frames[k]["index"])
    per_frame: list[list[FaceRec]] = [[] for _ in state.frames]
    for rec in state.faces:
        per_frame[rec.frame].append(rec)
    frames, per_frame = [state.frames[k] for k in order], [per_frame[k] for k in order]
    dropped = _finite_faces(state)
    scores = _frame_scores(per_frame, cfg.frame_agg)
    v = decide(scores, threshold, cfg.video_agg, cfg.topk, cfg.min_face_frames)
    tracks = None
    if cfg.aggregate == "tracks" or cfg.details:  # details name each face's track (the report draws them)
        from .tracks import build_tracks, decide_tracks

        tracks = build_tracks([[(r.box, written(r.score), r.look) for r in recs] for recs in per_frame])
    if cfg.aggregate == "tracks":  # one fake face among real ones makes the video fake (scanner.tracks)
        v = decide_tracks(tracks, threshold, cfg.min_face_frames, len(per_frame))
    # non_finite only when the NaNs cost the verdict: too few frames had a face at all is no_face.
    if dropped and v.verdict == "no_face" and sum(map(bool, per_frame)) >= frames_needed(
            cfg.min_face_frames, len(per_frame)):
        raise VideoError("non_finite", f"the detector scored {dropped} of {len(state.faces)} face "
                         "crops NaN/inf; too few finite scores left for a verdict")
    row = {"verdict": v.verdict, "score": written(v.score),
           "frames": len(state.frames), "frames_with_faces": v.frames_with_faces,
           "faces": len(state.faces), "nonfinite_scores": dropped,
           "orientation_deg": state.orientation.degrees if state.orientation else 0}
    if cfg.aggregate == "tracks":
        row["tracks"] = [t.to_dict() for t in tracks]
    if cfg.details:
        row["frames_detail"] = _frames_detail(frames, per_frame, scores, tracks, threshold)
    return row


def _box_written(box) -> list[float]:
    return [round(float(v), 1) for v in box]  # pixels to 0.1, as frames_detail writes them


def _frame_scores(per_frame: list[list[FaceRec]], mode: str) -> list[float | None]:
    """Each frame's score, as ``frames_detail`` writes it, of its finite face scores as written."""
    scores = []
    for recs in per_frame:
        recs = [r for r in recs if math.isfinite(r.score)]
        s = np.array([written(r.score) for r in recs], np.float64)
        boxes = [_box_written(r.box) for r in recs]  # "largest" picks the face a reader of the row would
        areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes])
        fs = frame_score(s, areas, mode)
        scores.append(None if fs is None else written(fs))
    return scores


def _frames_detail(frames: list[dict], per_frame: list[list[FaceRec]], scores: list, tracks,
                   threshold: float) -> list[dict]:
    """Each sampled frame's score and faces, each face with its track id (the report's
    timeline draws the scan's own tracks from these)."""
    track_of = {(pos, slot): t.id for t in tracks for pos, slot in zip(t.frames, t.slots)}
    for pos, (meta, recs, s) in enumerate(zip(frames, per_frame, scores)):
        meta["score"] = s  # as written (_frame_scores)
        meta["faces"] = [dict(_face_detail(r, threshold), track=track_of[pos, k]) for k, r in enumerate(recs)]
    return frames


def _face_detail(r: FaceRec, threshold: float) -> dict:
    finite = math.isfinite(r.score)
    d = {"box": _box_written(r.box), "prob": round(r.prob, 4),
         "score": written(r.score) if finite else None}
    if finite and d["score"] >= threshold:  # the face's score as written (see aggregate.verdict_of)
        boxes = _artifact_boxes(r)
        if boxes:
            d["artifact_boxes"] = boxes
    return d
