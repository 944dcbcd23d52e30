"""MTCNN's three networks with facenet-pytorch's weights, without importing facenet-pytorch.

Importing ``facenet_pytorch`` imports torchvision's models and with them
``torch._dynamo``: about 1 s of every ``dfscan`` start on this project's 2-core
machines, for three small networks. The layer names below are those of the
``pnet.pt``/``rnet.pt``/``onet.pt`` state dicts that ship inside the
facenet-pytorch wheel (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", 2016; weights ported from the
authors' Caffe models), read with ``torch.load(weights_only=True)``.

Each network takes ``float32 (N, 3, H, W)`` images normalised to about [-1, 1]
(``(x - 127.5) / 128``). P-Net is fully convolutional (``(N, 4, h, w)`` box
offsets, ``(N, 2, h, w)`` face softmax); R-Net and O-Net take 24 and 48 px crops
and return ``(N, 4)`` offsets and ``(N, 2)`` softmax, O-Net also ``(N, 10)``
landmarks (5 x, then 5 y, relative to the box).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k), nn.PReLU(cout)]


class _Net(nn.Module):
    """Layers registered under the checkpoint's names, so its state dict loads as is."""

    def _add(self, **layers: nn.Module) -> None:
        for name, layer in layers.items():
            self.add_module(name, layer)

    def _run(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x

    @staticmethod
    def _flat(x: torch.Tensor) -> torch.Tensor:
        # The Caffe weights expect the features flattened in (W, H, C) order.
        return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(_Net):
    def __init__(self):
        super().__init__()
        c1, p1 = _conv(3, 10, 3)
        c2, p2 = _conv(10, 16, 3)
        c3, p3 = _conv(16, 32, 3)
        self._add(conv1=c1, prelu1=p1, pool1=nn.MaxPool2d(2, 2, ceil_mode=True), conv2=c2, prelu2=p2,
                  conv3=c3, prelu3=p3, conv4_1=nn.Conv2d(32, 2, 1), conv4_2=nn.Conv2d(32, 4, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._run(x, "conv1", "prelu1", "pool1", "conv2", "prelu2", "conv3", "prelu3")
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(_Net):
    def __init__(self):
        super().__init__()
        c1, p1 = _conv(3, 28, 3)
        c2, p2 = _conv(28, 48, 3)
        c3, p3 = _conv(48, 64, 2)
        self._add(conv1=c1, prelu1=p1, pool1=nn.MaxPool2d(3, 2, ceil_mode=True), conv2=c2, prelu2=p2,
                  pool2=nn.MaxPool2d(3, 2, ceil_mode=True), conv3=c3, prelu3=p3,
                  dense4=nn.Linear(576, 128), prelu4=nn.PReLU(128),
                  dense5_1=nn.Linear(128, 2), dense5_2=nn.Linear(128, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._run(x, "conv1", "prelu1", "pool1", "conv2", "prelu2", "pool2", "conv3", "prelu3")
        x = self.prelu4(self.dense4(self._flat(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(_Net):
    def __init__(self):
        super().__init__()
        c1, p1 = _conv(3, 32, 3)
        c2, p2 = _conv(32, 64, 3)
        c3, p3 = _conv(64, 64, 3)
        c4, p4 = _conv(64, 128, 2)
        self._add(conv1=c1, prelu1=p1, pool1=nn.MaxPool2d(3, 2, ceil_mode=True), conv2=c2, prelu2=p2,
                  pool2=nn.MaxPool2d(3, 2, ceil_mode=True), conv3=c3, prelu3=p3,
                  pool3=nn.MaxPool2d(2, 2, ceil_mode=True), conv4=c4, prelu4=p4,
                  dense5=nn.Linear(1152, 256), prelu5=nn.PReLU(256), dense6_1=nn.Linear(256, 2),
                  dense6_2=nn.Linear(256, 4), dense6_3=nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self._run(x, "conv1", "prelu1", "pool1", "conv2", "prelu2", "pool2", "conv3", "prelu3", "pool3",
                      "conv4", "prelu4")
        x = self.prelu5(self.dense5(self._flat(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def weights_dir() -> Path:
    """``facenet_pytorch/data`` of the installed wheel (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet_pytorch is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class MTCNNNets(nn.Module):
    """``pnet``, ``rnet``, ``onet`` with facenet-pytorch's weights, in eval mode on ``device``."""

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__()
        data = weights_dir()
        for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
            net = cls()
            net.load_state_dict(torch.load(data / f"{name}.pt", map_location="cpu", weights_only=True))
            self.add_module(name, net)
        self.to(torch.device(device)).eval()
