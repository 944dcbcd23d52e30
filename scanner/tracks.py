"""Video verdicts from face tracks: one fake face among real ones makes the video fake.

Faces of the sampled frames are grouped into tracks with the live mode's greedy
IoU tracker (:class:`scanner.live.tracker.IoUTracker`; tracks never expire
within a video, so a face missed in a few samples keeps its track; a face whose
look differs from the track's, :mod:`scanner.appearance`, starts a new one, so a cut
to another person framed the same way does not join them). A track's
score is the mean of its top half of face scores (robust to a few bad crops,
sensitive to a face that is fake only part of the time); the video score is
the maximum over tracks seen in enough frames (``min_frames``, capped at the
longest track's length, so short clips still get a verdict and a one-frame
false detection cannot decide a long video). A video is ``no_face`` exactly
when frame aggregation calls it so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .aggregate import Verdict, frames_needed, verdict_of


@dataclass
class FaceTrack:
    id: int
    frames: list[int] = field(default_factory=list)  # positions in the sampled-frame list
    scores: list[float] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # the face's place in its frame's list

    @property
    def scored(self) -> int:
        """Faces of this track with a finite score (what its score is made of)."""
        return sum(1 for v in self.scores if math.isfinite(v))

    @property
    def score(self) -> float | None:
        s = np.asarray([v for v in self.scores if math.isfinite(v)], np.float64)
        if len(s) == 0:
            return None
        k = max(1, math.ceil(len(s) / 2))
        return float(np.sort(s)[-k:].mean())

    def to_dict(self) -> dict:
        sc = self.score
        return {"id": self.id, "frames": len(self.frames), "first_frame": self.frames[0],
                "last_frame": self.frames[-1], "score": None if sc is None else round(sc, 6)}


def build_tracks(frames: list[list[tuple]], iou: float = 0.3) -> list[FaceTrack]:
    """Tracks from per-sampled-frame ``[(box xyxy (4,), score[, look]), ...]`` lists, in
    frame order (``look``: :func:`scanner.appearance.look` of the face, or None)."""
    from .live.tracker import IoUTracker

    tracker = IoUTracker(iou, max_age_s=math.inf)
    tracks: dict[int, FaceTrack] = {}
    for pos, faces in enumerate(frames):
        if not faces:
            continue
        boxes = np.array([f[0] for f in faces], np.float32).reshape(-1, 4)
        ids, _ = tracker.update(boxes, float(pos), [f[2] if len(f) > 2 else None for f in faces])
        for slot, (tid, (_, s, *_)) in enumerate(zip(ids, faces)):
            tr = tracks.setdefault(tid, FaceTrack(tid))
            tr.frames.append(pos)
            tr.scores.append(float(s))
            tr.slots.append(slot)
    return list(tracks.values())


def tracks_of_detail(frames_detail: list[dict]) -> list[FaceTrack]:
    """A row's tracks from its ``frames_detail``: by each face's stored ``track`` id (the
    scan's own tracks, looks included), or, for rows written before faces carried one, by
    box overlap as those scans linked them."""
    faces = [fr.get("faces") or [] for fr in frames_detail]
    nan = float("nan")
    score = lambda fc: nan if fc.get("score") is None else float(fc["score"])  # noqa: E731
    if not any("track" in fc for ff in faces for fc in ff):
        return build_tracks([[(np.asarray(fc["box"], np.float32), score(fc)) for fc in ff] for ff in faces])
    tracks: dict[int, FaceTrack] = {}
    for pos, ff in enumerate(faces):
        for slot, fc in enumerate(ff):
            tid = fc.get("track", -1)
            tr = tracks.setdefault(tid, FaceTrack(tid))
            tr.frames.append(pos)
            tr.scores.append(score(fc))
            tr.slots.append(slot)
    return list(tracks.values())


def decide_tracks(tracks: list[FaceTrack], threshold: float, min_frames: int, sampled: int) -> Verdict:
    """Verdict = max track score over tracks with at least ``min_frames`` scored faces (capped).

    ``no_face`` exactly when frame aggregation says so (fewer frames with a scored face
    than :func:`scanner.aggregate.frames_needed` asks of ``sampled`` frames): capping
    only at the longest track let one face in 1 of 32 frames decide the video.
    """
    face_frames = {f for t in tracks for f, s in zip(t.frames, t.scores) if math.isfinite(s)}
    if len(face_frames) < frames_needed(min_frames, sampled):
        return Verdict("no_face", None, len(face_frames))
    scored = [t for t in tracks if t.score is not None]
    longest = max(t.scored for t in scored)
    eligible = [t for t in scored if t.scored >= min(min_frames, longest)]
    score = max(t.score for t in eligible)
    return Verdict(verdict_of(score, threshold), score, len(face_frames))
