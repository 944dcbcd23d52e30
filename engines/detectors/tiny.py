"""Tiny ``test_*`` detectors: real code paths, seconds to run, no weights file.

They are deterministic (seeded init) so tests and engine parity checks are
repeatable; they carry no meaning about real or fake.
"""
from __future__ import annotations

import torch
from torch import nn

from ..detector import Detector
from ..registry import load_weights, register_detector
from ..spec import ARCFACE_112, InputSpec, scaled_template


class TinyCNN(Detector):
    """Two conv layers + linear; one logit of P(fake)."""

    cam_layer = "body.4"  # ReLU after the second conv

    def __init__(self, size: int = 64):
        super().__init__(InputSpec(size=size, template=scaled_template(ARCFACE_112, 112, size, 0.1)))
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 1),
        )

    def network(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


def _seeded(cls, seed: int, weights=None, **kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**kw)
    if weights is not None:
        load_weights(model, weights)
    return model


@register_detector("test_tiny", description="tiny CNN for tests (64x64, random init)")
def test_tiny(weights=None, **kw) -> Detector:
    return _seeded(TinyCNN, 1234, weights, **kw)
