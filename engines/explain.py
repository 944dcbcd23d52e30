"""Grad-CAM heatmaps for any detector with a convolutional feature map.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017: the feature map ``A (C, h, w)`` of a
chosen layer is weighted per channel by the spatial mean of the gradient of the
target score, summed over channels and rectified. The target is the detector's
logit of P(fake) (:meth:`Detector.fake_logit`), so hot regions are the ones that
push the verdict towards *fake*. The layer is part of the detector's
description (:attr:`Detector.cam_layer`).

Runs the eager PyTorch module (compiled engines keep no gradients); the
detector's parameters are not modified and need no gradients themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .detector import Detector
from .errors import DfscanError


class ExplainError(DfscanError):
    """The detector cannot be explained this way (message says why)."""


@dataclass
class CamResult:
    """Grad-CAM of a batch of crops.

    Attributes:
        heatmap: ``float32 (N, S, S)`` in [0, 1], crop pixels (bilinear upsampling
            of the ``h x w`` map), each map divided by its own maximum (all zeros
            when nothing pushes towards fake).
        p_fake: ``float32 (N,)`` P(fake) of the same forward pass.
        peak: ``float32 (N,)`` maximum of the rectified map before normalisation
            (compare strength across crops of one detector).
    """

    heatmap: torch.Tensor
    p_fake: torch.Tensor
    peak: torch.Tensor


def cam_module(detector: Detector) -> nn.Module:
    """The submodule named by ``detector.cam_layer`` (raises :class:`ExplainError`)."""
    name = getattr(detector, "cam_layer", None)
    if not name:
        raise ExplainError(f"detector {detector.name!r} has no convolutional feature map to "
                           "explain (no cam_layer in its description)")
    try:
        return detector.get_submodule(name)
    except AttributeError as e:
        raise ExplainError(f"detector {detector.name!r}: cam_layer {name!r} is not a submodule") from e


def gradcam(detector: Detector, crops: torch.Tensor) -> CamResult:
    """Grad-CAM of ``crops`` (``float32 (N, 3, S, S)`` RGB [0, 255], on the detector's device).

    Returns a :class:`CamResult`; the feature map must be 4-D ``(N, C, h, w)``.
    """
    module = cam_module(detector)
    captured: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        captured.append(out[0] if isinstance(out, (tuple, list)) else out)

    handle = module.register_forward_hook(hook)
    was_training = detector.training
    detector.eval()
    try:
        with torch.enable_grad():
            x = crops.detach().float().requires_grad_(True)  # a graph even with frozen weights
            out = detector(x)
            logit = detector.fake_logit(out)
            if not captured or captured[-1].dim() != 4:
                raise ExplainError(f"cam_layer {detector.cam_layer!r} of {detector.name!r} did not "
                                   "produce a (N, C, h, w) feature map")
            fmap = captured[-1]
            (grad,) = torch.autograd.grad(logit.sum(), fmap)
    finally:
        handle.remove()
        detector.train(was_training)
    return _combine(fmap.detach().float(), grad.float(), detector, out, crops.shape[-2:])


def _combine(fmap: torch.Tensor, grad: torch.Tensor, detector: Detector, out, size) -> CamResult:
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): channel importance
    cam = F.relu((weights * fmap).sum(1, keepdim=True))  # (N, 1, h, w)
    peak = cam.amax(dim=(1, 2, 3))
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    norm = cam.amax(dim=(1, 2), keepdim=True)
    heat = torch.where(norm > 0, cam / norm.clamp_min(1e-12), torch.zeros_like(cam))
    with torch.no_grad():
        p = detector.p_fake(out).float()
    return CamResult(heat.clamp(0, 1).cpu(), p.detach().cpu(), peak.cpu())
