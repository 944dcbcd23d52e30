"""MTCNN cascade with batched crops (facenet-pytorch's networks and weights).

facenet-pytorch's ``detect_face`` cuts every R-Net/O-Net candidate out of the
image and resizes it with its own ``interpolate`` call: on a crowd frame that is
thousands of tiny calls, most of the detection time. Here the cascade is the
same (same networks, pyramid, thresholds, NMS and box regression; the nets from
:mod:`scanner.mtcnn_nets`, torchvision's kernels through :mod:`engines.tv_ops`, so
neither package's Python modules load), but each stage's candidates are resampled in
a single ``roi_align`` call, which averages bilinear samples per output
cell (an approximate area resize, as facenet's), and pyramid levels are made
from each other instead of from the full image.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from engines.tv_ops import batched_nms, roi_align


def _cell_boxes(reg: torch.Tensor, probs: torch.Tensor, scale: float, th: float):
    """P-Net maps -> candidates ``(K, 9)`` [x1, y1, x2, y2, score, 4 offsets] and their image.

    Each output cell is a 12x12 window at stride 2 of the image scaled by ``scale``;
    boxes are in input pixels, 1-based (pixel edges x1-1..x2) like the reference MTCNN.
    """
    mask = probs >= th  # (N, h, w)
    cells = mask.nonzero()  # (K, 3): image, row, column
    xy = cells[:, 1:].flip(1).to(reg.dtype)
    corners = torch.cat([((2 * xy + 1) / scale).floor(), ((2 * xy + 12) / scale).floor()], 1)
    offsets = reg.permute(0, 2, 3, 1)[mask]  # (K, 4), same order as ``cells``
    return torch.cat([corners, probs[mask][:, None], offsets], 1), cells[:, 0]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares of their longer side, same centre (other columns kept)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + (w - side) * 0.5
    out[:, 1] = boxes[:, 1] + (h - side) * 0.5
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _refine(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply R/O-Net box offsets ``(K, 4)``, relative to the (pixel-inclusive) box size."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, :4] = boxes[:, :4] + reg[:, :4] * torch.stack([w, h, w, h], 1)
    return out


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, th: float) -> torch.Tensor:
    """Greedy NMS per group where overlap = intersection / the smaller box (pixel-inclusive
    sides): MTCNN's last stage drops a box mostly inside a better one."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Groups (images of one batch) are shifted apart by the boxes' whole span: a shift of
    # max + 1 assumed coordinates >= 0, so a face box running past one image's top-left
    # landed on the previous image's boxes and one of them was dropped (as engines.tv_ops).
    span = boxes.max() - boxes.min().clamp(max=0) + 1
    b = (boxes + (groups.to(boxes) * span)[:, None]).cpu().numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(scores.cpu().numpy()), []
    while order.size:
        best, rest = order[-1], order[:-1]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        order = rest[w * h / np.minimum(area[best], area[rest]) <= th]
    return torch.as_tensor(np.asarray(keep, np.int64), device=boxes.device)


def _pyramid(h: int, w: int, minsize: int, factor: float) -> list[float]:
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales = []
    while minl >= 12:
        scales.append(m)
        m *= factor
        minl *= factor
    return scales


def first_level(face_px: float, minsize: int, factor: float = 0.709) -> int:
    """Finest pyramid level P-Net needs to find faces of ``face_px`` (detection px) and
    up: level k searches faces of about ``minsize / factor**k`` px."""
    ratio = face_px / minsize
    return int(np.floor(np.log(ratio) / -np.log(factor))) if ratio > 1 else 0


