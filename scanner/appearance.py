"""A face's appearance, so that a face track stays one person across a cut.

Tracks link faces of successive sampled frames by box overlap
(:class:`scanner.live.tracker.IoUTracker`). At a cut from one person to another framed
the same way (an interview, a newsroom, two talking-head clips joined) the boxes overlap
and both people became one track, whose score then mixed a fake face with a real one.
A face's *look* here is the colour (HSV) histogram of the square around its box
(``MARGIN`` times its longer side: hair, skin, collar), and a link whose looks differ by
more than ``SAME_FACE_DISTANCE`` (Bhattacharyya/Hellinger distance) is refused.

Calibrated by ``python bench/track_appearance.py`` (``bench/results/track_appearance.json``)
on the shared training clips at 32 sampled frames (evaluation footage not used): of 1,825
links the IoU tracker makes between samples of one person, none is refused (largest
distance 0.30, small faces of a 1080p crowd); of junctions between clips of different
people, 99.5 % are refused across sources and 41 % within one studio (GRID speakers, MEAD
actors: same backdrop, same framing, similar colouring). It is colour, not identity: two
people who look alike in colour stay one track, as before this check.

A face that moved too far between samples to overlap its track is linked on look and
plausible motion alone (:class:`scanner.live.tracker.Relink`, file scans only), under the
stricter ``RELINK_DISTANCE``: same bench, with each clip's second half placed 1.5 face sizes
from the first (no overlap), 7 % of same-studio cuts (37 of 514) and 0.15 % across sources
(4 of 2,584) pass it (0.25 would pass 18 %, 0.15 would break 5 % of one person's links
where 0.2 breaks 1.2 %); the closest two faces of one sample are 0.37 apart.
"""
from __future__ import annotations

import numpy as np

MARGIN = 1.5
SIDE = 48  # pixels of the square the histogram is taken from (box-filtered)
BINS = (12, 4, 4)  # hue (full circle), saturation, value
SAME_FACE_DISTANCE = 0.35
# Faces that moved too far to overlap their track (scanner.live.tracker.Relink) are linked
# on look and motion alone, so a stricter limit: 7 % of same-studio cuts pass it, where
# SAME_FACE_DISTANCE lets 62 % through at the same place (module doc).
RELINK_DISTANCE = 0.2


def look(image: np.ndarray, box) -> np.ndarray | None:
    """Appearance of the face at ``box`` (xyxy pixels of ``image``) in ``image``
    (RGB ``uint8 (H, W, 3)``): a ``float32 (12*4*4,)`` hue x saturation x value histogram
    summing to 1, or None when the box is not finite or its square lies outside the image."""
    from PIL import Image  # Pillow's HSV and box filter; cv2 would add 0.2 s to each scan's start

    x0, y0, x1, y1 = (float(v) for v in box[:4])
    if not all(map(np.isfinite, (x0, y0, x1, y1))):
        return None  # no look rather than a failed row (or a failed live batch)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * MARGIN / 2
    h, w = image.shape[:2]
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    if right - left < 2 or bottom - top < 2:
        return None
    step = max(1, min(right - left, bottom - top) // (2 * SIDE))  # every step-th pixel: 3x cheaper on big faces
    patch = Image.fromarray(np.ascontiguousarray(image[top:bottom:step, left:right:step]))
    hsv = np.asarray(patch.resize((SIDE, SIDE), Image.Resampling.BOX).convert("HSV")).astype(np.int32)
    hue, sat, val = (hsv[..., k] * BINS[k] // 256 for k in range(3))
    hist = np.bincount(((hue * BINS[1] + sat) * BINS[2] + val).ravel(), minlength=int(np.prod(BINS)))
    return (hist / hist.sum()).astype(np.float32)


def face_look(frame, box) -> np.ndarray | None:
    """:func:`look` of a face of a :class:`scanner.picture.Frame` (``box`` in ``frame.image``
    pixels), taken from the detector's downscaled copy when there is one: cheaper, and on
    the calibration clips no different from the full picture's."""
    if frame.small is None:
        return look(frame.image, box)
    return look(frame.small, np.asarray(box[:4], np.float32) * frame.scale)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hellinger distance (OpenCV's ``HISTCMP_BHATTACHARYYA`` for histograms summing to 1)
    between looks ``a (N, D)`` and ``b (M, D)`` -> ``(N, M)`` float32 in [0, 1]."""
    bc = np.sqrt(np.asarray(a, np.float32)) @ np.sqrt(np.asarray(b, np.float32)).T
    return np.sqrt(np.clip(1.0 - bc, 0.0, 1.0)).astype(np.float32)
