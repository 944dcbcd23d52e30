"""MesoNet port: PyTorch vs the authors' Keras model, score meaning, registry, converter.

The Keras numbers in ``tests/data/mesonet_keras_reference.json`` were produced
once by ``bench/reference/mesonet_keras_reference.py`` (TensorFlow/Keras in a
scratch venv; see that file's docstring); nothing here imports TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.detectors.mesonet import MESONET_TEMPLATE, KerasMaxPool2d, Meso4, MesoInception4
from engines.errors import WeightsError
from engines.registry import create_detector, read_state_dict

DATA = Path(__file__).resolve().parent / "data"
REF = json.loads((DATA / "mesonet_keras_reference.json").read_text())
SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mesonet"
MODELS = ["meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f"]
ATOL = 1e-4
N_IMAGES = 4  # the first inputs are the authors' crops, the rest noise


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load_inputs() -> np.ndarray:
    """uint8 (N, 256, 256, 3) RGB: the test crops as the Keras loader read them, then the noise."""
    imgs = [np.asarray(Image.open(DATA / "mesonet" / n).convert("RGB").resize((256, 256), Image.NEAREST))
            for n in REF["inputs"][:N_IMAGES]]
    seed, count = 2018, len(REF["inputs"]) - N_IMAGES
    noise = np.random.default_rng(seed).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8)
    return np.concatenate([np.stack(imgs), noise])


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    """float32 (N, 3, 256, 256) RGB in [0, 255], identical pixels to the Keras run."""
    x = _load_inputs()
    got = [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in x]
    assert got == REF["input_sha256"], "decoded inputs differ from the ones fed to Keras"
    return torch.from_numpy(x).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def outputs(inputs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (raw network output = logit of P(fake), P(fake)), both float64 (N,)."""
    res = {}
    for name in MODELS:
        model = create_detector(name)
        with torch.no_grad():
            out = model(inputs)
            res[name] = (out.double().numpy(), model.p_fake(out).double().numpy())
    return res


