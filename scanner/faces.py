"""Face detection with facenet-pytorch's MTCNN (weights ship inside its wheel).

The networks and weights are facenet-pytorch's; the cascade runs through
:mod:`scanner.mtcnn`, which batches each stage's crops (2-3x faster on crowds).

MTCNN runs on a downscaled copy of each frame (``Frame.small``, made by swscale
while decoding); boxes and landmarks are mapped back to full-resolution pixels.
The detection cost is dominated by P-Net over the image pyramid, whose depth is
set by the smallest face searched for, so ``min_face`` (in *full-resolution*
pixels) is the main speed/recall knob: faces smaller than ~64 px are useless to
the detectors downstream anyway.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from engines.errors import DfscanError

from . import mtcnn as mtcnn_cascade
from .decode import Frame

log = logging.getLogger(__name__)

FACENET_HINT = (
    "facenet-pytorch is not installed; install it without its outdated pins: "
    "pip install --no-deps facenet-pytorch==2.6.0"
)


class MissingDependency(DfscanError):
    """An optional runtime dependency is missing (message says what to install)."""


def _load_nets(device: str | torch.device):
    from .mtcnn_nets import MTCNNNets

    try:
        return MTCNNNets(device)
    except (ImportError, FileNotFoundError) as e:
        raise MissingDependency(FACENET_HINT) from e


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """Shorter side of each ``x1, y1, x2, y2`` box (``(K, 4+)`` -> ``(K,)``), in its pixels."""
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


@dataclass
class Faces:
    """Faces of one frame, largest first, in full-resolution frame pixels.

    Attributes:
        boxes: ``float32 (K, 4)`` as ``x1, y1, x2, y2``.
        probs: ``float32 (K,)`` MTCNN face probability.
        landmarks: ``float32 (K, 5, 2)`` as ``(x, y)``: left eye, right eye, nose,
            left and right mouth corner (image left/right).
    """

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)

    def sides(self) -> np.ndarray:
        """``float32 (K,)`` shorter side of each face box, full-resolution pixels."""
        return box_sides(self.boxes)

    @classmethod
    def empty(cls) -> "Faces":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector:
    """Batched MTCNN face detector.

    Args:
        device: torch device for MTCNN.
        max_side: longest side of the image MTCNN sees (frames without a
            ``small`` copy are used as they are).
        min_face: smallest face side to find and keep, in full-resolution pixels.
        thresholds: MTCNN P/R/O-Net thresholds. The default (0.7, 0.8, 0.9) is the
            DFDC winner's P/R-Net setting with O-Net at ``min_prob``: on a crowd clip it
            halves the cascade's time versus facenet's (0.6, 0.7, 0.7) and keeps every
            face with probability >= 0.9.
        min_prob: keep faces with probability >= this.
        max_faces: keep at most this many faces per frame, largest first.
        engine: what runs the P/R/O-Nets: ``eager`` (facenet's torch nets), ``onnxruntime``
            (CPU) or ``auto`` (see :mod:`scanner.mtcnn_engine`).
    """

    def __init__(self, device: str | torch.device = "cpu", max_side: int = 960, min_face: int = 64,
                 thresholds: Sequence[float] = (0.7, 0.8, 0.9), min_prob: float = 0.9,
                 max_faces: int = 4, engine: str = "eager"):
        self.max_side, self.min_face = max_side, min_face
        self._floored: set[float] = set()  # scales at which min_face fell below P-Net's 12 px
        self.min_prob, self.max_faces = min_prob, max_faces
        # O-Net's cut comes before _select's `probs >= min_prob`: left at 0.9, a face_prob
        # below it found nothing more (face_prob 0.5 kept exactly the faces 0.9 kept).
        *first, onet = tuple(thresholds)
        self.thresholds = (*first, min(onet, min_prob))
        self.mtcnn = _load_nets(device)  # facenet-pytorch's P/R/O-Nets and weights
        mtcnn_cascade.prepare_nets(self.mtcnn)
        from .mtcnn_engine import use_face_engine

        self.engine = use_face_engine(self.mtcnn, engine, str(device))

    def detect(self, frames: Sequence[Frame], first_level: int = 0) -> list[Faces]:
        """Detect faces in ``frames``; one :class:`Faces` per frame, in order.

        ``first_level`` > 0 skips P-Net's finest pyramid levels: only faces larger than
        about ``min_face / 0.709**first_level`` are searched (see :func:`scanner.mtcnn.detect`)."""
        out: list[Faces | None] = [None] * len(frames)
        groups: dict[tuple, list[int]] = {}
        for i, fr in enumerate(frames):
            img = fr.small if fr.small is not None else fr.image
            # By scale too: live batches mix streams, and a 1280x720 and a 1920x1080 camera
            # both give 960x540 detection copies; one scale for both mapped the second
            # stream's boxes and landmarks to the wrong full-resolution pixels.
            groups.setdefault((img.shape, fr.scale), []).append(i)
        for idx in groups.values():  # MTCNN batches only images of one size
            scale = frames[idx[0]].scale
            batch = np.stack([(frames[i].small if frames[i].small is not None else frames[i].image)
                              for i in idx])
            for i, faces in zip(idx, self._detect_batch(batch, scale, first_level)):
                out[i] = faces
        return out  # type: ignore[return-value]

    def minsize(self, scale: float) -> int:
        """Where P-Net's pyramid starts: ``min_face`` in detection pixels (12 is its floor)."""
        size = int(self.min_face * scale)
        if size < 12 and scale not in self._floored:  # said once per scale, not per frame
            self._floored.add(scale)
            log.warning("faces smaller than %d px are not found in frames downscaled %.3gx for detection "
                        "(MTCNN's smallest face is 12 px there; min_face is %d px): raise "
                        "faces.det_max_side to find them", math.ceil(12 / scale), scale, self.min_face)
        return max(12, size)

    def _detect_batch(self, batch: np.ndarray, scale: float, first_level: int = 0) -> list[Faces]:
        found = mtcnn_cascade.detect(self.mtcnn, batch, self.minsize(scale), self.thresholds,
                                     first_level=first_level)
        return [self._select(b, p, scale) for b, p in found]

    def _select(self, boxes: np.ndarray, points: np.ndarray, scale: float) -> Faces:
        if len(boxes) == 0:
            return Faces.empty()
        probs = boxes[:, 4].copy()
        boxes = boxes[:, :4] / scale
        points = points / scale
        side = box_sides(boxes)
        keep = (probs >= self.min_prob) & (side >= self.min_face)
        boxes, probs, points = boxes[keep], probs[keep], points[keep]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area, kind="stable")[: self.max_faces]
        return Faces(boxes[order], probs[order], points[order])
