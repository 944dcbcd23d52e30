"""CADDM network: backbone + Artifact Detection Module (ADM) + final classifier.

Dong et al., "Implicit Identity Leakage: The Stumbling Block to Improving
Deepfake Detection Generalization", CVPR 2023. Parameter names and shapes equal
those of the authors' ``CADDM`` module (``base_model.*``, ``adm.*``, ``fc.*``),
so their ``{'network': state_dict}`` checkpoints load with ``strict=True``.

Data flow for one batch of ``N`` aligned 224x224 crops::

    backbone        -> feature map (N, C, 7, 7), global feature g (N, C, 1, 1)
    ADM extra layers   7x7 -> 7x7 -> 5x5 -> 3x3 -> 1x1   (four maps, C channels)
    detection heads    per map: loc (8 ch = 2 anchors x 4), conf (4 ch = 2 x 2)
    short connection   g + final 1x1 ADM map -> fc -> 2 logits (real, fake)

The detection outputs are returned raw; anchor decoding and NMS live outside
``forward`` (:mod:`.anchors`), so engines compile a static graph.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn

from ...detector import Detector
from ...spec import InputSpec
from .anchors import ADM_PRIORS, detect_boxes, prior_boxes
from .template import CADDM_TEMPLATE_224

ANCHORS_PER_CELL = 2  # the original's ``width_hight_ratios``
NUM_CLASSES = 2  # background / artifact for the heads, real / fake for fc


class ExtraBlock(nn.Module):
    """Residual block with an unpadded first conv (shrinks 7->5->3 at k=3).

    ``conv1`` (k x k, bias, no padding) -> BN -> ReLU -> ``conv2`` (3x3, pad 1,
    no bias) -> BN, plus a ``downsample`` branch (k x k conv without bias + BN)
    so the residual has the same size; ReLU after the sum.
    """

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=kernel)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=kernel, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class EndBlock(nn.Module):
    """Last ADM layer, 3x3 -> 1x1, without BatchNorm (all convs carry a bias)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=1)
        self.downsample = nn.Conv2d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.downsample(x))


