"""Multi-scale facial swap (MFS) after CADDM (Dong et al., "Implicit Identity Leakage", CVPR 2023).

A square region of one identity's aligned face is pasted onto another
identity's aligned face at the same crop position (both crops share the
detector's template, so eyes land on eyes). The square's side is drawn from
several scales and its position slides over the face region; the pasted region
is colour-matched to the target half of the time and its border feathered by a
few pixels, so the detector cannot rely on a hard seam or a colour jump alone.
The square is the box target of the ADM head.
"""
from __future__ import annotations

import cv2
import numpy as np

SCALES = (0.25, 0.35, 0.45, 0.6)  # square side / crop side


def _colour_match(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per-channel mean/std of ``src`` moved to ``dst``'s (float32)."""
    s, d = src.astype(np.float32), dst.astype(np.float32)
    sm, ss = s.reshape(-1, 3).mean(0), s.reshape(-1, 3).std(0) + 1e-3
    dm, ds = d.reshape(-1, 3).mean(0), d.reshape(-1, 3).std(0) + 1e-3
    return (s - sm) / ss * ds + dm


def mfs_swap(target: np.ndarray, donor: np.ndarray, lm: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Paste a square of ``donor`` onto ``target`` (both RGB ``uint8 (S, S, 3)``, same alignment).

    Args:
        lm: ``(5, 2)`` landmarks of ``target`` in crop pixels; the square's centre is
            drawn within their bounding box (grown by 20 %), so it covers the face.
    Returns:
        the fake ``uint8 (S, S, 3)`` and the box ``(x0, y0, x1, y1)`` (crop pixels, exclusive end).
    """
    size = target.shape[0]
    side = int(round(size * rng.choice(SCALES) * rng.uniform(0.9, 1.1)))
    lo, hi = lm.min(0), lm.max(0)
    grow = (hi - lo) * 0.2
    cx, cy = rng.uniform(lo - grow, hi + grow)
    x0 = int(np.clip(round(cx - side / 2), 0, size - side))
    y0 = int(np.clip(round(cy - side / 2), 0, size - side))
    x1, y1 = x0 + side, y0 + side
    patch = donor[y0:y1, x0:x1].astype(np.float32)
    if rng.random() < 0.5:
        patch = _colour_match(patch, target[y0:y1, x0:x1])
    mask = np.zeros((side, side), np.float32)
    f = int(rng.integers(0, max(1, side // 10)))  # feather width (0 = hard seam)
    mask[f:side - f, f:side - f] = 1.0
    if f:
        mask = cv2.GaussianBlur(mask, (0, 0), f / 2)
    out = target.astype(np.float32)
    out[y0:y1, x0:x1] = patch * mask[..., None] + out[y0:y1, x0:x1] * (1 - mask[..., None])
    return np.clip(np.round(out), 0, 255).astype(np.uint8), (x0, y0, x1, y1)
