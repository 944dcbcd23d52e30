"""Base class of every detector.

A :class:`Detector` is an ``nn.Module`` whose ``forward`` takes aligned crops as
``float32 (N, 3, S, S)``, RGB, [0, 255] (see :mod:`engines.spec`) and returns the
raw network output: a tensor, or a tuple of tensors whose first element carries
the score. ``p_fake`` turns that output into P(fake) in [0, 1]. Keeping the
normalisation inside ``forward`` lets every engine compile the whole contract.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .errors import DetectorOutputError
from .spec import InputSpec

Output = torch.Tensor | Sequence[torch.Tensor]


class Detector(nn.Module):
    """Deepfake detector: normalisation + network + score meaning.

    Subclasses implement :meth:`network` (on normalised input) and may override
    :meth:`p_fake` when the output is not a single logit of P(fake).
    """

    spec: InputSpec
    threshold: float = 0.5
    # Dotted name of the submodule whose output is the last convolutional feature
    # map ``(N, C, h, w)``, used for Grad-CAM (:mod:`engines.explain`); None when
    # the network has no such map (e.g. a linear probe on a transformer).
    cam_layer: str | None = None

    def __init__(self, spec: InputSpec, threshold: float = 0.5):
        super().__init__()
        self.spec = spec
        self.threshold = float(threshold)
        order = [2, 1, 0] if spec.channel_order == "BGR" else [0, 1, 2]
        self.register_buffer("_order", torch.tensor(order), persistent=False)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        # Fold scale and mean/std into one multiply-add: x*scale/std - mean/std.
        self.register_buffer("_mul", spec.scale / std, persistent=False)
        self.register_buffer("_add", -mean / std, persistent=False)
        # Filled by the registry: name and a hash of the loaded weights.
        self.name = type(self).__name__
        self.weights_hash = "random-init"
        self.weights_source = ""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` RGB [0, 255] -> network input per :attr:`spec`."""
        if self.spec.channel_order == "BGR":
            x = x.flip(1)
        return x * self._mul.to(x.dtype) + self._add.to(x.dtype)

    def network(self, x: torch.Tensor) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Output:
        return self.network(self.normalize(x))

    @staticmethod
    def primary(out: Output) -> torch.Tensor:
        """The score-carrying tensor of a raw output."""
        return out if isinstance(out, torch.Tensor) else out[0]

    def p_fake(self, out: Output) -> torch.Tensor:
        """Raw output -> P(fake), ``float32 (N,)`` in [0, 1].

        Default: the primary output is one logit of P(fake) per crop.
        """
        return torch.sigmoid(self.primary(out).float().reshape(-1))

    def fake_logit(self, out: Output) -> torch.Tensor:
        """Raw output -> logit of P(fake), ``float32 (N,)``, differentiable.

        The target of gradient explanations: unlike P(fake) it does not saturate.
        """
        return self.primary(out).float().reshape(-1)

    def extras(self, out: Output, p_fake: torch.Tensor) -> list[dict[str, Any]]:
        """Per-crop extra results (e.g. artifact boxes); empty by default."""
        return [{} for _ in range(p_fake.shape[0])]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "weights_source": self.weights_source,
            "threshold": self.threshold,
            "cam_layer": self.cam_layer,
            "input": self.spec.to_dict(),
        }


def _finite_rows(primary: torch.Tensor, n: int) -> torch.Tensor:
    """``bool (n,)`` on the CPU: whether every value of each crop's primary output is finite."""
    if n == 0 or primary.ndim == 0 or primary.shape[0] != n:  # not batch-first: p_fake's shape check rules
        return torch.ones(n, dtype=torch.bool)  # n == 0: reshape(0, -1) is ambiguous, a RuntimeError
    return torch.isfinite(primary.detach().reshape(n, -1)).all(1).cpu()


def scores_for(detector: Detector, out: Output, n: int) -> torch.Tensor:
    """``detector.p_fake(out)`` as ``float32 (n,)``, one P(fake) in [0, 1] per crop, on the CPU.

    Scores are paired with faces by position, so any other shape is an error: a
    network with two logits per crop and the default ``p_fake`` gives ``2n`` values,
    which would silently pair face k with another crop's logit, and ``n - 1`` would
    leave a face unscored.
    """
    p = detector.p_fake(out)
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != (n,):
        got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise DetectorOutputError(f"detector {detector.name} returned scores of shape {got} for {n} "
                                  f"face crop(s); expected ({n},): one P(fake) per crop")
    p = p.float().cpu().clone()
    # A raw output of +-inf is an overflow (fp16: a value past 65504), never a network's answer,
    # yet sigmoid/softmax turn it into a finite 0 or 1: a confident verdict ('real' at -inf).
    p[~_finite_rows(detector.primary(out), n)] = float("nan")
    finite = p[torch.isfinite(p)]  # NaN/inf are dropped and counted downstream
    if len(finite) and (finite.min() < 0 or finite.max() > 1):
        # e.g. raw logits: every verdict would compare them with a P(fake) threshold
        raise DetectorOutputError(f"detector {detector.name} returned scores outside [0, 1] "
                                  f"({float(finite.min()):.4g} to {float(finite.max()):.4g}): "
                                  "p_fake must return probabilities")
    return p
