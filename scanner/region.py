"""Search each sampled frame only where faces can be (detect interval + region).

Like DeepStream's detector interval with a tracker: the first sample of a video
is searched whole; the next ones only inside one rectangle around the faces of
the previous sample (each face box grown by ``margin`` times its side on every
side, all of them united), and only for faces down to ``size_ratio`` times the
smallest face seen (P-Net's finest pyramid levels, the costly ones, are skipped).
The whole frame is searched again

- after every ``full_every`` region-only samples, so full searches are at most
  ``full_every + 1`` samples apart (faces that enter the picture are found then),
- for every frame in which the region search found nothing.

On a talking head the region is most of the frame; the gain there is the
skipped fine pyramid levels. Faces are tracked before the ``max_faces`` cut, so
a face that grows into the largest few is inside the region.

Frames of one detection batch share the rectangle (taken from the last faces
known before the batch), so the crops still run as one batched cascade.
Accuracy against whole-frame search is measured on real clips by
``bench/region_accuracy.py`` and checked in ``tests/test_region.py``.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from . import mtcnn as mtcnn_cascade
from .decode import Frame
from .faces import FaceDetector, Faces, box_sides

FACTOR = 0.709  # MTCNN's pyramid step (scanner.mtcnn.detect's default)

def _det_image(fr: Frame) -> np.ndarray:
    return fr.small if fr.small is not None else fr.image


class RegionSearch:
    """Per-video face search state; ``detect(frames)`` replaces ``FaceDetector.detect``.

    Args:
        faces: the (shared, stateless) face detector.
        full_every: search the whole frame after this many region-only samples.
        margin: region around a face, in face sides on each side.
        size_ratio: inside the region, search faces down to this times the
            smallest face of the previous sample (never below ``faces.min_face``).

    ``stats`` counts frames searched ``full``, in a ``region``, and region
    searches that found nothing and fell back to the whole frame (``fallback``).
    """

    def __init__(self, faces: FaceDetector, full_every: int = 8, margin: float = 1.0,
                 size_ratio: float = 0.7, max_share: float = 0.5):
        self.faces, self.full_every = faces, max(1, full_every)
        self.margin, self.size_ratio, self.max_share = margin, size_ratio, max_share
        self.stats: Counter = Counter()
        self.reset()

    def reset(self) -> None:
        """Forget where faces were: the next sample is searched whole (e.g. after the
        frames were turned upright, see :mod:`scanner.orientation`)."""
        self.last: np.ndarray | None = None  # (K, 4) face boxes of the last sample, detection px
        self.since_full = 0
        self.key: tuple | None = None  # (detection shape, scale) of the frames ``last`` is from

    def detect(self, frames: Sequence[Frame]) -> list[Faces]:
        """Faces of ``frames`` (consecutive samples of this video), in order."""
        if not frames:
            return []
        shape = _det_image(frames[0]).shape
        key = (shape, frames[0].scale)
        # By scale too: recordings joined with `cat` (1280x720, then 1920x1080) give 960x540
        # detection copies either side, and a batch across the change mapped the 1080p faces
        # with the 720p scale (boxes at 2/3 of their place, crops off the face).
        if any((_det_image(f).shape, f.scale) != key for f in frames):
            self.reset()
            self.stats["full"] += len(frames)
            return self.faces.detect(frames)
        if key != self.key:  # the last faces are another picture size's pixels
            self.reset()
            self.key = key
        rect = self._region(shape, len(frames))
        if rect is None:
            found = self._search(frames, (0, 0, shape[1], shape[0]), self._base_minsize(frames[0]))
            self.stats["full"] += len(frames)
            self.since_full = 0
        else:
            found = self._search(frames, rect, self._base_minsize(frames[0]), self._first_level(frames[0]))
            self.stats["region"] += len(frames)
            self.since_full += len(frames)
            empty = [i for i, (f, _) in enumerate(found) if len(f) == 0]
            if empty:  # nothing where faces were: look everywhere
                full = self._search([frames[i] for i in empty], (0, 0, shape[1], shape[0]),
                                    self._base_minsize(frames[0]))
                for i, f in zip(empty, full):
                    found[i] = f
                self.stats["fallback"] += len(empty)
        last = found[-1][1]  # every face of the last sample (not only the max_faces kept)
        self.last = last if len(last) else None
        return [kept for kept, _ in found]

    def _base_minsize(self, fr: Frame) -> int:
        return self.faces.minsize(fr.scale)

    def _first_level(self, fr: Frame) -> int:
        """First pyramid level searching faces >= size_ratio x the smallest face seen
        (level k searches faces of about minsize / factor**k pixels)."""
        b = self.last
        smallest = float(box_sides(b).min())
        return mtcnn_cascade.first_level(self.size_ratio * smallest, self._base_minsize(fr), FACTOR)

    def _region(self, shape: tuple, ahead: int) -> tuple[int, int, int, int] | None:
        """Rectangle ``x0, y0, x1, y1`` (detection px) to search up to ``ahead`` samples
        after the last faces seen, or None for a full search."""
        if self.last is None or self.since_full >= self.full_every:
            return None
        h, w = shape[:2]
        b = self.last
        grow = self.margin * ahead * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        x0 = int(max(0, np.floor((b[:, 0] - grow).min())))
        y0 = int(max(0, np.floor((b[:, 1] - grow).min())))
        x1 = int(min(w, np.ceil((b[:, 2] + grow).max())))
        y1 = int(min(h, np.ceil((b[:, 3] + grow).max())))
        if x1 <= x0 or y1 <= y0:
            return None
        if (x1 - x0) * (y1 - y0) > self.max_share * w * h:
            # A crop shifts the pyramid's pooling grid, which changes borderline faces;
            # worth it only when it saves most of the frame.
            return 0, 0, w, h
        return x0, y0, x1, y1

    def _search(self, frames: Sequence[Frame], rect: tuple[int, int, int, int], minsize: int,
                first_level: int = 0) -> list[tuple[Faces, np.ndarray]]:
        """Per frame: (faces kept as FaceDetector keeps them, every face box found
        ``(K, 4)`` in detection px) searching ``rect`` for faces of ``minsize`` and up."""
        x0, y0, x1, y1 = rect
        det, scale = self.faces, frames[0].scale
        if minsize > min(y1 - y0, x1 - x0):  # no pyramid level fits
            return [(Faces.empty(), np.zeros((0, 4), np.float32)) for _ in frames]
        # P-Net searches the rectangle; R/O-Net read the whole frame, so a candidate running
        # past the rectangle sees the frame there, as in a whole-frame search.
        images = np.stack([_det_image(f) for f in frames])
        out = []
        for boxes, points in mtcnn_cascade.detect(det.mtcnn, images, minsize, det.thresholds,
                                                  FACTOR, first_level, region=rect):
            side = box_sides(boxes)
            real = (boxes[:, 4] >= det.min_prob) & (side >= det.min_face * scale)
            out.append((det._select(boxes, points, scale), boxes[real, :4]))
        return out


def region_search(faces: FaceDetector, cfg) -> RegionSearch | None:
    """A fresh per-video :class:`RegionSearch` as ``cfg`` asks (None: whole frames only)."""
    if not getattr(cfg, "region_search", False):
        return None
    return RegionSearch(faces, full_every=cfg.full_search_every)


def same_faces(a: Faces, b: Faces, iou: float = 0.5) -> bool:
    """Whether two detections of one frame found the same faces: equal counts and a
    one-to-one pairing (largest IoU first) with IoU >= ``iou`` for every face."""
    if len(a) != len(b):
        return False
    if len(a) == 0:
        return True
    import torch
    from torchvision.ops import box_iou

    m = box_iou(torch.from_numpy(a.boxes).double(), torch.from_numpy(b.boxes).double()).numpy()
    for _ in range(len(a)):
        i, j = np.unravel_index(np.argmax(m), m.shape)
        if m[i, j] < iou:
            return False
        m[i, :], m[:, j] = -1, -1
    return True
