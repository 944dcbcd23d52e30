"""Weights files follow the umask like every other output.

``safetensors.torch.save_file`` creates its file with mode 0600 whatever the umask, so
weights trained by one user (or written for the account a service runs as) could not be
read by another; dfscan writes safetensors through ``engines.files.write_safetensors``.
"""
from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from engines.files import write_safetensors


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_safetensors_follows_the_umask_and_writes_what_save_file_writes(tmp_path, umask_022):
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([1.5])}
    ours = write_safetensors(tensors, tmp_path / "sub" / "ours.safetensors", metadata={"k": "v"})
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"k": "v"})
    assert _mode(ours) == 0o644
    assert ours.read_bytes() == (tmp_path / "lib.safetensors").read_bytes()  # same file, other mode
    back = load_file(str(ours))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert not list(ours.parent.glob(".*.tmp"))  # written whole, nothing left beside it


def test_a_saved_probe_is_readable_by_others(tmp_path, umask_022):
    import torchvision

    from engines.backbones import create_backbone
    from engines.detectors.probe import WEIGHTS, save_probe

    r18 = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), r18)
    model, spec = create_backbone("torchvision", r18, "resnet18", size=64)
    save_probe(tmp_path / "probe", model, spec, r18, torch.ones(512), 0.0, 0.5)
    assert _mode(tmp_path / "probe" / WEIGHTS) == 0o644


def test_trained_weights_are_readable_by_others(tmp_path, umask_022):
    from scanner.research.train import _export

    _export(tmp_path, torch.nn.Linear(3, 2))
    assert _mode(tmp_path / "best.safetensors") == 0o644
    assert set(load_file(str(tmp_path / "best.safetensors"))) == {"weight", "bias"}
