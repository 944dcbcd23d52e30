"""Backbone loaders: every checkpoint format gives the source model's features exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from engines.backbones import create_backbone, normalize
from engines.errors import WeightsError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source():
    """Randomly initialised ResNet-50 (BN statistics randomised so eval-mode BN matters)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    net.eval()
    x = torch.rand(2, 3, 64, 64) * 255
    return net, x


def _features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fc = net.fc
    net.fc = nn.Identity()
    try:
        with torch.no_grad():
            return net(x)
    finally:
        net.fc = fc


def _check(tmp_path, source, fmt, obj, mean_std=True):
    net, x = source
    path = tmp_path / f"{fmt}.pth"
    torch.save(obj, path)
    model, spec = create_backbone(fmt, path)
    assert spec.size == 224 and model.feature_dim == 2048
    xin = normalize(x, spec)
    if mean_std:
        assert spec.mean == (0.485, 0.456, 0.406)
    else:  # SimCLR: [0, 1], no mean/std
        assert torch.allclose(xin, x / 255)
    with torch.no_grad():
        got = model(xin)
    assert got.shape == (2, 2048)
    assert torch.equal(got, _features(net, xin))


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def _mlp(d_in=2048, d_out=128) -> dict:
    return {"0.weight": torch.randn(512, d_in), "0.bias": torch.zeros(512), "2.weight": torch.randn(d_out, 512)}


def test_torchvision_plain_with_fc(tmp_path, source):
    _check(tmp_path, source, "torchvision", source[0].state_dict())


def test_byol_converted_with_fc(tmp_path, source):
    _check(tmp_path, source, "byol", source[0].state_dict())


def test_dino_without_fc(tmp_path, source):
    sd = {k: v for k, v in source[0].state_dict().items() if not k.startswith("fc.")}
    _check(tmp_path, source, "dino", sd)


