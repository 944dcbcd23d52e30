"""``dfscan eval --perturb``: degrade every aligned face crop before the detector sees it.

The perturbations (:mod:`.augment`) are applied to each crop as an 8-bit
image, in the order given, with a generator seeded by the seed and the crop's
own pixels: noise is reproducible whatever order the scan's worker threads
reach the crops in (one generator shared by the threads gave each run other noise).
Applying them to the aligned crop rather than the frame keeps face detection
and alignment identical between clean and perturbed runs, so a change in AUC
comes from the detector alone.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from .augment import Perturb, apply_all


def perturb_crops(x: torch.Tensor, perturbs: list[Perturb], seed: int = 0) -> torch.Tensor:
    """``float32 (N, 3, S, S)`` RGB [0, 255] -> the same, perturbed (same device and dtype)."""
    u8 = x.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([apply_all(im, perturbs, np.random.default_rng([seed, zlib.crc32(im)]))
                    for im in map(np.ascontiguousarray, u8)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)


class Perturbed:
    """Wraps an engine or detector: ``__call__`` perturbs crops first; other attributes pass through."""

    def __init__(self, inner, perturbs: list[Perturb], seed: int = 0):
        self._inner, self._perturbs, self._seed = inner, perturbs, seed

    def __call__(self, x: torch.Tensor):
        return self._inner(perturb_crops(x, self._perturbs, self._seed))

    def __getattr__(self, name):
        return getattr(self._inner, name)
