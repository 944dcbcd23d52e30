"""Eager PyTorch engine: fp32 / fp16 / bf16, optionally channels_last.

The detector is deep-copied so the caller's fp32 module (the parity reference)
is never converted in place.
"""
from __future__ import annotations

import copy

import torch

from ..detector import Detector, Output
from ..errors import EngineUnavailable
from .base import Engine, EngineConfig


def prepared_module(detector: Detector, cfg: EngineConfig) -> torch.nn.Module:
    """Copy of ``detector`` in eval mode on ``cfg.device`` in ``cfg.dtype`` / layout."""
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable(f"device {cfg.device} requested but CUDA is not available")
    if cfg.precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EngineUnavailable(f"bf16 is not supported on {torch.cuda.get_device_name(dev)}")
    model = copy.deepcopy(detector).eval().to(dev, cfg.dtype)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prepare_input(x: torch.Tensor, cfg: EngineConfig) -> torch.Tensor:
    """float32 crops -> the engine's dtype and memory layout."""
    x = x.to(cfg.dtype)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class EagerEngine(Engine):
    kind = "eager"
    fixed_shapes = False  # padding would only waste work: eager has no compiled shapes

    def __init__(self, detector: Detector, cfg: EngineConfig):
        super().__init__(detector, cfg)
        self.model: torch.nn.Module | None = None

    def _build(self) -> None:
        self.model = prepared_module(self.detector, self.cfg)

    def _run(self, x: torch.Tensor) -> Output:
        return self.model(prepare_input(x, self.cfg))