@pytest.mark.parametrize("name", MODELS)
def test_matches_keras(name, outputs):
    ref = REF["models"][name]
    logit, p_fake = outputs[name]
    keras_p_real = np.array(ref["sigmoid"])
    # The Keras sigmoid is P(real), so P(fake) = 1 - sigmoid; logits are negated.
    assert np.max(np.abs(p_fake - (1.0 - keras_p_real))) < ATOL
    z = np.array(ref["pre_sigmoid"])
    np.testing.assert_allclose(logit, -z, rtol=1e-5, atol=ATOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", MODELS)
def test_matches_keras_on_cuda(name, inputs):
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convs would add ~1e-3 error
    try:
        model = create_detector(name, device="cuda")
        with torch.no_grad():
            p = model.p_fake(model(inputs.cuda())).double().cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    assert np.max(np.abs(p - (1.0 - np.array(REF["models"][name]["sigmoid"])))) < ATOL


def test_keras_loaders_agree_and_sigmoid_means_p_real():
    # Folder classes sorted alphabetically by flow_from_directory: df=0, real=1.
    assert REF["class_indices"] == {"df": 0, "real": 1}
    for name in ("meso4_df", "mesoinception4_df"):
        ref = REF["models"][name]
        assert ref["positional_vs_by_counter_max_abs_diff"] == 0.0
        sig = dict(zip(REF["inputs"], ref["sigmoid"]))
        df = [v for k, v in sig.items() if k.startswith("df/")]
        real = [v for k, v in sig.items() if k.startswith("real/")]
        assert max(df) < 0.5 < min(real), f"{name}: sigmoid is not P(real)"


@pytest.mark.parametrize("name", ["meso4_df", "mesoinception4_df"])
def test_p_fake_higher_on_df_crops(name, outputs):
    _, p = outputs[name]
    kinds = [n.split("/")[0] for n in REF["inputs"][:N_IMAGES]]
    df = [v for v, k in zip(p, kinds) if k == "df"]
    real = [v for v, k in zip(p, kinds) if k == "real"]
    assert min(df) > 0.5 > max(real)


@pytest.mark.parametrize("case", REF["maxpool_same"], ids=lambda c: f"k{c['k']}_{c['h']}x{c['w']}")
def test_keras_same_maxpool(case):
    h, w, k = case["h"], case["w"], case["k"]
    x = np.sin(np.arange(h * w * 2, dtype=np.float64) * 0.37).astype(np.float32).reshape(1, h, w, 2)
    y = KerasMaxPool2d(k)(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(y[0].permute(1, 2, 0).numpy(), np.array(case["output_nhwc"], dtype=np.float32))


@pytest.mark.parametrize("name", MODELS + ["test_meso4"])
def test_registry_creates(name):
    m = create_detector(name)
    assert not m.training and m.name == name
    size = m.spec.size
    assert m.spec.scale == pytest.approx(1 / 255) and m.spec.mean == (0, 0, 0) and m.spec.std == (1, 1, 1)
    if name != "test_meso4":
        assert size == 256 and len(m.weights_hash) == 16
        assert m.describe()["input"]["template"] == [list(p) for p in MESONET_TEMPLATE]
    x = m.spec.example_input(2)
    with torch.no_grad():
        a, b = m(x), m(x)
    assert a.shape == (2,) and torch.equal(a, b)  # eval mode: dropout inactive
    p = m.p_fake(a)
    assert p.dtype == torch.float32 and bool(((p >= 0) & (p <= 1)).all())


def test_test_meso4_is_deterministic():
    a, b = create_detector("test_meso4"), create_detector("test_meso4")
    for (k, v), v2 in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, v2), k


def test_parameter_counts_match_paper():
    # Afchar et al. 2018 report 27,977 (Meso-4) and 28,615 (MesoInception-4) trainable parameters.
    assert sum(p.numel() for p in Meso4().parameters()) == 27977
    assert sum(p.numel() for p in MesoInception4().parameters()) == 28615


def test_template_centres_face():
    t = np.array(MESONET_TEMPLATE)
    assert t.shape == (5, 2) and (t > 0).all() and (t < 256).all()
    assert abs(t[:, 0].mean() - 127.5) < 1e-6 and abs(t[:, 1].mean() - 128.8) < 1e-6
    assert t[0, 0] < t[2, 0] < t[1, 0] and t[0, 1] < t[2, 1] < t[3, 1]  # eyes, nose, mouth


def test_wrong_weights_rejected(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"fc2.weight": torch.zeros(1, 16)}, str(bad))
    with pytest.raises(WeightsError):
        create_detector("meso4_df", weights=bad)
    with pytest.raises(WeightsError):
        create_detector("mesoinception4_df", weights=tmp_path / "missing.safetensors")


def _need_h5():
    pytest.importorskip("h5py", reason="h5py is only needed to convert Keras weights")
    if not SHARED.is_dir():
        pytest.skip(f"authors' Keras weights not found at {SHARED} (../shared beside the repo)")


@pytest.mark.parametrize("name", MODELS)
def test_converter_round_trip(name, tmp_path):
    _need_h5()
    from engines.convert.mesonet_keras import main

    out = tmp_path / f"{name}.safetensors"
    assert main([str(SHARED / REF["models"][name]["file"]), str(out), "--arch", REF["models"][name]["arch"]]) == 0
    got, committed = read_state_dict(out), read_state_dict(Path(create_detector(name).weights_source))
    assert got.keys() == committed.keys()
    for k in got:
        assert torch.equal(got[k], committed[k]), k


def test_converter_refuses_wrong_arch_and_bad_file(tmp_path):
    _need_h5()
    from engines.convert.mesonet_keras import convert

    with pytest.raises(WeightsError, match="conv2d"):
        convert(SHARED / "Meso4_DF.h5", "mesoinception4")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError):
        convert(junk, "meso4")