class MultiScaleDetection(nn.Module):
    """Location and confidence heads, one pair per ADM map.

    3x3 convs with padding 1 on the 7/7/5/3 maps and 1x1 convs on the 1x1 map.
    Outputs are flattened in (map, row, column, anchor) order, which is the
    order of :func:`.anchors.prior_boxes`.
    """

    def __init__(self, channels: int, kernels=(3, 3, 3, 1)):
        super().__init__()
        self.ms_dets = nn.ModuleList(
            nn.Conv2d(channels, ANCHORS_PER_CELL * 4, k, padding=k // 2) for k in kernels)
        self.ms_cls = nn.ModuleList(
            nn.Conv2d(channels, ANCHORS_PER_CELL * NUM_CLASSES, k, padding=k // 2) for k in kernels)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = feats[0].shape[0]
        loc, conf = [], []
        for f, det, cls in zip(feats, self.ms_dets, self.ms_cls):
            # NCHW -> NHWC so anchors are ordered row, column, anchor.
            loc.append(det(f).permute(0, 2, 3, 1).reshape(n, -1))
            conf.append(cls(f).permute(0, 2, 3, 1).reshape(n, -1))
        return (torch.cat(loc, 1).reshape(n, -1, 4),
                torch.cat(conf, 1).reshape(n, -1, NUM_CLASSES))


class ArtifactDetectionModule(nn.Module):
    """ADM: extra layers (k=1, 3, 3 ExtraBlocks, then EndBlock) + detection heads.

    ``forward(x (N, C, 7, 7)) -> (loc (N, A, 4), conf (N, A, 2), final (N, C, 1, 1))``
    where the 7x7 input gives maps of 7, 5, 3 and 1 cells and
    ``A = 2 * (49 + 25 + 9 + 1) = 168`` anchors.
    """

    def __init__(self, channels: int):
        super().__init__()
        # Each ExtraBlock sits in a one-block nn.Sequential in the original,
        # hence the ``adm_extra_layers.0.0.conv1`` style names.
        self.adm_extra_layers = nn.ModuleList([
            nn.Sequential(ExtraBlock(channels, 1)),
            nn.Sequential(ExtraBlock(channels, 3)),
            nn.Sequential(ExtraBlock(channels, 3)),
            EndBlock(channels),
        ])
        self.multi_scale_detection_module = MultiScaleDetection(channels)

    def forward(self, x: torch.Tensor):
        feats = []
        for layer in self.adm_extra_layers:
            x = layer(x)
            feats.append(x)
        loc, conf = self.multi_scale_detection_module(feats)
        return loc, conf, feats[-1]


ADM_SPEC = InputSpec(
    size=224,
    channel_order="BGR",  # cv2.imread order, fed as is by the original test code
    scale=1.0,  # raw 0..255, no mean/std (dataset.py: torch.Tensor(img.transpose(2, 0, 1)))
    template=CADDM_TEMPLATE_224,
    output="(logits (N,2) [real, fake], loc (N,168,4), conf (N,168,2)); P(fake) = softmax(logits)[:, 1]",
)


class ADMDetector(Detector):
    """CADDM detector: backbone + ADM + short connection + ``fc``.

    ``forward(x float32 (N, 3, 224, 224) RGB [0, 255])`` returns
    ``(logits (N, 2), loc (N, 168, 4), conf (N, 168, 2))``; state-dict keys are
    exactly the original ``CADDM`` module's (``base_model.*``, ``adm.*``, ``fc.*``).

    Args:
        backbone_factory: builds the backbone (see :mod:`.backbones`).
        empty: build parameters uninitialised (meta, then empty CPU memory);
            use only when a checkpoint is loaded right after.
        score_threshold, iou_threshold, top_k: artifact box selection in
            :meth:`extras` (dfscan choices; the original never decodes boxes at
            test time).
        box_min_p_fake: report boxes only for crops with P(fake) >= this
            (default 0: every crop; the scan pipeline shows them only for
            faces scoring at or above its threshold).
    """

    def __init__(self, backbone_factory: Callable[[], nn.Module], empty: bool = False,
                 score_threshold: float = 0.5, iou_threshold: float = 0.45, top_k: int = 5,
                 box_min_p_fake: float = 0.0):
        super().__init__(ADM_SPEC, threshold=0.5)
        with torch.device("meta") if empty else contextlib.nullcontext():
            self.base_model = backbone_factory()
            channels = self.base_model.out_channels
            self.adm = ArtifactDetectionModule(channels)
            self.fc = nn.Linear(channels, NUM_CLASSES)
        if empty:
            for part in (self.base_model, self.adm, self.fc):
                part.to_empty(device="cpu")
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.top_k = int(top_k)
        self.box_min_p_fake = float(box_min_p_fake)
        # Grad-CAM on the backbone's last map (the 7x7 map the ADM reads); a backbone that
        # names none has none to explain (a guessed "layer4" is not a submodule of most).
        bb_layer = getattr(self.base_model, "cam_layer", None)
        self.cam_layer = f"base_model.{bb_layer}" if bb_layer else None

    def network(self, x: torch.Tensor):
        fmap, global_feat = self.base_model(x)
        loc, conf, final = self.adm(fmap)
        # Short connection: global backbone feature + final 1x1 ADM feature.
        logits = self.fc((global_feat + final).flatten(1))
        return logits, loc, conf

    def p_fake(self, out) -> torch.Tensor:
        """Softmax class 1 (the original test.py's ``outputs[:, 1]``), ``float32 (N,)``."""
        return torch.softmax(self.primary(out).float(), dim=-1)[:, 1]

    def fake_logit(self, out) -> torch.Tensor:
        """``logits[:, 1] - logits[:, 0]``: the logit of the softmax's P(fake)."""
        logits = self.primary(out).float()
        return logits[:, 1] - logits[:, 0]

    def extras(self, out, p_fake: torch.Tensor) -> list[dict[str, Any]]:
        """Per crop ``{"artifact_boxes": [[x1, y1, x2, y2, score], ...]}``.

        Boxes are in crop pixel edges (``(0, 0, 224, 224)`` = whole crop),
        best first, at most ``top_k``; empty when P(fake) < ``box_min_p_fake``.
        Map them to the frame with :func:`.boxes.map_boxes_to_frame`.
        """
        # 168 anchors per crop: cheaper on the CPU than as many tiny GPU kernels;
        # float32 even when an engine ran the network in fp16.
        loc, conf = (t.detach().float().cpu() for t in out[1:3])
        dets = detect_boxes(loc, conf, prior_boxes(ADM_PRIORS), self.spec.size, self.score_threshold,
                            self.iou_threshold, self.top_k)
        res = []
        for d, p in zip(dets, p_fake.tolist()):
            rows = d.tolist() if p >= self.box_min_p_fake else []
            res.append({"artifact_boxes": [[round(v, 2) for v in r[:4]] + [round(r[4], 4)]
                                           for r in rows]})
        return res
