"""Video verdicts from face tracks: one fake face among real ones makes the video fake.

Faces of the sampled frames are grouped into tracks with the live mode's greedy
IoU tracker (:class:`scanner.live.tracker.IoUTracker`; tracks never expire
within a video, so a face missed in a few samples keeps its track; a face whose
look differs from the track's, :mod:`scanner.appearance`, starts a new one, so a cut
to another person framed the same way does not join them). Samples of a long video are
seconds apart, and a face that moved more than about half its width since the last one
overlapped nothing: a fake face moving 0.8 of its width per sample became 32 one-frame
tracks, none long enough to count, and the video was real. So faces the overlap pass
leaves unmatched get a second pass (:class:`scanner.live.tracker.Relink`): assigned, one
face per track, to tracks not seen in this sample whose last face is within 2.5 face sizes
(times the square root of the samples since), at most 1.5 times larger or smaller, and
looks alike (``RELINK_DISTANCE`` 0.2, stricter than the overlap pass's veto). Faces without
a look (rows re-read from ``frames_detail`` written before looks) link as before.
Calibrated by ``python bench/track_appearance.py`` on the training clips: with the picture
jumping 0.75 or 1.5 face sizes per sample, the overlap pass broke 1,765 of 1,765 links of one
person at 32 samples, the second pass leaves 19 and 21 broken (portrait clips whose look
drifts past 0.2; 6 and 7 of 397 at 8 samples); jumps of 2.5 sizes stay broken (1,669). A
cut to another person placed 1.5 face sizes away joins 37 of 514 same-studio junctions
(7 %; by overlap alone, at the same place, 321 join) and 4 of 2,584 across sources, at
3 sizes none; two faces of one sample never share a track, nor (0 of 136 pairs) does one
take the other's track when seen 1 or 4 samples later. A track's
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
from .live.tracker import RELINK, IoUTracker, Relink


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
        """The row's entry: ``scored_frames`` is what :func:`decide_tracks` counts a track by. Why:
        with only ``frames``, a track seen in 3 frames, 2 of its faces scored NaN, read as counted
        (its 0.9 the worst track's) in a row judged ``real`` 0.1 by a track of 3 scored faces."""
        sc = self.score
        return {"id": self.id, "frames": len(self.frames), "scored_frames": self.scored,
                "first_frame": self.frames[0], "last_frame": self.frames[-1],
                "score": None if sc is None else round(sc, 6)}


def build_tracks(frames: list[list[tuple]], iou: float = 0.3, relink: Relink | None = RELINK
                 ) -> list[FaceTrack]:
    """Tracks from per-sampled-frame ``[(box xyxy (4,), score[, look]), ...]`` lists, in
    frame order (``look``: :func:`scanner.appearance.look` of the face, or None).

    ``relink``: gates of the second pass for faces that moved too far to overlap their
    track (None: box overlap and look veto alone, as live streams track)."""
    tracker = IoUTracker(iou, max_age_s=math.inf, relink=relink)
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
