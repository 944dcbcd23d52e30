"""Bad weights files and engine-cache corner cases: one-line typed errors, never a
traceback, never a silently different engine, never code run from a pickle."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.cache import EngineCache
from engines.errors import EngineUnavailable, WeightsError
from engines.registry import create_detector


@pytest.fixture
def tiny_weights(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in create_detector("test_tiny").state_dict().items()}
    path = tmp_path / "tiny.safetensors"
    save_file(sd, str(path))
    return path, sd


@pytest.mark.parametrize("cut", [0, 0.5])
def test_empty_or_truncated_safetensors_is_weights_error(tiny_weights, tmp_path, cut):
    path, _ = tiny_weights
    bad = tmp_path / "bad.safetensors"
    data = path.read_bytes()
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        create_detector("test_tiny", weights=bad)


def test_nonfinite_weights_named(tiny_weights, tmp_path):
    from safetensors.torch import save_file

    _, sd = tiny_weights
    sd = dict(sd, **{"body.7.bias": torch.tensor([float("nan")])})
    bad = tmp_path / "nan.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(WeightsError, match="body.7.bias holds NaN"):
        create_detector("test_tiny", weights=bad)


def test_mismatched_weights_one_line(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"x.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(WeightsError, match="does not fit TinyCNN") as e:
        create_detector("test_tiny", weights=bad)
    assert "\n" not in str(e.value)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipped", [False, True])
def test_pickle_with_code_refused_one_line(tmp_path, zipped):
    marker = tmp_path / "PWNED"
    _Evil.marker = marker
    bad = tmp_path / "evil.pt"
    if zipped:
        torch.save({"w": _Evil()}, bad)
    else:
        bad.write_bytes(pickle.dumps({"w": _Evil()}))
    with pytest.raises(WeightsError, match="(?i)unsupported") as e:
        create_detector("test_tiny", weights=bad)
    assert "\n" not in str(e.value) and "weights_only` set to `False`" not in str(e.value)
    assert not marker.exists()


def test_parity_on_read_only_cache_is_not_fatal(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    det = create_detector("test_tiny")
    cfg = engine_config("onnxruntime", batch_sizes=(1, 2), cache_dir=str(tmp_path))
    build_engine(det, cfg)
    meta = next(tmp_path.glob("*/meta.json"))
    m = json.loads(meta.read_text())
    m.pop("parity")  # e.g. an entry from before the parity faces changed
    meta.write_text(json.dumps(m))

    real_write = Path.write_text

    def read_only(self, *a, **k):  # root ignores chmod: refuse writes of the metadata instead
        if "meta.json" in self.name:
            raise OSError(30, "Read-only file system", str(self))
        return real_write(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", read_only)
    eng = build_engine(det, cfg)
    assert eng.info.cache == "hit" and eng.info.parity["passed"]
    assert EngineCache(tmp_path).update_meta(eng.info.cache_key, x=1) is False


def test_ort_trt_on_cpu_refused():
    pytest.importorskip("onnxruntime")
    with pytest.raises(EngineUnavailable, match="needs a CUDA device"):
        build_engine(create_detector("test_tiny"), engine_config("ort-trt", use_cache=False))


@pytest.mark.parametrize("case", ["truncated", "nan"])
def test_bad_probe_weights_are_weights_errors(tmp_path, case):
    import torchvision
    from safetensors.torch import save_file

    from engines.backbones import create_backbone
    from engines.detectors.probe import save_probe

    r18 = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), r18)
    model, spec = create_backbone("torchvision", r18, "resnet18", size=64)
    save_probe(tmp_path / "probe", model, spec, r18, torch.randn(512), 0.25, 0.5, {})
    w = tmp_path / "probe" / "probe.safetensors"
    if case == "truncated":
        w.write_bytes(w.read_bytes()[:20])
    else:
        save_file({"linear.weight": torch.full((1, 512), float("nan")), "linear.bias": torch.zeros(1)}, str(w))
    with pytest.raises(WeightsError, match="not a readable safetensors|linear.weight holds NaN"):
        create_detector("probe", weights=tmp_path / "probe")


def test_engines_build_bad_device_is_one_line(capsys):
    from scanner.cli import main

    with pytest.raises(SystemExit) as e:  # not a device name: usage error
        main(["engines", "build", "--detector", "test_tiny", "--engine", "eager", "--device", "foo"])
    assert e.value.code == 2 and "argument --device" in capsys.readouterr().err
    # absent GPU: checked when run (GPU plans are parsed on CPU machines), as scan does
    assert main(["engines", "build", "--detector", "test_tiny", "--engine", "eager", "--device", "cuda:99"]) == 2
    assert "device cuda:99" in capsys.readouterr().err


def test_cache_list_survives_foreign_metadata(tmp_path):
    keys = [c * 64 for c in "abc"]  # entries are named by a 64-digit key
    for name, text in zip(keys, ["[1, 2]", '{"fields": 5}', "{"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(text)
    rows = EngineCache(tmp_path).list()
    assert [r["key"] for r in rows] == keys and all("unreadable" in r["error"] for r in rows)


def test_weights_hash_is_of_the_bytes_loaded(tiny_weights, tmp_path, monkeypatch):
    # The file was read to load the weights and read again to hash them: a file replaced in
    # between (a training run rewriting the weights a scan loads) gave rows the hash of
    # weights other than those used.
    import hashlib

    import engines.registry as registry
    from safetensors.torch import save_file

    path, sd = tiny_weights
    loaded = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    other = tmp_path / "other.safetensors"
    save_file({k: v + 1 for k, v in sd.items()}, str(other))
    check = registry.check_finite

    def replace_after_load(model, source):  # runs between the load and the old second read
        check(model, source)
        os.replace(other, path)

    monkeypatch.setattr(registry, "check_finite", replace_after_load)
    det = create_detector("test_tiny", weights=path)
    assert det.weights_hash == loaded
    assert torch.equal(next(iter(det.state_dict().values())), next(iter(sd.values())))


@pytest.mark.parametrize("name", ["clip.safetensors", "clip.pt"])
def test_a_large_non_weights_file_is_refused_before_it_is_read_whole(tmp_path, name):
    """A video given as --weights was read into memory whole (gigabytes) only to fail to parse:
    the first bytes now decide."""
    import tracemalloc

    from engines.registry import read_weights_file

    bad = tmp_path / name
    with open(bad, "wb") as f:  # an MP4's first box, then 64 MiB (sparse)
        f.write(b"\x00\x00\x00\x20ftypisom" + bytes(20))
        f.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match="not a readable safetensors|not a torch weights file"):
            read_weights_file(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
