"""ADM head detector (CADDM, Dong et al., CVPR 2023) with the authors' checkpoints.

Registered detectors:

* ``adm_resnet34``, ``adm_efficientnet_b3``, ``adm_efficientnet_b4``: need a
  checkpoint (``--weights PATH``), e.g. the authors' ``resnet34.pkl``,
  ``efficientnet-b3.pkl``, ``efficientnet-b4.pkl`` or a file from their
  ``train.py``; loaded strictly (see :mod:`.checkpoint`).
* ``test_adm``: tiny ResNet backbone (widths 8/16/16/32), seeded random init,
  same ADM, heads, anchors and box code; for tests and engine checks only.

Public helpers: :func:`build_adm`, :func:`.boxes.map_boxes_to_frame`,
:func:`.anchors.detect_boxes`, :data:`.template.CADDM_TEMPLATE_224`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ...errors import WeightsError
from ...registry import check_finite, register_detector
from .backbones import EfficientNetBackbone, ResNetBackbone
from .boxes import map_boxes_to_frame
from .checkpoint import load_checkpoint_into, read_checkpoint
from .module import ADM_SPEC, ADMDetector
from .template import CADDM_TEMPLATE_224

__all__ = ["ADMDetector", "ADM_SPEC", "BACKBONES", "CADDM_TEMPLATE_224", "WEIGHTS_HINT",
           "build_adm", "map_boxes_to_frame"]

BACKBONES = {
    "resnet34": ResNetBackbone,
    "efficientnet-b3": partial(EfficientNetBackbone, "efficientnet-b3"),
    "efficientnet-b4": partial(EfficientNetBackbone, "efficientnet-b4"),
    "test": partial(ResNetBackbone, layers=(1, 1, 1, 1), widths=(8, 16, 16, 32)),
}
ORIGINAL_FILES = {"resnet34": "resnet34.pkl", "efficientnet-b3": "efficientnet-b3.pkl",
                  "efficientnet-b4": "efficientnet-b4.pkl"}
WEIGHTS_HINT = (
    "CADDM checkpoints come from the authors of 'Implicit Identity Leakage' (CVPR 2023): "
    "download {file} via the 'Pretrained weights' link in the README of "
    "https://github.com/megvii-research/CADDM, or pass a checkpoints/epoch_N.pkl written by "
    "its train.py with the same backbone. The file is loaded with weights_only=True."
)
TEST_SEED = 20230601


def build_adm(variant: str, weights: str | Path | None = None, random_init: bool = False,
              **kwargs) -> ADMDetector:
    """Build an ADM detector for ``variant`` (a key of :data:`BACKBONES`).

    With ``weights`` the checkpoint is loaded strictly (parameters are not
    randomly initialised first). Without, ``random_init=True`` is required so
    random weights are never used by accident. ``kwargs`` go to
    :class:`ADMDetector` (box selection settings).
    """
    if variant not in BACKBONES:
        raise WeightsError(f"unknown ADM variant {variant!r}; known: {', '.join(BACKBONES)}")
    if weights is None and not random_init:
        hint = WEIGHTS_HINT.format(file=ORIGINAL_FILES.get(variant, "a checkpoint"))
        raise WeightsError(f"ADM {variant} needs a weights file: pass --weights PATH. {hint}")
    model = ADMDetector(BACKBONES[variant], empty=weights is not None, **kwargs)
    model.name = f"ADM ({variant})"  # the registry renames it after building
    if weights is not None:
        sd = read_checkpoint(weights)
        model.dropped_keys = load_checkpoint_into(model, sd, source=str(weights))
        # As load_weights does for every other detector: NaN weights make every score NaN,
        # refused only later as a parity failure that does not name the file.
        check_finite(model, weights)
        model.weights_hash = sd.sha256[:16]  # of the bytes loaded
    return model.eval()


def _register(name: str, variant: str) -> None:
    file = ORIGINAL_FILES[variant]

    @register_detector(
        name,
        description=f"CADDM ADM head, {variant} backbone, 224 BGR crops; artifact boxes",
        needs_weights=True,
        weights_hint=WEIGHTS_HINT.format(file=file),
    )
    def factory(weights=None, **kw) -> ADMDetector:
        return build_adm(variant, weights, **kw)


_register("adm_resnet34", "resnet34")
_register("adm_efficientnet_b3", "efficientnet-b3")
_register("adm_efficientnet_b4", "efficientnet-b4")


@torch.no_grad()
def _calibrate_batchnorm(model: ADMDetector, seed: int, batch: int = 8) -> None:
    """Set BatchNorm statistics from one seeded random batch.

    With raw 0..255 input and default statistics (mean 0, var 1) a random
    network saturates (P(fake) = 1.0 exactly), which would hide engine
    differences; measured statistics keep the test model's outputs moderate.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, model.spec.size, model.spec.size, generator=g) * 255.0
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the batch's own statistics
    model.train()
    model(x)
    model.eval()
    for m, mom in zip(bns, saved):
        m.momentum = mom


@register_detector("test_adm", description="tiny ADM for tests (224x224, seeded random init)")
def test_adm(weights=None, **kw) -> ADMDetector:
    if weights is not None:
        return build_adm("test", weights, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEST_SEED)
        model = build_adm("test", random_init=True, **kw)
    _calibrate_batchnorm(model, TEST_SEED)
    return model