def _stage1(imgs: torch.Tensor, pnet, minsize: int, th: float, factor: float, first_level: int = 0):
    h, w = imgs.shape[2:]
    boxes, inds = [], []
    data = imgs
    for level, scale in enumerate(_pyramid(h, w, minsize, factor)):
        # Each level is an area resize of the previous one (not of the full image):
        # 3-4x cheaper, the same box-filter result up to rounding of level sizes.
        data = F.interpolate(data, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
        if level < first_level:  # small faces not wanted: the level is only a step to the next
            continue
        reg, probs = pnet(_nhwc((data - 127.5) * 0.0078125))
        b, i = _cell_boxes(reg, probs[:, 1], scale, th)
        pick = batched_nms(b[:, :4], b[:, 4], i, 0.5)
        boxes.append(b[pick])
        inds.append(i[pick])
    if not boxes:  # image smaller than the smallest face searched for: no pyramid level
        return torch.zeros(0, 5, device=imgs.device), torch.zeros(0, dtype=torch.long, device=imgs.device)
    boxes, inds = torch.cat(boxes), torch.cat(inds)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    rw, rh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * rw, boxes[:, 1] + boxes[:, 6] * rh,
                         boxes[:, 2] + boxes[:, 7] * rw, boxes[:, 3] + boxes[:, 8] * rh,
                         boxes[:, 4]], 1)
    return _square(boxes), inds


def _candidates(imgs, pnet, minsize: int, th: float, factor: float, first_level: int, region):
    """P-Net's candidates in the images' pixels, searched in ``region`` only (None: all)."""
    if region is None:
        return _stage1(imgs, pnet, minsize, th, factor, first_level)
    x0, y0, x1, y1 = region
    boxes, inds = _stage1(imgs[:, :, y0:y1, x0:x1], pnet, minsize, th, factor, first_level)
    return boxes + boxes.new_tensor([x0, y0, x0, y0, 0]), inds


def _crops(imgs: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int,
           samples: int, pad: bool = True) -> torch.Tensor:
    # The integer box's pixels x1-1..x2-1 (1-based boxes), i.e. pixel edges [x1-1, x2];
    # roi_align(aligned=True) takes box corners as pixel edges (aligned=False reads them
    # as pixel centres: half a pixel off). The box is NOT clamped to the image: the part
    # outside reads black (roi_align's zeros), as the reference MTCNN pads it. facenet
    # clamps and stretches what is left to the full crop, while R/O-Net offsets and
    # landmarks are still read against the whole box: a face cut 10-30 % by the frame
    # edge got landmarks 40-180 px off (a 280 px face) and a garbage aligned crop.
    # ``pad=False``: facenet's clamp (see _rnet_scores).
    b = boxes[:, :4].trunc()
    x0, y0, x1, y1 = b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]
    if not pad:
        h, w = imgs.shape[2:]
        x0, y0, x1, y1 = x0.clamp(min=0), y0.clamp(min=0), x1.clamp(max=w), y1.clamp(max=h)
    rois = torch.stack([inds.to(b.dtype), x0, y0, x1, y1], 1)
    # ``samples``^2 bilinear samples per output cell: a cheap area filter (adaptive
    # sampling, ceil(box/size)^2 samples, costs 4x more on large faces for no gain).
    out = roi_align(imgs, rois, output_size=(size, size), spatial_scale=1.0,
                    sampling_ratio=samples, aligned=True)
    return _nhwc((out - 127.5) * 0.0078125)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    # The nets run channels_last (see prepare_nets): 1.7-3x faster on CPU here.
    return x.contiguous(memory_format=torch.channels_last)


def prepare_nets(mtcnn) -> None:
    """Put facenet's P/R/O-Nets in channels_last layout (oneDNN is much faster with
    their few-channel convolutions in NHWC; outputs are unchanged)."""
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        net.to(memory_format=torch.channels_last)


def _stage2(imgs, boxes, inds, rnet, th: float):
    # R-Net sees hundreds of candidates per frame: one bilinear sample per cell keeps
    # its crops cheap; O-Net (few candidates, landmarks) gets 2x2 samples.
    if len(boxes) == 0:
        return boxes, inds
    reg, score = _rnet_scores(imgs, boxes, inds, rnet)
    keep = score > th
    boxes = torch.cat([boxes[keep, :4], score[keep, None]], 1)
    inds, reg = inds[keep], reg[keep]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes = _refine(boxes[pick], reg[pick])
    return _square(boxes), inds[pick]


