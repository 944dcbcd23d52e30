"""Engine audit 2: wrong answers without an error (overflow read as a score, cache/parity
shared between runtimes, TensorRT engines shared between weights, NaN checkpoints)."""
from __future__ import annotations

import math

import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.detector import scores_for
from engines.errors import WeightsError
from engines.registry import create_detector


def test_an_infinite_logit_is_no_score_not_a_confident_verdict():
    # -inf (an fp16 overflow) went through sigmoid to P(fake) 0.0: a finite, confident 'real'.
    det = create_detector("test_tiny")
    p = scores_for(det, torch.tensor([float("-inf"), 0.0, float("inf")]), 3)
    assert math.isnan(p[0]) and math.isnan(p[2]) and p[1] == pytest.approx(0.5)


def test_an_infinite_adm_logit_is_no_score():
    # softmax([1, -inf]) is [1, 0]: P(fake) 0 from an overflowed logit.
    det = create_detector("test_adm")
    logits = torch.tensor([[1.0, float("-inf")], [0.0, 0.0]])
    loc, conf = torch.zeros(2, 168, 4), torch.zeros(2, 168, 2)
    p = scores_for(det, (logits, loc, conf), 2)
    assert math.isnan(p[0]) and p[1] == pytest.approx(0.5)


def test_sharpness_baseline_in_fp16_scores_a_sharp_face_as_fp32_does():
    # The Laplacian variance of a sharp crop (~1e6) overflowed fp16 to inf: P(fake) 1.0 exactly.
    det = create_detector("baseline_sharpness")
    s = det.spec.size
    i = torch.arange(s)
    crop = (((i[:, None] + i[None, :]) % 2) * 255.0).expand(1, 3, s, s).clone()
    with torch.no_grad():
        ref = det(crop)
    eng = build_engine(det, engine_config("eager", precision="fp16", batch_sizes=(1, 8)))
    out = eng(crop)
    assert torch.isfinite(out).all()
    assert float((out - ref).abs().max()) < 0.05


def test_ort_with_the_tensorrt_provider_has_its_own_cache_entry(tmp_path):
    # Same key: the parity stored by a CUDA-provider session was reused for ort-trt unchecked.
    from engines.backends.onnxrt import OnnxRuntimeEngine
    from engines.cache import cache_key

    det = create_detector("test_tiny")
    eng = OnnxRuntimeEngine(det, engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(tmp_path)))
    plain = cache_key(eng._key_fields())
    eng.cfg = eng.cfg.with_(ort_tensorrt=True)  # as on CUDA (the constructor refuses it on CPU)
    assert cache_key(eng._key_fields()) != plain


def test_ort_tensorrt_engine_files_of_different_models_are_kept_apart(tmp_path):
    # ORT names TensorRT engine files by tensor names, not weights: models of one architecture
    # shared a file in one folder, and a detector ran another one's weights.
    from engines.backends.onnxrt import OnnxRuntimeEngine

    det = create_detector("test_tiny")
    eng = OnnxRuntimeEngine(det, engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(tmp_path)))
    a = eng._trt_options(0, "0", b"onnx model A")["trt_engine_cache_path"]
    b = eng._trt_options(0, "0", b"onnx model B")["trt_engine_cache_path"]
    assert a != b
    assert eng._trt_options(0, "0", b"onnx model A")["trt_engine_cache_path"] == a


def test_an_adm_checkpoint_holding_nan_is_refused_naming_the_tensor(tmp_path):
    from safetensors.torch import save_file

    from engines.detectors.adm import build_adm

    sd = {k: v.clone().contiguous() for k, v in create_detector("test_adm").state_dict().items()}
    sd["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "adm.safetensors"
    save_file(sd, str(path))
    with pytest.raises(WeightsError, match="fc.weight"):
        build_adm("test", path)
