"""Default boxes (anchors), box decoding and NMS of the ADM detection heads.

Follows CADDM's SSD-style code (Liu et al., "SSD", ECCV 2016):

* anchors: ``detection_layers/functions/prior_box.py`` with the ``adm_det``
  section of ``configs/caddm_test.cfg`` (maps 7/5/3/1, steps 32/45/75/224,
  sizes 40-80 / 80-120 / 120-160 / 224-224, clipped to [0, 1]); two anchors per
  cell, ``(cx, cy, a, b)`` and ``(cx, cy, b, a)`` with ``a = min_size/224``,
  ``b = max_size/224``;
* decoding: ``detection_layers/box_utils.py::decode`` with variances
  ``(0.1, 0.2)`` (the values ``preprocess.label_assign`` used to encode the
  training targets);
* score: softmax over the two confidence logits, class 1 = "artifact"
  (``match`` labels matched anchors ``0 + 1``).

Box order. CADDM's training boxes come from ``partial_swap_mask._sliding_bbox``
as ``[row0, col0, row1, col1]`` on the 224 crop (``mfs.draw_bounding_box``
draws them with ``(x, y) = (b[1], b[0])``), so the decoded first/third values
are rows (y) and second/fourth columns (x). :func:`decode_to_crop_xyxy`
reorders them to ``(x1, y1, x2, y2)``.

Crop box coordinates are pixel *edges*: ``(0, 0, 224, 224)`` is the whole
crop (the original's slice bounds), and pixel ``(i, j)`` spans ``[j, j+1)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from ...tv_ops import batched_nms  # torchvision's kernel without torchvision.models (~1 s import)


@dataclass(frozen=True)
class PriorConfig:
    """Anchor layout of the original ``adm_det`` config (all sizes in pixels)."""

    min_dim: int = 224
    feature_maps: tuple[int, ...] = (7, 5, 3, 1)
    steps: tuple[int, ...] = (32, 45, 75, 224)
    min_sizes: tuple[int, ...] = (40, 80, 120, 224)
    max_sizes: tuple[int, ...] = (80, 120, 160, 224)
    clip: bool = True
    variances: tuple[float, float] = (0.1, 0.2)

    @property
    def num_anchors(self) -> int:
        return 2 * sum(f * f for f in self.feature_maps)


ADM_PRIORS = PriorConfig()


@lru_cache(maxsize=8)
def prior_boxes(cfg: PriorConfig = ADM_PRIORS) -> torch.Tensor:
    """Anchors as ``float32 (A, 4)`` ``(cx, cy, w, h)`` in units of the crop side (CPU, cached: do not modify).

    Ordered map by map, then row ``i``, column ``j``, then the two anchors of
    a cell, matching the heads' flattened output. ``cx`` follows the column.
    """
    rows = []
    for f, step, lo, hi in zip(cfg.feature_maps, cfg.steps, cfg.min_sizes, cfg.max_sizes):
        f_k = cfg.min_dim / step  # cells per crop side at this step
        a, b = lo / cfg.min_dim, hi / cfg.min_dim
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
                rows += [(cx, cy, a, b), (cx, cy, b, a)]
    priors = torch.tensor(rows, dtype=torch.float64)
    if cfg.clip:
        priors = priors.clamp(0.0, 1.0)
    return priors.float()


def decode(loc: torch.Tensor, priors: torch.Tensor, variances=(0.1, 0.2)) -> torch.Tensor:
    """SSD decoding of regression outputs against anchors.

    Args:
        loc: ``(..., A, 4)`` raw location outputs.
        priors: ``(A, 4)`` anchors ``(c0, c1, s0, s1)`` (centre, size).
    Returns:
        ``(..., A, 4)`` corners ``(lo0, lo1, hi0, hi1)`` in the anchors' units
        and axis order (for ADM: crop fractions, axis 0 = rows; see module doc).
    """
    centre = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    lo = centre - size / 2
    return torch.cat([lo, lo + size], dim=-1)


def decode_to_crop_xyxy(loc: torch.Tensor, priors: torch.Tensor, size: int,
                        clip: bool = True, cfg: PriorConfig = ADM_PRIORS) -> torch.Tensor:
    """``(..., A, 4)`` raw outputs -> ``float32 (x1, y1, x2, y2)`` crop pixel edges.

    ``clip`` limits the boxes to ``[0, size]`` (the crop).
    """
    b = decode(loc.float(), priors.to(loc.device, torch.float32), cfg.variances)
    xyxy = b[..., [1, 0, 3, 2]] * float(size)  # authors' (y1, x1, y2, x2) -> xyxy
    return xyxy.clamp(0.0, float(size)) if clip else xyxy


def detect_boxes(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, size: int,
                 score_threshold: float = 0.5, iou_threshold: float = 0.45,
                 top_k: int = 5) -> list[torch.Tensor]:
    """Artifact boxes per crop after score threshold, NMS and top-k.

    Args:
        loc: ``(N, A, 4)`` raw location outputs; conf: ``(N, A, 2)`` raw logits.
        priors: ``(A, 4)`` from :func:`prior_boxes`; size: crop side in pixels.
    Returns:
        ``N`` tensors ``float32 (K, 5)`` = ``(x1, y1, x2, y2, score)`` in crop
        pixel edges, best first, ``K <= top_k``; on ``loc``'s device.
    """
    n = loc.shape[0]
    # NMS on unclipped boxes like the original ``Detect``; clip for output.
    boxes = decode_to_crop_xyxy(loc, priors, size, clip=False)
    scores = torch.softmax(conf.float(), dim=-1)[..., 1]
    keep = scores > score_threshold
    crop_idx = torch.arange(n, device=loc.device)[:, None].expand_as(scores)[keep]
    cand_boxes, cand_scores = boxes[keep], scores[keep]
    # One NMS call for the whole batch; crops never suppress each other.
    kept = batched_nms(cand_boxes, cand_scores, crop_idx, iou_threshold)  # by score desc
    out = []
    for i in range(n):
        sel = kept[crop_idx[kept] == i][:top_k]
        clipped = cand_boxes[sel].clamp(0.0, float(size))
        out.append(torch.cat([clipped, cand_scores[sel, None]], dim=1))
    return out
