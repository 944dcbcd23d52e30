"""Face alignment: 5-point similarity fit + kornia ``warp_affine``.

Coordinate convention everywhere: pixel centres at integer coordinates, ``x``
right, ``y`` down (OpenCV's convention); matrices are ``(2, 3)`` and map
*frame* pixels to *crop* pixels. ``align_corners=True`` is pinned in kornia
because that is the setting under which its normalised grid reproduces this
pixel-centre convention.

Only a region of interest around each face is converted to float and moved to
the device, so aligning a face costs the same for a 4K frame as for a 480p one.
When the face is much larger than the crop, the region is first shrunk with an
antialiased resize so the bilinear warp does not alias. A detector whose spec names ``via``
(trained on area-resized cache crops) gets its crops that way too (:func:`area_resize`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

from engines.spec import InputSpec

ALIGN_CORNERS = True


def umeyama_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation) ``src -> dst``.

    Umeyama (1991), batched. Args: ``src`` ``(K, P, 2)``, ``dst`` ``(P, 2)`` or
    ``(K, P, 2)``, float. Returns ``(K, 2, 3)`` float32 matrices.
    """
    src = src.to(torch.float64)
    dst = dst.to(torch.float64).expand_as(src)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s_c, d_c = src - mu_s, dst - mu_d
    n = src.shape[1]
    cov = d_c.transpose(1, 2) @ s_c / n  # (K, 2, 2)
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 1] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))  # no reflections
    d[d == 0] = 1
    rot = u @ torch.diag_embed(d) @ vh
    var_s = (s_c ** 2).sum((1, 2)) / n
    scale = (sig * d).sum(1) / var_s.clamp_min(1e-12)
    a = rot * scale[:, None, None]
    t = mu_d.transpose(1, 2) - a @ mu_s.transpose(1, 2)
    return torch.cat([a, t], 2).to(torch.float32)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(K, 2, 3)`` affine matrices."""
    a, t = m[:, :, :2], m[:, :, 2:]
    ai = torch.linalg.inv(a)
    return torch.cat([ai, -ai @ t], 2)


def apply_affine(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply ``(K, 2, 3)`` matrices to points ``(K, P, 2)``."""
    return pts @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer ∘ inner`` for single ``(2, 3)`` matrices."""
    a = outer[:, :2] @ inner[:, :2]
    t = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return torch.cat([a, t[:, None]], 1)


def _roi(m_inv: torch.Tensor, size: int, h: int, w: int, pad: int = 2) -> tuple[int, int, int, int]:
    corners = torch.tensor([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]],
                           dtype=m_inv.dtype)
    src = corners @ m_inv[:, :2].T + m_inv[:, 2]
    x0 = max(0, math.floor(src[:, 0].min().item()) - pad)
    y0 = max(0, math.floor(src[:, 1].min().item()) - pad)
    x1 = min(w, math.ceil(src[:, 0].max().item()) + pad + 1)
    y1 = min(h, math.ceil(src[:, 1].max().item()) + pad + 1)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _warp_one(image, m: torch.Tensor, size: int, device, antialias: bool) -> torch.Tensor:
    """Crop the ROI of one face from a ``uint8 (H, W, 3)`` frame and warp it."""
    h, w = image.shape[:2]
    scale = float(torch.linalg.det(m[:, :2]).abs().sqrt())
    shrink = antialias and 0 < scale < 0.5
    # Why a wider margin for a strong shrink: a crop edge sample ``pad`` ROI px inside the
    # patch lands at (pad + 0.5) * 2 * scale - 0.5 px of the shrunk patch, outside it (and
    # blended with black) unless pad >= 0.25 / scale - 0.5; 2 px hold down to scale 0.1.
    pad = max(2, math.ceil(0.25 / scale)) if shrink else 2
    x0, y0, x1, y1 = _roi(invert_affine(m[None])[0], size, h, w, pad)
    if x1 <= x0 or y1 <= y0 or x0 >= w or y0 >= h:
        return torch.zeros(3, size, size, device=device)
    patch = torch.as_tensor(np.ascontiguousarray(image[y0:y1, x0:x1]), device=device).permute(2, 0, 1)[None]
    # Frame->crop becomes ROI->crop by shifting the origin to the ROI corner.
    shift = torch.tensor([[1.0, 0.0, x0], [0.0, 1.0, y0]])
    mm = _compose(m, shift)
    if shrink:
        # Shrink to ~2x the crop's sampling density with an antialiased resize, then
        # warp. Half-pixel convention of align_corners=False interpolation:
        # x_small = (x + 0.5) * r - 0.5.
        # On the CPU the resize runs on uint8 (torch's vectorised uint8 path: 4x faster than
        # on float, results within one grey level); CUDA has no uint8 kernel for it.
        if patch.device.type != "cpu":
            patch = patch.float()
        r = 2.0 * scale
        ph, pw = max(1, round(patch.shape[2] * r)), max(1, round(patch.shape[3] * r))
        patch = F.interpolate(patch, size=(ph, pw), mode="bilinear", antialias=True, align_corners=False)
        rx, ry = pw / (x1 - x0), ph / (y1 - y0)
        small_to_roi = torch.tensor([[1 / rx, 0.0, 0.5 / rx - 0.5], [0.0, 1 / ry, 0.5 / ry - 0.5]])
        mm = _compose(mm, small_to_roi)
    out = warp_affine(patch.float(), mm[None].to(device), dsize=(size, size), mode="bilinear",
                      padding_mode="zeros", align_corners=ALIGN_CORNERS)
    return out[0]


def align_faces(images: Sequence[np.ndarray], frame_idx: Sequence[int], landmarks, spec: InputSpec,
                device: str | torch.device = "cpu", antialias: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Align faces to ``spec.template``.

    Args:
        images: RGB ``uint8 (H, W, 3)`` full-resolution frames.
        frame_idx: for each face, the index into ``images``.
        landmarks: ``(K, 5, 2)`` (x, y) frame pixels, array or tensor.
        spec: the detector's input spec (crop size + landmark template).
        device: where crops are produced (the model's device).
        antialias: pre-shrink large faces with an antialiased resize.

    Returns:
        crops ``float32 (K, 3, S, S)`` RGB in [0, 255] on ``device``, and the
        frame->crop matrices ``float32 (K, 2, 3)`` (CPU).
    """
    if spec.via is not None and spec.via > spec.size:  # as training made the crops (InputSpec.via)
        return _via(images, frame_idx, landmarks, spec, device, antialias)
    lm = torch.as_tensor(np.asarray(landmarks, np.float32)).reshape(-1, 5, 2)
    size = spec.size
    if lm.shape[0] == 0:
        return torch.zeros(0, 3, size, size, device=device), torch.zeros(0, 2, 3)
    mats = umeyama_similarity(lm, spec.template_tensor())
    crops = [_warp_one(images[i], mats[k], size, device, antialias) for k, i in enumerate(frame_idx)]
    return torch.stack(crops), mats


