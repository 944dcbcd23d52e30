"""MesoNet detectors (Meso4, MesoInception4) ported from the authors' Keras models.

Reference: D. Afchar, V. Nozick, J. Yamagishi, I. Echizen, "MesoNet: a Compact
Facial Video Forgery Detection Network", IEEE WIFS 2018 (arXiv:1809.00888).
Weights: the authors' Keras 2.1.5 files (Apache-2.0), converted to safetensors by
:mod:`engines.convert.mesonet_keras`; see ``engines/weights/NOTICE``.

Keras semantics reproduced here (the port is checked against Keras outputs in
``tests/test_mesonet.py``):

* ``padding='same'`` convolutions with odd kernels and stride 1 are symmetric
  zero padding ``dilation * (k // 2)``;
* ``MaxPooling2D(padding='same')`` yields ``ceil(n / k)`` outputs and pads with
  ``-inf`` *more at the end* than at the start (TensorFlow's SAME rule), which
  PyTorch's ``ceil_mode`` does not match for every size, so it is done by hand;
* ``BatchNormalization`` epsilon is 1e-3 (PyTorch default is 1e-5);
* Keras flattens ``(H, W, C)``; the converter permutes the first dense layer's
  columns to PyTorch's ``(C, H, W)`` order so no transpose is needed at runtime;
* the final ``Dense(1, sigmoid)`` of the released weights gives **P(real)**: the
  authors trained with ``flow_from_directory`` whose class folders sort as
  ``df`` -> 0, ``real`` -> 1, and on their test crops the sigmoid is high for
  ``real/`` and low for ``df/`` (numbers in ``tests/data/mesonet_keras_reference.json``).
  :meth:`network` therefore returns the *negated* pre-sigmoid value, i.e. the
  logit of P(fake), as every dfscan detector does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..detector import Detector
from ..registry import load_weights, register_detector
from ..spec import ARCFACE_112, InputSpec, scaled_template

SIZE = 256
BN_EPS = 1e-3  # Keras BatchNormalization default
LEAKY_SLOPE = 0.1


def _recentred(points: tuple, centre: tuple[float, float]) -> tuple:
    """Translate 5 landmarks so that their centroid lands on ``centre`` (x, y)."""
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    return tuple((x - cx + centre[0], y - cy + centre[1]) for x, y in points)


# Landmark template for the 256 px MesoNet crop. The authors' crops (their
# test_images/, resized to 256 as their flow_from_directory loader does) were
# measured with MTCNN: the mean 5 landmarks are eyes (93.3, 85.3) / (168.6, 85.5),
# nose (129.4, 130.7), mouth (98.6, 171.0) / (162.1, 171.5). A least-squares
# similarity fit of the ArcFace shape to them gives scale 0.93 x (256/112) (per
# image 0.79..1.07) and a landmark centroid at y = 128.8, i.e. the face is centred
# in the crop. ArcFace's own framing puts the centroid at y = 165 (lots of
# forehead), so a margin alone cannot reproduce MesoNet's framing: we keep the
# ArcFace shape with margin 0.07 and move its centroid to (127.5, 128.8).
# Re-aligning the four crops with this template reproduces their framing (checked
# visually) and keeps the DF models' df > real ordering; ArcFace with margin 0.2
# (face too low and small) flipped real00240 to P(fake) 0.56 with meso4_df.
MESONET_TEMPLATE = _recentred(scaled_template(ARCFACE_112, 112, SIZE, 0.07), (127.5, 128.8))


class KerasMaxPool2d(nn.Module):
    """``MaxPooling2D(pool_size=k, strides=k, padding='same')`` in NCHW.

    Output side ``ceil(n / k)``; TensorFlow pads ``total // 2`` before and the
    rest after, with -inf so padding never wins the max.
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def _pads(self, n: int) -> tuple[int, int]:
        total = max((math.ceil(n / self.k) - 1) * self.k + self.k - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(int(x.shape[-2]))
        left, right = self._pads(int(x.shape[-1]))
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.k, self.k)


def _conv(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Conv2d:
    """Keras ``Conv2D(..., padding='same')`` for odd ``k`` and stride 1."""
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation)


