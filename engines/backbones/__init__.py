"""Frozen feature backbones loaded from local checkpoint files (no hub access).

``create_backbone(source, path)`` returns ``(module, spec)``: ``module`` maps a
*normalised* ``float32 (N, 3, S, S)`` batch to ``float32 (N, D)`` features and
carries ``.feature_dim`` and ``.info`` (:class:`BackboneInfo`); ``spec`` is the
:class:`~engines.spec.InputSpec` that turns RGB [0, 255] crops into that input
(use :func:`normalize` or a :class:`~engines.detector.Detector`).

Sources (``--backbone``):

=============  ====================================================================
torchvision    plain torchvision state dict (also ``barlowtwins``, ``dino``, ``byol``)
moco           MoCo v1/v2 checkpoint: ``state_dict`` with ``module.encoder_q.``
mocov3         MoCo v3 checkpoint: ``state_dict`` with ``module.base_encoder.``
simclr         SimCLR v1 converted to PyTorch: ``state_dict`` with torchvision names
simclrv2       SimCLRv2 converted to PyTorch: ``resnet`` dict with ``net.*`` names
solo           solo-learn checkpoint: ``state_dict`` with ``backbone.``
checkpoint     any training checkpoint with the encoder under a common prefix
facenet        facenet-pytorch InceptionResnetV1 (VGGFace2 / CASIA-WebFace file)
timm           ``timm`` model named by ``arch`` with a local checkpoint
=============  ====================================================================

Projector, predictor, momentum-encoder and queue keys are dropped; any other
key that does not fit, or any missing key, raises :class:`WeightsError`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from ..spec import InputSpec
from .sources import RESNET_ARCHS, RESNET_FORMATS, BackboneInfo, build_facenet, build_resnet, build_timm

__all__ = ["create_backbone", "list_sources", "normalize", "BackboneInfo", "RESNET_ARCHS"]


def list_sources() -> list[str]:
    return sorted([*RESNET_FORMATS, "facenet", "timm"])


def default_arch(source: str) -> str:
    return {"facenet": "inception_resnet_v1", "timm": ""}.get(source, "resnet50")


def create_backbone(source: str, path: str | Path, arch: str | None = None,
                    size: int | None = None) -> tuple[nn.Module, InputSpec]:
    """Build a frozen backbone in eval mode from a local checkpoint.

    Args:
        source: checkpoint format / training method (see module docstring).
        path: local weights file (``.pth``/``.pt``/``.tar``/``.safetensors``).
        arch: ResNet depth (``resnet18`` .. ``resnet152``, default ``resnet50``),
            or the timm model name for ``source='timm'``.
        size: crop side in pixels (default 224; facenet 160; timm from its config).
    """
    arch = arch or default_arch(source)
    if source in RESNET_FORMATS:
        model, spec, info = build_resnet(source, path, arch, size)
    elif source == "facenet":
        model, spec, info = build_facenet(source, path, arch, size)
    elif source == "timm":
        if not arch:
            raise WeightsError("timm backbones need a model name: --arch NAME")
        model, spec, info = build_timm(source, path, arch, size)
    else:
        raise WeightsError(f"unknown backbone source {source!r}; known: {', '.join(list_sources())}")
    model.info = info
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), spec


def normalize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """RGB [0, 255] ``(N, 3, S, S)`` -> the backbone's normalised input per ``spec``."""
    if spec.channel_order == "BGR":
        x = x.flip(1)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * spec.scale - mean) / std
