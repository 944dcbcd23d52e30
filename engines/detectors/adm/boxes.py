"""Map boxes from an aligned crop back to the video frame.

Conventions:

* ``M_frame_to_crop`` is the ``(2, 3)`` affine that the aligner used, in the
  OpenCV ``warpAffine`` sense: it maps a frame pixel-*centre* coordinate
  ``(x, y)`` (pixel ``(0, 0)`` has its centre at ``(0, 0)``) to crop
  pixel-centre coordinates.
* Boxes are ``(x1, y1, x2, y2)`` in pixel *edges*: ``(0, 0, S, S)`` is the
  whole ``S x S`` crop. With ``pixel_edges=True`` (default) the half-pixel shift
  between the two conventions is applied on both sides.

For a similarity or any other affine transform the image of a box is a
parallelogram; the result is its axis-aligned bounding box (min/max of the four
mapped corners).
"""
from __future__ import annotations

import torch

from ...errors import DfscanError


def invert_affine_2x3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(..., 2, 3)`` affine matrices, as ``(..., 2, 3)`` (computed in float64)."""
    if m.shape[-2:] != (2, 3):
        raise DfscanError(f"expected (..., 2, 3) affine matrices, got {tuple(m.shape)}")
    m64 = m.to(torch.float64)
    a = m64[..., :2]
    a_inv = torch.linalg.inv(a)
    t = -(a_inv @ m64[..., 2:])
    return torch.cat([a_inv, t], dim=-1)


def map_boxes_to_frame(boxes: torch.Tensor, M_frame_to_crop: torch.Tensor,
                       pixel_edges: bool = True) -> torch.Tensor:
    """Crop boxes -> frame boxes through the inverse alignment transform.

    Args:
        boxes: ``(M, 4)`` ``(x1, y1, x2, y2)`` in crop pixels (any float dtype).
        M_frame_to_crop: ``(2, 3)`` affine frame -> crop (see module doc).
        pixel_edges: boxes use pixel-edge coordinates (the ADM's convention).
    Returns:
        ``float32 (M, 4)`` ``(x1, y1, x2, y2)`` axis-aligned bounding boxes of
        the mapped boxes, in frame pixels, same convention as the input.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise DfscanError(f"expected (M, 4) boxes, got {tuple(boxes.shape)}")
    minv = invert_affine_2x3(torch.as_tensor(M_frame_to_crop).to(boxes.device))
    b = boxes.to(torch.float64)
    shift = 0.5 if pixel_edges else 0.0
    x1, y1, x2, y2 = (b - shift).unbind(-1)
    # Corners (M, 4, 2): every box corner, in homogeneous form with a 1.
    xs = torch.stack([x1, x2, x2, x1], dim=-1)
    ys = torch.stack([y1, y1, y2, y2], dim=-1)
    pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    mapped = pts @ minv.transpose(0, 1) + shift  # (M, 4, 2)
    lo = mapped.amin(dim=1)
    hi = mapped.amax(dim=1)
    return torch.cat([lo, hi], dim=-1).float()