def test_moco_v2_checkpoint(tmp_path, source):
    sd = {k: v for k, v in source[0].state_dict().items() if not k.startswith("fc.")}
    full = {**_prefixed(sd, "module.encoder_q."), **_prefixed(_mlp(), "module.encoder_q.fc."),
            **_prefixed(sd, "module.encoder_k."), "module.queue": torch.randn(128, 64),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    _check(tmp_path, source, "moco", {"epoch": 200, "arch": "resnet50", "state_dict": full,
                                      "optimizer": {"state": {}, "param_groups": []}})


def test_moco_v3_checkpoint(tmp_path, source):
    sd = {k: v for k, v in source[0].state_dict().items() if not k.startswith("fc.")}
    full = {**_prefixed(sd, "module.base_encoder."), **_prefixed(_mlp(), "module.base_encoder.fc."),
            **_prefixed(sd, "module.momentum_encoder."), **_prefixed(_mlp(256, 256), "module.predictor.")}
    _check(tmp_path, source, "mocov3", {"epoch": 100, "state_dict": full})


def test_simclr_v1_converted(tmp_path, source):
    _check(tmp_path, source, "simclr", {"state_dict": source[0].state_dict()}, mean_std=False)


def test_solo_learn_checkpoint(tmp_path, source):
    sd = {k: v for k, v in source[0].state_dict().items() if not k.startswith("fc.")}
    full = {**_prefixed(sd, "backbone."), **_prefixed(_mlp(), "projector."),
            **_prefixed(_mlp(128, 128), "predictor."), **_prefixed(sd, "momentum_backbone."),
            "classifier.weight": torch.randn(1000, 2048), "classifier.bias": torch.zeros(1000)}
    _check(tmp_path, source, "solo", {"epoch": 400, "state_dict": full})


def test_generic_training_checkpoint(tmp_path, source):
    sd = source[0].state_dict()
    full = {**_prefixed(sd, "module.backbone."), **_prefixed(_mlp(), "module.projector."),
            "module.bn.running_mean": torch.zeros(128)}
    _check(tmp_path, source, "checkpoint", {"model": full, "epoch": 1000})


# --- SimCLRv2: an independent TF-style model with the converter's module layout ---
class _BNReLU(nn.Sequential):
    def __init__(self, c, relu=True):
        super().__init__(nn.BatchNorm2d(c), nn.ReLU() if relu else nn.Identity())


class _Proj(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = _BNReLU(cout, relu=False)

    def forward(self, x):
        return self.bn(self.shortcut(x))


class _Bottleneck(nn.Module):
    def __init__(self, cin, c, stride, proj):
        super().__init__()
        self.projection = _Proj(cin, 4 * c, stride) if proj else nn.Identity()
        self.net = nn.Sequential(nn.Conv2d(cin, c, 1, bias=False), _BNReLU(c),
                                 nn.Conv2d(c, c, 3, stride, 1, bias=False), _BNReLU(c),
                                 nn.Conv2d(c, 4 * c, 1, bias=False), _BNReLU(4 * c, relu=False))

    def forward(self, x):
        return F.relu(self.projection(x) + self.net(x))


class _Stage(nn.Module):
    def __init__(self, n, cin, c, stride):
        super().__init__()
        self.blocks = nn.ModuleList([_Bottleneck(cin, c, stride, True)]
                                    + [_Bottleneck(4 * c, c, 1, False) for _ in range(n - 1)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class _SimCLRv2R50(nn.Module):
    def __init__(self):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _BNReLU(64), nn.MaxPool2d(3, 2, 1))
        self.net = nn.Sequential(stem, _Stage(3, 64, 64, 1), _Stage(4, 256, 128, 2),
                                 _Stage(6, 512, 256, 2), _Stage(3, 1024, 512, 2))
        self.fc = nn.Linear(2048, 1000)

    def features(self, x):
        return self.net(x).mean(dim=(2, 3))


def test_simclrv2_converted(tmp_path):
    torch.manual_seed(1)
    v2 = _SimCLRv2R50()
    for m in v2.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    v2.eval()
    head = {"layers.0.weight": torch.randn(2048, 2048), "layers.1.weight": torch.ones(2048)}
    path = tmp_path / "r50_1x_sk0.pth"
    torch.save({"resnet": v2.state_dict(), "head": head}, path)
    model, spec = create_backbone("simclrv2", path)
    x = normalize(torch.rand(2, 3, 64, 64) * 255, spec)
    with torch.no_grad():
        assert torch.allclose(model(x), v2.features(x), atol=1e-5, rtol=1e-5)


# --- refusals -------------------------------------------------------------------
def test_unknown_key_refused(tmp_path, source):
    sd = dict(source[0].state_dict())
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="unexpected keys: layer5.0.conv1.weight"):
        create_backbone("torchvision", tmp_path / "x.pth")


def test_missing_key_refused(tmp_path, source):
    sd = dict(source[0].state_dict())
    del sd["layer2.1.bn2.running_var"]
    torch.save({"state_dict": _prefixed(sd, "module.encoder_q.")}, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="missing keys: layer2.1.bn2.running_var"):
        create_backbone("moco", tmp_path / "x.pth")


def test_shape_mismatch_refused(tmp_path):
    sd = torchvision.models.resnet18(weights=None).state_dict()  # 512-wide, not ResNet-50
    torch.save(sd, tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="shape mismatch"):
        create_backbone("torchvision", tmp_path / "r18.pth")


def test_unrecognised_sibling_key_refused(tmp_path, source):
    sd = _prefixed(source[0].state_dict(), "module.encoder_q.")
    sd["module.mystery.weight"] = torch.zeros(3)
    torch.save({"state_dict": sd}, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="module.mystery.weight"):
        create_backbone("moco", tmp_path / "x.pth")


def test_simclrv2_selective_kernel_refused(tmp_path):
    sd = {"net.0.0.weight": torch.zeros(32, 3, 3, 3), "net.1.blocks.0.net.2.main_conv.0.weight": torch.zeros(1)}
    torch.save({"resnet": sd}, tmp_path / "r50_1x_sk1.pth")
    with pytest.raises(WeightsError, match="main_conv"):
        create_backbone("simclrv2", tmp_path / "r50_1x_sk1.pth")


def test_pickled_code_refused(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "cfg": object()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        create_backbone("moco", tmp_path / "evil.pth")


def test_facenet_vggface2_layout(tmp_path):
    facenet = pytest.importorskip("facenet_pytorch")
    torch.manual_seed(2)
    ref = facenet.InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).eval()
    torch.save(ref.state_dict(), tmp_path / "20180402-114759-vggface2.pt")
    model, spec = create_backbone("facenet", tmp_path / "20180402-114759-vggface2.pt")
    assert spec.size == 160 and model.feature_dim == 512
    x = torch.rand(2, 3, 96, 96) * 255
    xin = normalize(x, spec)
    assert torch.allclose(xin, (x - 127.5) / 128, atol=1e-6)
    ref.classify = False
    with torch.no_grad():
        assert torch.equal(model(xin), ref(xin))


def test_timm_local_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(3)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    model, spec = create_backbone("timm", tmp_path / "r18.pth", arch="resnet18")
    x = normalize(torch.rand(2, 3, 64, 64) * 255, spec)
    ref.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
