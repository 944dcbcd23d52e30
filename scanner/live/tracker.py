"""Greedy IoU tracker over *sampled* frames of one stream, with an optional second pass.

At 1-5 sampled frames per second, faces move far between samples, so matching
uses a low IoU threshold and tracks survive a few missed samples (``max_age_s``)
before they end. Given each face's look (:mod:`scanner.appearance`), a box and a
track whose looks differ are never linked, so a cut from one person to another framed the
same way starts a new track. Good enough to keep a per-face rolling score; it is not a
re-identification system (a face leaving and re-entering gets a new id).

A file scan samples frames seconds apart (32 over a minute), so a face that moves more
than about half its width between samples overlaps its own track too little and started
a new track at every sample. With ``relink`` (:class:`Relink`; file scans only,
:func:`scanner.tracks.build_tracks`) the faces the IoU pass left unmatched are then
assigned (cheapest pair first, one face per track, as the IoU pass) to tracks not seen in this frame whose last face
is near (centre distance per face size), about as large, and looks alike (a stricter
look distance than the IoU pass's veto, since no overlap backs it). Faces or tracks
without a look never take part: rows re-read without looks link as before. Live streams
keep the IoU pass alone: at 2 samples a second faces overlap their tracks, and a second
pass would only add ways for a newcomer to inherit a missed face's rolling verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..appearance import RELINK_DISTANCE


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a (N,4)`` and ``b (M,4)``, xyxy pixels -> ``(N, M)`` float32."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    a = a.astype(np.float32)[:, None, :]
    b = b.astype(np.float32)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-6)


@dataclass
class Track:
    id: int
    box: np.ndarray  # (4,) xyxy frame pixels
    last_t: float
    hits: int = 1
    look: np.ndarray | None = None  # scanner.appearance.look of its last face


@dataclass(frozen=True)
class Relink:
    """Gates of the second pass (calibrated: ``bench/track_appearance.py``).

    ``max_shift``: centre distance / face size (square root of the track's last box area,
    pixels / pixels) allowed one sample after the track was last seen, growing as
    ``gap ** shift_growth`` with ``gap = (t - last_t) / sample_s`` samples (a face missed
    for a while may have gone further, but not in proportion: pans rarely last);
    ``max_scale``: larger / smaller face size; ``max_look``: Hellinger look distance.
    One person's consecutive samples, 32 or 8 a clip, shift at most 0.62 sizes and 1.23x
    in scale on the training clips; the shift limit is set for a camera that jumps up to
    ~2 face sizes a sample (1.5 measured: 99 % linked), the look limit by cuts between
    people (numbers: :mod:`scanner.tracks`, :mod:`scanner.appearance`).
    """

    max_shift: float = 2.5
    shift_growth: float = 0.5
    max_scale: float = 1.5
    max_look: float = RELINK_DISTANCE
    sample_s: float = 1.0  # time units per sample (build_tracks counts samples: 1)


RELINK = Relink()  # a file scan's gates (scanner.tracks.build_tracks)
_NO = 1e6  # cost of a pair a gate refuses: never taken


class IoUTracker:
    """Assigns a stable integer id to each face box across sampled frames."""

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 2.0, relink: Relink | None = None):
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.relink = relink
        self.tracks: dict[int, Track] = {}
        self._next = 1

    def update(self, boxes: np.ndarray, t: float, looks: list | None = None
               ) -> tuple[list[int], list[int]]:
        """Match ``boxes (K,4)`` at time ``t`` (s); return (ids per box, ids of ended tracks).

        ``looks``: each box's :func:`scanner.appearance.look` (None entries allowed);
        a box is never linked to a track whose last look differs from its own."""
        ended = [i for i, tr in self.tracks.items() if t - tr.last_t > self.max_age_s] \
            if math.isfinite(self.max_age_s) else []  # a file's tracks never expire
        for i in ended:
            del self.tracks[i]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        looks = list(looks) if looks is not None else [None] * len(boxes)
        ids = self._match_iou(boxes, t, looks)
        if self.relink is not None:
            self._match_motion(boxes, t, looks, ids)
        for bi, tid in enumerate(ids):
            if tid < 0:
                ids[bi] = self._next
                self.tracks[self._next] = Track(self._next, boxes[bi], t, look=looks[bi])
                self._next += 1
        return ids, ended

    def _take(self, tr: Track, box: np.ndarray, t: float, look) -> int:
        tr.box, tr.last_t, tr.hits = box, t, tr.hits + 1
        tr.look = look if look is not None else tr.look
        return tr.id

    def _match_iou(self, boxes: np.ndarray, t: float, looks: list) -> list[int]:
        """Greedy IoU pass: best pair first, each track and each box used once; ids (-1: none)."""
        ids = [-1] * len(boxes)
        live = list(self.tracks.values())
        iou = iou_matrix(boxes, np.array([tr.box for tr in live]).reshape(-1, 4))
        # Looks compared only for tracks some box overlaps enough (no other can be taken):
        # comparing all of a long video's thousands of never-expiring tracks made it quadratic
        near = np.flatnonzero((iou >= self.iou_threshold).any(axis=0))
        if near.size:
            sub = iou[:, near]
            sub[_look_mismatch(looks, [live[j].look for j in near])] = -1
            iou[:, near] = sub
        while iou.size and iou.max() >= self.iou_threshold:
            bi, ti = np.unravel_index(int(iou.argmax()), iou.shape)
            ids[bi] = self._take(live[ti], boxes[bi], t, looks[bi])
            iou[bi, :] = -1
            iou[:, ti] = -1
        return ids

    def _match_motion(self, boxes: np.ndarray, t: float, looks: list, ids: list[int]) -> None:
        """Second pass (``relink``): unmatched faces with a look to tracks with a look not
        updated at ``t``, over the pairs every gate allows; fills ``ids`` in place."""
        faces = [k for k, tid in enumerate(ids) if tid < 0 and looks[k] is not None]
        idle = [tr for tr in self.tracks.values() if tr.last_t < t and tr.look is not None]
        if not faces or not idle:
            return
        gaps = np.array([(t - tr.last_t) / self.relink.sample_s for tr in idle], np.float32)
        track_boxes = np.stack([tr.box for tr in idle])
        shift, scale = _shift_scale(self.relink, boxes[faces], track_boxes, gaps)
        near = np.flatnonzero(((shift <= 1) & (scale <= 1)).any(axis=0))  # looks only of these (as above)
        if not near.size:
            return
        idle = [idle[j] for j in near]
        cost = relink_cost(self.relink, boxes[faces], np.stack([looks[k] for k in faces]),
                           track_boxes[near], np.stack([tr.look for tr in idle]), gaps[near])
        # Greedy, cheapest pair first (a handful of faces a frame): scipy's Hungarian solver,
        # imported lazily mid-scan, cost an import of scipy.optimize in every worker.
        while cost.size and cost.min() < _NO:
            r, c = np.unravel_index(int(cost.argmin()), cost.shape)
            ids[faces[r]] = self._take(idle[c], boxes[faces[r]], t, looks[faces[r]])
            cost[r, :] = cost[:, c] = _NO


def relink_cost(rl: Relink, boxes: np.ndarray, looks: np.ndarray, track_boxes: np.ndarray,
                track_looks: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """``(K, T)`` cost of giving face k (``boxes (K,4)`` xyxy px, ``looks (K,D)``) to track j
    (``track_boxes (T,4)``, ``track_looks (T,D)``, last seen ``gaps (T,)`` samples ago):
    each gate's measure over its limit, summed (in [0, 3)), or ``_NO`` where a gate refuses."""
    from ..appearance import distances

    shift, scale = _shift_scale(rl, boxes, track_boxes, gaps)
    look = distances(looks, track_looks) / rl.max_look
    cost = (shift + scale + look).astype(np.float64)
    cost[(shift > 1) | (scale > 1) | (look > 1) | ~np.isfinite(cost)] = _NO
    return cost


