"""Shortcut baselines: image statistics scored like a detector, for evaluations only.

A detection claim means little if a statistic that knows nothing about
manipulation separates the same clips as well. ``baseline_sharpness`` scores
how sharp a face is, nothing else; run beside real detectors (``dfscan eval``,
``bench/validation.py eval``) it shows how far a validation set can be
separated by image quality alone. Its verdicts mean nothing about fakes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..detector import Detector
from ..errors import WeightsError
from ..registry import register_detector
from ..spec import InputSpec

# ITU-R BT.601 luma weights (the Y of the YUV that video codecs carry).
_LUMA = (0.299, 0.587, 0.114)
# Laplacian variance (luma in 0..255 units) that maps to P = 0.5. Only the ranking matters
# for AUC; 100 is roughly the middle of face crops at scan resolution.
_REF_VAR = 100.0


class SharpnessBaseline(Detector):
    """Sharpness of the face: log variance of the Laplacian of luma over the crop's
    central ``inner`` share (the face, not the background), minus ``log(_REF_VAR)``.

    Input: aligned crops ``float32 (N, 3, S, S)`` RGB [0, 255]; output: ``float32 (N,)``,
    one "logit" per crop; higher = sharper. No weights: the result depends on pixels only.
    """

    def __init__(self, size: int = 128, inner: float = 0.75):
        super().__init__(InputSpec(size=size, scale=1.0, output="log Laplacian variance of luma (sharpness)"))
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("_lap", k.view(1, 1, 3, 3), persistent=False)
        self.register_buffer("_luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)
        self.margin = int(round(size * (1 - inner) / 2))

    def network(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the engine's precision: the variance of a sharp face's Laplacian
        # (0..255 luma: up to ~1e6) overflows fp16 (65504) to inf, read as P = 1.0.
        dtype, x = x.dtype, x.float()
        y = (x * self._luma.float()).sum(1, keepdim=True)
        m = self.margin
        if m:
            y = y[:, :, m:-m, m:-m]
        lap = F.conv2d(y, self._lap.float())
        var = lap.flatten(1).var(1, unbiased=False)
        return (torch.log(var + 1e-6) - math.log(_REF_VAR)).to(dtype)


@register_detector(
    "baseline_sharpness",
    description="shortcut baseline for evaluations: scores face sharpness, not manipulation",
    shortcut=True,
)
def baseline_sharpness(weights=None, **kw) -> Detector:
    if weights is not None:
        # Ignored, the file's hash still became the rows' weights_hash: a scan that loaded
        # no weights named some (and `--resume` / reports matched on them).
        raise WeightsError(f"baseline_sharpness takes no weights (got {weights}): it scores pixels only")
    return SharpnessBaseline(**kw)
