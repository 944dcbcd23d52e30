"""Backbones of the CADDM / ADM detector with checkpoint-compatible names.

Both backbones take the network input ``float32 (N, 3, 224, 224)`` (BGR, 0..255
for CADDM, see :mod:`.module`) and return ``(feature_map, pooled)``: the last
feature map ``(N, C, 7, 7)`` and its global average ``(N, C, 1, 1)``.

* :class:`ResNetBackbone` uses the torchvision parameter names (``conv1``,
  ``bn1``, ``layer1.0.conv1`` ...), as CADDM's ``backbones/resnet.py`` does.
* :class:`EfficientNetBackbone` uses the ``efficientnet_pytorch`` names
  (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ..., ``_conv_head``,
  ``_bn1``), BatchNorm eps 1e-3 and TensorFlow "SAME" padding, following the
  copy vendored in CADDM's ``backbones/efficientnet_pytorch`` (Tan & Le,
  "EfficientNet", ICML 2019).

The ImageNet classifiers (``fc`` / ``_fc``) are not built: CADDM never uses
them, but its checkpoints carry them; :mod:`.checkpoint` accepts and drops them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResNetBackbone(nn.Module):
    """ResNet with BasicBlocks (ResNet-34 by default; He et al., CVPR 2016).

    Args:
        layers: blocks per stage (``(3, 4, 6, 3)`` = ResNet-34).
        widths: channels per stage (``(64, 128, 256, 512)`` = ResNet-34); the
            tiny test model uses smaller ones through the same code.
    """

    cam_layer = "layer4"  # last stage: the (N, C, 7, 7) feature map

    def __init__(self, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512)):
        super().__init__()
        stem = widths[0]
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem
        for i, (n, w) in enumerate(zip(layers, widths)):
            stage, inplanes = self._stage(inplanes, w, n, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int):
        # torchvision.models loads torch._dynamo (~1 s): only when an ADM model is built
        from torchvision.models.resnet import BasicBlock

        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        mods = [BasicBlock(inplanes, planes, stride, down)]
        mods += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods), planes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # The original pools with AvgPool2d(7, stride=1): on the 7x7 map of a
        # 224 input that is the global mean, kept as (N, C, 1, 1).
        return x, F.avg_pool2d(x, kernel_size=7, stride=1)


# --------------------------------------------------------------------------- EfficientNet


@dataclass(frozen=True)
class Stage:
    """One EfficientNet-B0 stage before width/depth scaling."""

    kernel: int
    repeats: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# EfficientNet-B0 stages (all with squeeze-excitation ratio 0.25 and skip).
B0_STAGES = (
    Stage(3, 1, 1, 1, 32, 16),
    Stage(3, 2, 2, 6, 16, 24),
    Stage(5, 2, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(5, 3, 1, 6, 80, 112),
    Stage(5, 4, 2, 6, 112, 192),
    Stage(3, 1, 1, 6, 192, 320),
)
SE_RATIO = 0.25
BN_EPS = 1e-3  # TensorFlow's default; 1e-5 would change every activation

# name: (width multiplier, depth multiplier, nominal image size)
EFFICIENTNET_PARAMS = {
    "efficientnet-b3": (1.2, 1.4, 300),
    "efficientnet-b4": (1.4, 1.8, 380),
}


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor``.

    Rounds to the nearest multiple but never more than 10 % below the scaled
    value (the EfficientNet reference rule).
    """
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if out < 0.9 * scaled:
        out += divisor
    return int(out)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def same_padding(kernel: int, stride: int, image_size: int) -> tuple[int, int, int, int]:
    """TF "SAME" padding ``(left, right, top, bottom)`` for a square ``image_size``.

    Like CADDM's vendored ``Conv2dStaticSamePadding``, it is computed once from
    the network's nominal image size (300 for B3, 380 for B4) for every layer;
    for a 224 input (even sizes at every stage) it equals per-layer TF SAME.
    """
    out = math.ceil(image_size / stride)
    total = max((out - 1) * stride + kernel - image_size, 0)
    lo = total // 2
    return (lo, total - lo, lo, total - lo)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with static TF-SAME zero padding (extra pixel right/bottom)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, bias=False, image_size=224):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=bias)
        self.pad = same_padding(kernel, stride, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (eval: no drop-connect)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, image_size: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, image_size=image_size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, image_size=image_size)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        squeezed = max(1, int(cin * SE_RATIO))
        self._se_reduce = SameConv2d(mid, squeezed, 1, bias=True, image_size=image_size)
        self._se_expand = SameConv2d(squeezed, mid, 1, bias=True, image_size=image_size)
        self._project_conv = SameConv2d(mid, cout, 1, image_size=image_size)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:  # fixed at construction: no data-dependent branch
            x = F.silu(self._bn0(self._expand_conv(x)))
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self._se_expand(F.silu(self._se_reduce(s)))
        x = self._bn2(self._project_conv(torch.sigmoid(s) * x))
        return x + inputs if self.residual else x


class EfficientNetBackbone(nn.Module):
    """EfficientNet feature extractor (``efficientnet-b3`` or ``efficientnet-b4``)."""

    cam_layer = "_bn1"  # head conv + BN: the (N, C, 7, 7) map (SiLU follows in forward)

    def __init__(self, name: str = "efficientnet-b4"):
        super().__init__()
        width, depth, size = EFFICIENTNET_PARAMS[name]
        stem = round_filters(32, width)
        self._conv_stem = SameConv2d(3, stem, 3, stride=2, image_size=size)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS, momentum=0.01)
        blocks = []
        for st in B0_STAGES:
            cin, cout = round_filters(st.in_ch, width), round_filters(st.out_ch, width)
            for r in range(round_repeats(st.repeats, depth)):
                # Only a stage's first block changes stride and channel count.
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, st.kernel,
                                          st.stride if r == 0 else 1, st.expand, size))
        self._blocks = nn.ModuleList(blocks)
        head = round_filters(1280, width)
        self._conv_head = SameConv2d(cout, head, 1, image_size=size)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS, momentum=0.01)
        self.out_channels = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.silu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.silu(self._bn1(self._conv_head(x)))
        # Dropout after pooling is the identity in eval mode.
        return x, x.mean(dim=(2, 3), keepdim=True)
