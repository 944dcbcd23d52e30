"""Each cached engine artifact is read and hashed once per engine start, miss or hit, and the
bytes hashed are the bytes loaded; a tampered cached file is still rebuilt."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.registry import create_detector

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny():
    return create_detector("test_tiny")


@pytest.fixture(autouse=True)
def _one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSCAN_CACHE_DIR", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def hashes(monkeypatch):
    """Every SHA-256 object made while building (whoever makes it: cache, backend, parity);
    ``of(data)`` counts those whose digest is that of ``data``."""
    real, made = hashlib.sha256, []

    def counting(*args, **kwargs):
        h = real(*args, **kwargs)
        made.append(h)
        return h

    monkeypatch.setattr(hashlib, "sha256", counting)

    def of(data: bytes) -> int:
        want = real(data).hexdigest()
        return sum(h.hexdigest() == want for h in made)

    return SimpleNamespace(made=made, of=of)


def test_an_ort_artifact_is_hashed_once_on_a_miss_and_once_on_a_hit(tiny, hashes):
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    miss = build_engine(tiny, cfg)  # export, store, load, parity check, parity stored
    data = Path(miss.info.artifact).read_bytes()
    assert miss.info.cache == "miss" and hashes.of(data) == 1
    assert miss.info.artifact_sha256 == hashlib.new("sha256", data).hexdigest()
    hashes.made.clear()
    hit = build_engine(tiny, cfg)  # lookup, load, stored parity reused
    assert hit.info.cache == "hit" and hit.info.parity["cached"] and hashes.of(data) == 1


def test_a_tampered_cached_artifact_is_still_rebuilt(tiny, hashes):
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    first = build_engine(tiny, cfg)
    with open(first.info.artifact, "r+b") as f:  # same size, other bytes
        f.seek(200)
        f.write(b"\x00tampered\xff" * 4)
    hashes.made.clear()
    again = build_engine(tiny, cfg)
    assert again.info.cache == "rebuilt (artifact checksum mismatch)" and again.info.parity["passed"]
    assert hashes.of(Path(again.info.artifact).read_bytes()) == 1  # the rebuilt file, once
    x = tiny.spec.example_input(3)
    torch.testing.assert_close(again.p_fake(x), tiny.p_fake(tiny(x)), atol=1e-4, rtol=1e-4)
    assert build_engine(tiny, cfg).info.cache == "hit"


class _Doubler(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_a_tensorrt_program_is_loaded_from_the_checked_bytes(tmp_path):
    """The TensorRT backend (no GPU here: its loader alone) loads the bytes it is given,
    not the file by name, which may have been swapped since its check; with
    torch.export.load itself, as some torch_tensorrt.load releases try torch.jit.load
    first, which reads the whole buffer and leaves the export loader nothing."""
    from engines.backends.tensorrt import TensorRTEngine

    def jit_first(f):
        f.read()
        raise RuntimeError("not a TorchScript archive")

    buf = io.BytesIO()
    torch.export.save(torch.export.export(_Doubler(), (torch.ones(2, 3),)), buf)
    path = tmp_path / "model.ep"
    path.write_bytes(b"swapped in after the check")
    stub = SimpleNamespace(trt=SimpleNamespace(load=jit_first), model=None)
    TensorRTEngine._load(stub, path, buf.getvalue())
    assert torch.equal(stub.model(torch.ones(2, 3)), torch.full((2, 3), 2.0))
