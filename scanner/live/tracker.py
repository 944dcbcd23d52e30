"""Greedy IoU tracker over *sampled* frames of one stream.

At 1-5 sampled frames per second, faces move far between samples, so matching
uses a low IoU threshold and tracks survive a few missed samples (``max_age_s``)
before they end. Given each face's look (:mod:`scanner.appearance`), a box and a
track whose looks differ are never linked, so a cut from one person to another framed the
same way starts a new track. Good enough to keep a per-face rolling score; it is not a
re-identification system (a face leaving and re-entering gets a new id).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


class IoUTracker:
    """Assigns a stable integer id to each face box across sampled frames."""

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 2.0):
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.tracks: dict[int, Track] = {}
        self._next = 1

    def update(self, boxes: np.ndarray, t: float, looks: list | None = None
               ) -> tuple[list[int], list[int]]:
        """Match ``boxes (K,4)`` at time ``t`` (s); return (ids per box, ids of ended tracks).

        ``looks``: each box's :func:`scanner.appearance.look` (None entries allowed);
        a box is never linked to a track whose last look differs from its own."""
        ended = [i for i, tr in self.tracks.items() if t - tr.last_t > self.max_age_s]
        for i in ended:
            del self.tracks[i]
        looks = list(looks) if looks is not None else [None] * len(boxes)
        ids = [-1] * len(boxes)
        live = list(self.tracks.values())
        iou = iou_matrix(np.asarray(boxes).reshape(-1, 4), np.array([tr.box for tr in live]).reshape(-1, 4))
        iou[_look_mismatch(looks, [tr.look for tr in live])] = -1
        # Greedy: best pair first; each track and each box used once.
        while iou.size and iou.max() >= self.iou_threshold:
            bi, ti = np.unravel_index(int(iou.argmax()), iou.shape)
            tr = live[ti]
            tr.box, tr.last_t, tr.hits = np.asarray(boxes[bi], np.float32), t, tr.hits + 1
            tr.look = looks[bi] if looks[bi] is not None else tr.look
            ids[bi] = tr.id
            iou[bi, :] = -1
            iou[:, ti] = -1
        for bi, tid in enumerate(ids):
            if tid < 0:
                ids[bi] = self._next
                self.tracks[self._next] = Track(self._next, np.asarray(boxes[bi], np.float32), t, look=looks[bi])
                self._next += 1
        return ids, ended


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
