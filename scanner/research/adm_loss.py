"""Training losses of the ADM head (CADDM): real/fake cross-entropy + SSD box losses.

Anchor matching and encoding follow SSD (Liu et al., ECCV 2016) as CADDM uses
it: an anchor is positive ("artifact") when its IoU with the fake's box is at
least 0.5 (and the best anchor of each box is always positive); offsets are
encoded against the anchors with variances (0.1, 0.2); the confidence loss
keeps all positives and the hardest negatives (3 per positive). Boxes are in
CADDM's axis order ``(row0, col0, row1, col1)`` so that
:func:`engines.detectors.adm.anchors.decode_to_crop_xyxy` maps predictions back
to ``(x1, y1, x2, y2)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from engines.detectors.adm.anchors import ADM_PRIORS, prior_boxes


def _corners(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], 1)


def encode(box_rc: torch.Tensor, priors: torch.Tensor, var=(0.1, 0.2)) -> torch.Tensor:
    """``(A, 4)`` corner boxes (one per anchor) -> regression targets ``(A, 4)``."""
    c = (box_rc[:, :2] + box_rc[:, 2:]) / 2
    wh = (box_rc[:, 2:] - box_rc[:, :2]).clamp(min=1e-6)
    return torch.cat([(c - priors[:, :2]) / (var[0] * priors[:, 2:]), torch.log(wh / priors[:, 2:]) / var[1]], 1)


def adm_loss(out, label: torch.Tensor, box_xyxy: torch.Tensor, box_weight: float = 1.0,
             neg_ratio: int = 3) -> tuple[torch.Tensor, dict]:
    """Loss of one batch.

    Args:
        out: the ADM detector's raw output ``(logits (N, 2), loc (N, A, 4), conf (N, A, 2))``.
        label: ``float (N,)`` 1 = fake; box_xyxy: ``(N, 4)`` crop fractions, -1 for reals.
    """
    logits, loc, conf = out
    priors = prior_boxes(ADM_PRIORS).to(loc.device)
    anchors = _corners(priors)
    n, a = conf.shape[:2]
    cls_t = torch.zeros(n, a, dtype=torch.long, device=loc.device)
    loc_t = torch.zeros(n, a, 4, device=loc.device)
    for i in torch.nonzero(label > 0.5).flatten().tolist():
        b = box_xyxy[i, [1, 0, 3, 2]][None]  # xyxy -> CADDM's (row, col) order
        iou = box_iou(b, anchors)[0]
        pos = iou >= 0.5
        pos[iou.argmax()] = True
        cls_t[i, pos] = 1
        loc_t[i] = encode(b.expand(a, 4), priors)
    pos = cls_t > 0
    n_pos = pos.sum().clamp(min=1)
    l_loc = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum") / n_pos
    ce = F.cross_entropy(conf.reshape(-1, 2), cls_t.reshape(-1), reduction="none").reshape(n, a)
    # Hard negative mining: per crop the 3x(positives) (at least 4) highest-loss negatives.
    neg_ce = ce.detach().masked_fill(pos, -1.0)
    k = (pos.sum(1, keepdim=True) * neg_ratio).clamp(min=4, max=a - 1)
    rank = neg_ce.argsort(1, descending=True).argsort(1)
    neg = rank < k
    l_conf = ce[pos | neg].sum() / n_pos
    l_cls = F.cross_entropy(logits.float(), label.long())
    total = l_cls + box_weight * (l_loc + l_conf)
    return total, {"cls": l_cls.item(), "loc": l_loc.item(), "conf": l_conf.item()}
