"""Backbone sources: architecture + checkpoint format + input normalisation.

Every source builds a frozen feature extractor ``nn.Module`` mapping a
*normalised* ``float32 (N, 3, S, S)`` batch to ``float32 (N, D)`` features, and
an :class:`~engines.spec.InputSpec` saying how raw RGB [0, 255] crops are
normalised for it (so a :class:`~engines.detector.Detector` wrapping it applies
exactly the training-time preprocessing).

Normalisation per source (from the original training code):

* ImageNet mean/std on [0, 1] input: torchvision, Barlow Twins, DINO, BYOL,
  MoCo v1/v2/v3, solo-learn.
* [0, 1] with no mean/std: SimCLR v1 and v2 (their TensorFlow models were
  trained on unnormalised images; the converters keep that).
* ``(x - 127.5) / 128``: facenet-pytorch InceptionResnetV1 (``fixed_image_standardization``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from ..spec import ARCFACE_112, InputSpec, scaled_template
from .checkpoints import CheckpointFormat, load_strict, read_checkpoint, select_encoder, simclrv2_to_torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Face crops for generic ImageNet backbones keep some context around the face
# (hair line, jaw, background edge) where blending artifacts show.
RESNET_MARGIN = 0.25
FACENET_MARGIN = 0.1

_TRAINING_CONTAINERS = ("state_dict", "model", "network", None)

RESNET_FORMATS: dict[str, tuple[CheckpointFormat, str]] = {
    # name: (format, normalisation)
    "torchvision": (CheckpointFormat(), "imagenet"),
    "barlowtwins": (CheckpointFormat(), "imagenet"),
    "dino": (CheckpointFormat(), "imagenet"),
    "byol": (CheckpointFormat(), "imagenet"),
    "moco": (CheckpointFormat(("state_dict", None), ("module.encoder_q.", "encoder_q.")), "imagenet"),
    "mocov3": (CheckpointFormat(("state_dict", None), ("module.base_encoder.", "base_encoder.")), "imagenet"),
    "simclr": (CheckpointFormat(("state_dict", None)), "unit"),
    "simclrv2": (CheckpointFormat(("resnet",), ("",), remap=simclrv2_to_torchvision), "unit"),
    "solo": (CheckpointFormat(("state_dict", None), ("backbone.",)), "imagenet"),
    # Any training checkpoint with the encoder under a common prefix.
    "checkpoint": (CheckpointFormat(_TRAINING_CONTAINERS, (
        "module.backbone.", "backbone.", "module.encoder_q.", "module.base_encoder.",
        "module.online_encoder.net.", "online_encoder.net.", "module.encoder.", "encoder.",
        "module.", "")), "imagenet"),
}

RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class BackboneInfo:
    """What a built backbone is (recorded in probe cards and feature caches)."""

    source: str
    arch: str
    feature_dim: int
    normalisation: str  # "imagenet" | "unit" | "facenet" | "timm"


class ResNetFeatures(nn.Module):
    """torchvision ResNet without its classifier: ``(N,3,S,S)`` -> ``(N, D)`` pooled features."""

    def __init__(self, arch: str):
        super().__init__()
        if arch not in RESNET_ARCHS:
            raise WeightsError(f"unknown ResNet arch {arch!r}; known: {', '.join(RESNET_ARCHS)}")
        import torchvision  # here, not at import: torchvision.models loads torch._dynamo (~1 s)

        net = getattr(torchvision.models, arch)(weights=None)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def input_spec(normalisation: str, size: int, margin: float,
               mean=IMAGENET_MEAN, std=IMAGENET_STD) -> InputSpec:
    """InputSpec for raw RGB [0, 255] crops under a named normalisation."""
    template = scaled_template(ARCFACE_112, 112, size, margin)
    out = "backbone features (N, D)"
    if normalisation in ("imagenet", "timm"):
        return InputSpec(size=size, scale=1 / 255.0, mean=tuple(mean), std=tuple(std), template=template, output=out)
    if normalisation == "unit":
        return InputSpec(size=size, scale=1 / 255.0, template=template, output=out)
    if normalisation == "facenet":
        # (x - 127.5) / 128 == x * (1/128) - 127.5/128
        return InputSpec(size=size, scale=1 / 128.0, mean=(127.5 / 128,) * 3, template=template, output=out)
    raise WeightsError(f"unknown normalisation {normalisation!r}")


def build_resnet(source: str, path: str | Path, arch: str = "resnet50", size: int | None = None):
    """ResNet feature extractor from a checkpoint in ``source``'s format."""
    fmt, norm = RESNET_FORMATS[source]
    raw = read_checkpoint(path)
    sd = select_encoder(raw, fmt, str(path))
    model = ResNetFeatures(arch)
    # ``net.`` is our wrapper's attribute; the file uses bare torchvision names.
    load_strict(model.net, sd, str(path))
    model.weights_sha256 = raw.sha256  # of the bytes built from (a second read could differ)
    info = BackboneInfo(source, arch, model.feature_dim, norm)
    return model, input_spec(norm, size or 224, RESNET_MARGIN), info


def build_facenet(source: str, path: str | Path, arch: str = "inception_resnet_v1", size: int | None = None):
    """facenet-pytorch InceptionResnetV1 (VGGFace2 or CASIA-WebFace file) -> 512-D embeddings.

    The identity classifier (``logits.*``, 8631 or 10575 classes) is dropped; the
    output is the L2-normalised embedding the authors use for verification.
    """
    try:
        from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1
    except ImportError as e:
        raise WeightsError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0") from e
    raw = read_checkpoint(path)
    sd = select_encoder(raw, CheckpointFormat(("state_dict", None), ("",), classifier=("logits.",)), str(path))
    model = InceptionResnetV1(pretrained=None, classify=False)
    load_strict(model, sd, str(path))
    model.weights_sha256 = raw.sha256  # of the bytes built from (a second read could differ)
    model.feature_dim = 512
    info = BackboneInfo(source, arch, 512, "facenet")
    return model, input_spec("facenet", size or 160, FACENET_MARGIN), info


def build_timm(source: str, path: str | Path, arch: str, size: int | None = None):
    """``timm.create_model(arch, num_classes=0)`` with a local checkpoint (no hub access)."""
    try:
        import timm
    except ImportError as e:
        raise WeightsError("timm backbones need timm: pip install timm") from e
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    except Exception as e:  # timm raises RuntimeError for unknown names
        raise WeightsError(f"timm cannot build {arch!r}: {e}") from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    head = cfg.get("classifier", "head")
    heads = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))
    raw = read_checkpoint(path)
    sd = select_encoder(raw, CheckpointFormat(("state_dict", "model", None), ("module.", ""), classifier=heads, aux=False),
                        str(path))
    load_strict(model, sd, str(path))
    model.weights_sha256 = raw.sha256  # of the bytes built from (a second read could differ)
    dim = int(model.num_features)
    model.feature_dim = dim
    side = size or int(cfg.get("input_size", (3, 224, 224))[-1])
    spec = input_spec("timm", side, RESNET_MARGIN, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
    return model, spec, BackboneInfo(source, arch, dim, "timm")