class InceptionLayer(nn.Module):
    """MesoInception block: 1x1 | 1x1->3x3 | 1x1->3x3 dil 2 | 1x1->3x3 dil 3, concatenated.

    Every conv is followed by ReLU; output channels ``a + b + c + d``. Attribute
    order is the Keras creation order, which the converter relies on.
    """

    def __init__(self, cin: int, a: int, b: int, c: int, d: int):
        super().__init__()
        self.b1 = _conv(cin, a, 1)
        self.b2a, self.b2b = _conv(cin, b, 1), _conv(b, b, 3)
        self.b3a, self.b3b = _conv(cin, c, 1), _conv(c, c, 3, dilation=2)
        self.b4a, self.b4b = _conv(cin, d, 1), _conv(d, d, 3, dilation=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = F.relu(self.b1(x))
        y2 = F.relu(self.b2b(F.relu(self.b2a(x))))
        y3 = F.relu(self.b3b(F.relu(self.b3a(x))))
        y4 = F.relu(self.b4b(F.relu(self.b4a(x))))
        return torch.cat([y1, y2, y3, y4], dim=1)


class _MesoBase(Detector):
    """Shared tail: conv3/conv4 (16 ch, 5x5) + dense head; blocks 1-2 in subclasses.

    Input ``float32 (N, 3, S, S)`` RGB [0, 255]; :meth:`network` returns ``(N,)``
    logits of P(fake). ``S`` must be a multiple of 32 for the pooled 16-channel
    map to be ``S/32 x S/32`` (256 -> 8x8 -> 1024 features, as released).
    """

    cam_layer = "bn4"  # last conv map before the final pooling (S/8 x S/8, 16 ch)

    def __init__(self, size: int, c2: int):
        super().__init__(InputSpec(
            size=size,
            template=scaled_template(MESONET_TEMPLATE, SIZE, size),
            output="logit of P(fake) (negated Keras pre-sigmoid, which meant P(real))",
        ))
        # block1/bn1 and block2/bn2 are built by the subclasses.
        self.pool1, self.pool2 = KerasMaxPool2d(2), KerasMaxPool2d(2)
        self.conv3, self.bn3, self.pool3 = _conv(c2, 16, 5), nn.BatchNorm2d(16, eps=BN_EPS), KerasMaxPool2d(2)
        self.conv4, self.bn4, self.pool4 = _conv(16, 16, 5), nn.BatchNorm2d(16, eps=BN_EPS), KerasMaxPool2d(4)
        side = math.ceil(math.ceil(math.ceil(math.ceil(size / 2) / 2) / 2) / 4)
        self.drop1, self.fc1 = nn.Dropout(0.5), nn.Linear(16 * side * side, 16)
        self.drop2, self.fc2 = nn.Dropout(0.5), nn.Linear(16, 1)

    def block1(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def block2(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def network(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.bn1(self.block1(x)))
        x = self.pool2(self.bn2(self.block2(x)))
        x = self.pool3(self.bn3(F.relu(self.conv3(x))))
        x = self.pool4(self.bn4(F.relu(self.conv4(x))))
        h = F.leaky_relu(self.fc1(self.drop1(torch.flatten(x, 1))), LEAKY_SLOPE)
        # The Keras unit is the logit of P(real); negate to report P(fake).
        return -self.fc2(self.drop2(h)).squeeze(1)


class Meso4(_MesoBase):
    """Meso-4: conv 8@3x3, conv 8@5x5, conv 16@5x5, conv 16@5x5, dense 16, dense 1."""

    def __init__(self, size: int = SIZE):
        super().__init__(size, c2=8)
        self.conv1, self.bn1 = _conv(3, 8, 3), nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2, self.bn2 = _conv(8, 8, 5), nn.BatchNorm2d(8, eps=BN_EPS)

    def block1(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x))

    def block2(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(x))


class MesoInception4(_MesoBase):
    """MesoInception-4: Inception(1,4,4,2), Inception(2,4,4,2), then Meso-4's tail."""

    def __init__(self, size: int = SIZE):
        super().__init__(size, c2=12)
        self.inc1, self.bn1 = InceptionLayer(3, 1, 4, 4, 2), nn.BatchNorm2d(11, eps=BN_EPS)
        self.inc2, self.bn2 = InceptionLayer(11, 2, 4, 4, 2), nn.BatchNorm2d(12, eps=BN_EPS)

    def block1(self, x: torch.Tensor) -> torch.Tensor:
        return self.inc1(x)

    def block2(self, x: torch.Tensor) -> torch.Tensor:
        return self.inc2(x)


ARCHS: dict[str, type[_MesoBase]] = {"meso4": Meso4, "mesoinception4": MesoInception4}


def _build(cls: type[_MesoBase], weights=None, **kw) -> Detector:
    model = cls(**kw)
    if weights is not None:
        load_weights(model, weights)
    return model


_HINT = "Keras weights by Afchar et al. (Apache-2.0), converted to safetensors"


@register_detector("meso4_df", description=f"Meso4 trained on Deepfake; {_HINT}",
                   default_weights="meso4_df.safetensors")
def meso4_df(weights=None, **kw) -> Detector:
    return _build(Meso4, weights, **kw)


@register_detector("meso4_f2f", description=f"Meso4 trained on Face2Face; {_HINT}",
                   default_weights="meso4_f2f.safetensors")
def meso4_f2f(weights=None, **kw) -> Detector:
    return _build(Meso4, weights, **kw)


@register_detector("mesoinception4_df", description=f"MesoInception4 trained on Deepfake; {_HINT}",
                   default_weights="mesoinception4_df.safetensors")
def mesoinception4_df(weights=None, **kw) -> Detector:
    return _build(MesoInception4, weights, **kw)


@register_detector("mesoinception4_f2f", description=f"MesoInception4 trained on Face2Face; {_HINT}",
                   default_weights="mesoinception4_f2f.safetensors")
def mesoinception4_f2f(weights=None, **kw) -> Detector:
    return _build(MesoInception4, weights, **kw)


@register_detector("test_meso4", description="Meso4 architecture at 64x64, seeded random init (tests)")
def test_meso4(weights=None, size: int = 64, **kw) -> Detector:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4321)
        model = Meso4(size=size, **kw)
    # Random BN statistics would all be (0, 1); give them spread so BN is exercised.
    with torch.no_grad():
        g = torch.Generator().manual_seed(4321)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    if weights is not None:
        load_weights(model, weights)
    return model
