"""What a detector expects as input and what its output means.

The scanner aligns every face to ``InputSpec.template`` and hands the detector a
batch of crops as ``float32`` tensors of shape ``(N, 3, H, W)``, **RGB order,
values in [0, 255]**, on the model's device. The detector's own ``forward``
applies channel order, scaling and mean/std from this spec, so every engine
(eager, compiled, ONNX, TensorRT) sees the same graph and the same inputs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

ChannelOrder = Literal["RGB", "BGR"]

# Reference 5-point face (left eye, right eye, nose tip, left mouth corner, right
# mouth corner) for a 112x112 crop, as used by ArcFace/InsightFace; detectors
# whose authors aligned differently carry their own template.
ARCFACE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


def scaled_template(base: tuple, base_size: float, size: int, margin: float = 0.0) -> tuple:
    """Scale a 5-point template made for ``base_size`` px to a ``size`` px crop.

    ``margin`` > 0 shrinks the face towards the centre so more context is kept
    (0.2 = the face occupies 80 % of the crop). Coordinates are pixel centres,
    x right, y down, origin at the top-left pixel's centre.
    """
    c = (base_size - 1) / 2.0
    s = (size / base_size) * (1.0 - margin)
    oc = (size - 1) / 2.0
    return tuple(((x - c) * s + oc, (y - c) * s + oc) for x, y in base)


# Side of the face crops `dfscan train` caches (scanner.research.data); smaller inputs are
# area-resized from them, which a trained detector's spec reproduces at scan time (``via``).
TRAIN_CROP = 224


@dataclass(frozen=True)
class InputSpec:
    """Input contract of a detector.

    Attributes:
        size: crop side in pixels (crops are square, ``size x size``).
        channel_order: order the network was trained on; input is always RGB and
            the detector flips it when this says ``BGR``.
        scale: multiplier applied to the 0..255 input before mean/std
            (``1/255`` for [0, 1] networks, ``1.0`` for raw 0..255 networks).
        mean, std: per-channel normalisation applied after scaling, in the
            network's channel order.
        template: 5 landmark positions ``(x, y)`` in crop pixels (left eye,
            right eye, nose, left mouth corner, right mouth corner; "left" is
            the image's left).
        output: human-readable meaning of the raw output.
        via: when set (larger than ``size``), crops are made as ``dfscan train`` made the
            detector's training crops: aligned at ``via`` px, rounded to uint8, then
            area-resized to ``size`` (OpenCV's INTER_AREA). Aligned straight at ``size``, the
            crops of faces shrunk less than 2x were sharper than any the detector was trained
            on (bilinear sampling, no averaging), and a real face scored up to 0.2 higher.
    """

    size: int
    channel_order: ChannelOrder = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    template: tuple | None = None  # None: ArcFace's template scaled to ``size``
    output: str = "logit of P(fake)"
    via: int | None = None

    def __post_init__(self):
        if self.template is None:
            object.__setattr__(self, "template", scaled_template(ARCFACE_112, 112, self.size))
        if len(self.template) != 5:
            raise ValueError(f"template needs 5 landmarks, got {len(self.template)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["template"] = [list(p) for p in self.template]
        return d

    def template_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Template as a ``(5, 2)`` tensor of ``(x, y)`` crop pixel coordinates."""
        return torch.tensor(self.template, dtype=dtype, device=device)

    def example_input(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """A deterministic ``(batch, 3, size, size)`` input in [0, 255] for tracing."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, self.size, self.size, generator=g) * 255.0
        return x.to(device=device, dtype=dtype)
