"""Video verdicts from face tracks: one fake face among real ones makes the video fake.

Faces of the sampled frames are grouped into tracks with the live mode's greedy
IoU tracker (:class:`scanner.live.tracker.IoUTracker`; tracks never expire
within a video, so a face missed in a few samples keeps its track). A track's
score is the mean of its top half of face scores (robust to a few bad crops,
sensitive to a face that is fake only part of the time); the video score is
the maximum over tracks seen in enough frames (``min_frames``, capped at the
longest track's length, so short clips still get a verdict and a one-frame
false detection cannot decide a long video).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .aggregate import Verdict


@dataclass
class FaceTrack:
    id: int
    frames: list[int] = field(default_factory=list)  # positions in the sampled-frame list
    scores: list[float] = field(default_factory=list)

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


def build_tracks(frames: list[list[tuple[np.ndarray, float]]], iou: float = 0.3) -> list[FaceTrack]:
    """Tracks from per-sampled-frame ``[(box xyxy (4,), score), ...]`` lists, in frame order."""
    from .live.tracker import IoUTracker

    tracker = IoUTracker(iou, max_age_s=math.inf)
    tracks: dict[int, FaceTrack] = {}
    for pos, faces in enumerate(frames):
        if not faces:
            continue
        ids, _ = tracker.update(np.array([b for b, _ in faces], np.float32).reshape(-1, 4), float(pos))
        for tid, (_, s) in zip(ids, faces):
            tr = tracks.setdefault(tid, FaceTrack(tid))
            tr.frames.append(pos)
            tr.scores.append(float(s))
    return list(tracks.values())


def decide_tracks(tracks: list[FaceTrack], threshold: float, min_frames: int) -> Verdict:
    """Verdict = max track score over tracks with at least ``min_frames`` faces (capped)."""
    scored = [t for t in tracks if t.score is not None]
    if not scored:
        return Verdict("no_face", None, 0)
    longest = max(len(t.frames) for t in scored)
    need = min(min_frames, longest)
    eligible = [t for t in scored if len(t.frames) >= need]
    score = max(t.score for t in eligible)
    frames_with_faces = len({f for t in scored for f in t.frames})
    return Verdict("fake" if score >= threshold else "real", score, frames_with_faces)