def _shift_scale(rl: Relink, boxes: np.ndarray, track_boxes: np.ndarray, gaps: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(K, T)`` centre shift and scale change of :func:`relink_cost`, each over its limit."""
    size = lambda b: np.sqrt(np.clip((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6, None))  # noqa: E731
    centre = lambda b: (b[:, :2] + b[:, 2:4]) / 2  # noqa: E731
    fs, ts = size(boxes)[:, None], size(track_boxes)[None, :]
    shift = np.linalg.norm(centre(boxes)[:, None] - centre(track_boxes)[None], axis=2) / ts
    shift = shift / (rl.max_shift * np.maximum(gaps, 1.0)[None] ** rl.shift_growth)
    scale = np.log(np.maximum(fs, ts) / np.minimum(fs, ts)) / np.log(rl.max_scale)
    return shift, scale


def _look_mismatch(box_looks: list, track_looks: list) -> np.ndarray:
    """``(K, T)`` bool: box and track both have a look and they differ
    (:data:`scanner.appearance.SAME_FACE_DISTANCE`)."""
    out = np.zeros((len(box_looks), len(track_looks)), bool)
    bi = [k for k, v in enumerate(box_looks) if v is not None]
    ti = [k for k, v in enumerate(track_looks) if v is not None]
    if bi and ti:
        from ..appearance import SAME_FACE_DISTANCE, distances

        d = distances(np.stack([box_looks[k] for k in bi]), np.stack([track_looks[k] for k in ti]))
        out[np.ix_(bi, ti)] = d > SAME_FACE_DISTANCE
    return out
