"""torchvision's ``roi_align`` and ``nms`` kernels, without importing ``torchvision.ops``.

``import torchvision.ops`` imports torchvision's model zoo and ``torch._dynamo``
(about 1 s of every process start here). The kernels themselves live in
torchvision's compiled extension, which registers ``torch.ops.torchvision.*`` when
loaded; that is all the face detector needs. If the extension cannot be found
under its usual name, the package is imported the ordinary (slow) way instead.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_ready = False


def _ops():
    global _ready
    if not _ready:
        try:
            spec = importlib.util.find_spec("torchvision")
            root = Path(next(iter(spec.submodule_search_locations)))
            torch.ops.load_library(str(sorted(root.glob("_C*.so"))[0]))
            torch.ops.torchvision.nms  # noqa: B018 - raises if the kernels did not register
        except Exception:  # noqa: BLE001 - any layout we do not know: the package registers them
            import torchvision.ops  # noqa: F401
        _ready = True
    return torch.ops.torchvision


def roi_align(images: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align`` for ``rois`` as ``float (K, 5)`` ``[batch index, x1, y1, x2, y2]``.

    Returns ``(K, C, output_size[0], output_size[1])``.
    """
    return _ops().roi_align(images, rois.to(images.dtype), spatial_scale, output_size[0], output_size[1],
                            sampling_ratio, aligned)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices kept by NMS run separately per group, by decreasing score (as
    ``torchvision.ops.batched_nms``): boxes of different groups are shifted apart so
    that one NMS call never lets them overlap.

    ``boxes``: ``(K, 4)`` ``(x1, y1, x2, y2)``, any sign (ADM boxes are decoded unclipped)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # torchvision shifts by max + 1, which assumes coordinates >= 0: a box at negative
    # coordinates landed on the previous group's boxes and suppressed one of another crop.
    # The shift must span max - min; with no negative coordinate it is torchvision's.
    span = boxes.max() - boxes.min().clamp(max=0) + 1
    shift = groups.to(boxes) * span
    return _ops().nms(boxes + shift[:, None], scores, iou)