def _rnet_scores(imgs, boxes, inds, rnet) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Net's box offsets (read on the padded box, as O-Net's) and face scores. A candidate
    running past the frame is scored on its padded and on its clamped crop, and keeps the
    higher. Why: searched from min_face up, P-Net may leave one coarse candidate there, which
    R-Net rejects once padded (0.28 vs 0.99 clamped on a grey d1 frame: the face was lost);
    its offsets still come from the padded crop, so the box O-Net then reads is consistent."""
    reg, prob = rnet(_crops(imgs, boxes, inds, 24, 1))
    score = prob[:, 1]
    h, w = imgs.shape[2:]
    b = boxes[:, :4].trunc()
    out = (b[:, 0] < 1) | (b[:, 1] < 1) | (b[:, 2] > w) | (b[:, 3] > h)
    if out.any():
        _, clamped = rnet(_crops(imgs, boxes[out], inds[out], 24, 1, pad=False))
        score = score.clone()
        score[out] = torch.maximum(score[out], clamped[:, 1])
    return reg, score


def _stage3(imgs, boxes, inds, onet, th: float):
    if len(boxes) == 0:
        return boxes, inds, torch.zeros(0, 5, 2)
    reg, pts, prob = onet(_crops(imgs, boxes, inds, 48, 2))
    score = prob[:, 1]
    keep = score > th
    boxes = torch.cat([boxes[keep, :4], score[keep, None]], 1)
    inds, reg, pts = inds[keep], reg[keep], pts[keep]
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    px = w[:, None] * pts[:, :5] + boxes[:, 0:1] - 1
    py = h[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1
    points = torch.stack([px, py], 2)
    boxes = _refine(boxes, reg)
    pick = _nms_min(boxes[:, :4], boxes[:, 4], inds, 0.7)
    return boxes[pick], inds[pick], points[pick]


@torch.inference_mode()
def detect(mtcnn, images: np.ndarray, minsize: int, thresholds, factor: float = 0.709,
           first_level: int = 0, region: tuple[int, int, int, int] | None = None):
    """Run the cascade on ``uint8 (B, H, W, 3)`` RGB images.

    Returns per image ``(boxes float32 (K, 5) [x1, y1, x2, y2, prob], points (K, 5, 2))``
    in the input images' pixel coordinates. ``first_level`` > 0 runs P-Net only from that
    pyramid level on (faces from ``minsize / factor**first_level`` up); the levels below
    are still built, so the searched ones are exactly those of a full search. ``region``
    ``(x0, y0, x1, y1)``, pixels: P-Net searches only that rectangle, while R-Net and O-Net
    read their candidates from the whole images: a candidate running past the rectangle
    sees the real pixels there (cut from a crop, it read black: faces found in the whole
    frame were lost; see :mod:`scanner.region`).
    """
    device = next(mtcnn.pnet.parameters()).device
    if not images.flags.writeable:  # e.g. np.asarray(PIL image): torch wants writable memory
        images = images.copy()
    # One contiguous NCHW copy: roi_align would otherwise copy the batch on every call.
    # (uint8 permute first: 4x less memory to shuffle than float, measured ~5x faster)
    imgs = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).contiguous().float()
    boxes, inds = _candidates(imgs, mtcnn.pnet, minsize, thresholds[0], factor, first_level, region)
    boxes, inds = _stage2(imgs, boxes, inds, mtcnn.rnet, thresholds[1])
    boxes, inds, points = _stage3(imgs, boxes, inds, mtcnn.onet, thresholds[2])
    boxes, inds, points = boxes.cpu().numpy(), inds.cpu().numpy(), points.cpu().numpy()
    return [(boxes[inds == b].astype(np.float32), points[inds == b].astype(np.float32))
            for b in range(len(images))]