def _via(images, frame_idx, landmarks, spec: InputSpec, device, antialias: bool):
    """``spec.via`` px crops, rounded to uint8, area-resized to ``spec.size``; the matrices map
    frame pixels to the final crop (pixel centres: ``x = (x_via + 0.5) * r - 0.5``)."""
    r = spec.size / spec.via
    big = dataclasses.replace(spec, size=spec.via, via=None,
                              template=tuple(((x + 0.5) / r - 0.5, (y + 0.5) / r - 0.5) for x, y in spec.template))
    crops, mats = align_faces(images, frame_idx, landmarks, big, device, antialias)
    mats = mats * r
    mats[:, :, 2] += 0.5 * r - 0.5
    return area_resize(crops.round().clamp(0, 255), spec.size), mats


def _area_weights(n_in: int, n_out: int, device) -> torch.Tensor:
    """``(n_out, n_in)`` weights of a box-filter downscale: each output pixel averages the input
    span it covers, partly covered pixels by their share (OpenCV's INTER_AREA)."""
    s = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64)[:, None] * s
    j = torch.arange(n_in, dtype=torch.float64)[None]
    overlap = (torch.minimum(lo + s, j + 1) - torch.maximum(lo, j)).clamp_min(0)
    return (overlap / s).to(torch.float32).to(device)


def area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale ``float32 (K, C, H, W)`` [0, 255] images to ``(K, C, size, size)`` as OpenCV's
    ``INTER_AREA`` does on uint8 images (the same values at 224 -> 160 and at 2x; within one grey
    level at other integer factors), on ``x``'s device."""
    wy, wx = _area_weights(x.shape[2], size, x.device), _area_weights(x.shape[3], size, x.device)
    y = wy @ x @ wx.T
    if x.shape[2] % size == 0 and x.shape[3] % size == 0:  # OpenCV's integer-factor path rounds halves up
        return torch.floor(y + 0.5).clamp(0, 255)
    return y.round().clamp(0, 255)  # its general path rounds halves to even, as torch does
