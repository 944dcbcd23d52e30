"""Third audit of engines/ and `dfscan engines|bench|detectors`: real detectors on CPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.parity import parity_batch
from engines.registry import create_detector


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


def test_bench_with_an_unknown_engine_name_is_refused_before_any_file_is_touched(tmp_path, capsys, cache):
    """An unknown --engines name was found only after the first detector's other engines were
    built and an earlier run's JSON had been replaced by an empty, incomplete one."""
    from scanner.cli import main

    earlier = json.dumps({"complete": True, "results": [{"old": 1}]})
    (tmp_path / "b.json").write_text(earlier)
    rc = main(["bench", "--detectors", "test_tiny", "--engines", "eager", "bogus", "--out", str(tmp_path),
               "--name", "b", "--iters", "1", "--warmup", "0", "--batch-sizes", "1", "--cache-dir", cache])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("dfscan: error: unknown engine 'bogus'")
    assert "building" not in err  # refused before any engine was built
    assert (tmp_path / "b.json").read_text() == earlier


@pytest.mark.parametrize("pipeline", [False, True])
def test_bench_weights_for_a_detector_not_benchmarked_is_refused(tmp_path, capsys, cache, pipeline):
    """`--weights meso4-df=FILE` (a typo) was ignored: the run timed and checked the packaged
    weights as if they were the file given, without a word."""
    from scanner.cli import main

    w = tmp_path / "w.safetensors"
    w.write_bytes(b"not read")
    argv = ["bench", "--detectors", "test_tiny", "--weights", f"test-tiny={w}", "--out", str(tmp_path / "o"),
            "--batch-sizes", "1", "--cache-dir", cache]
    argv += ["--pipeline", str(tmp_path)] if pipeline else ["--engines", "eager", "--iters", "1"]
    (tmp_path / "v.mp4").write_bytes(b"\0" * 64)  # never opened: refused before any scan
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "dfscan: error: --weights names test-tiny, not among the detectors benchmarked (test_tiny)" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("name", ["test_tiny", "test_adm"])
def test_no_face_crops_give_no_scores_not_a_runtime_error(name, cache):
    """Engines take any N >= 0 crops; scoring their output for N = 0 was a bare RuntimeError
    (``reshape(0, -1)``) instead of an empty result."""
    from engines.detector import scores_for

    det = create_detector(name)
    eng = build_engine(det, engine_config("eager", batch_sizes=(1, 4), cache_dir=cache))
    out = eng(torch.zeros(0, 3, det.spec.size, det.spec.size))
    p = scores_for(det, out, 0)
    assert p.shape == (0,) and p.dtype == torch.float32
    assert det.extras(out, p) == []


def _ort_trt_entry(root, key_char: str, trt: bool = True):
    """A cache entry as an ort-trt (or plain onnxruntime) build stores it, and the folder of
    TensorRT engine files ONNX Runtime fills for it (the path the engine gives ORT)."""
    from engines.backends.onnxrt import OnnxRuntimeEngine
    from engines.cache import EngineCache

    cache = EngineCache(root)
    data = f"onnx bytes {key_char}".encode()
    fields = {"backend": "onnxruntime", **({"ort_tensorrt": True} if trt else {})}
    cache.store(key_char * 64, fields, "model.onnx", lambda p: p.write_bytes(data))
    cfg = engine_config("onnxruntime", batch_sizes=(1,), cache_dir=root)
    eng = OnnxRuntimeEngine(create_detector("test_tiny"), cfg)
    trt_dir = Path(eng._trt_options(0, "0", data)["trt_engine_cache_path"])
    (trt_dir / "TensorrtExecutionProvider_cache_sm90.engine").write_bytes(b"\0" * 1024)
    return cache, trt_dir


def test_engines_clear_deletes_the_tensorrt_engine_files_of_the_entries_it_deletes(tmp_path, capsys):
    """ONNX Runtime's TensorRT engine files (<cache>/.ort-trt/<onnx sha256>/) belong to no entry:
    `engines clear KEY` and `--all` left them on disk (hundreds of MB per model and weights), and
    the rebuild of an ort-trt entry that failed parity (clear of its key) was given the very
    TensorRT engine that had failed, as the rebuilt ONNX file has the same bytes."""
    from scanner.cli import main

    root = str(tmp_path / "cache")
    cache, trt_a = _ort_trt_entry(root, "a")
    _, trt_b = _ort_trt_entry(root, "b")
    _, trt_c = _ort_trt_entry(root, "c", trt=False)  # a CUDA-provider entry's: not its to delete
    assert cache.clear(["aaaa"]) == 1
    assert not trt_a.exists() and trt_b.is_dir() and trt_c.is_dir()
    assert main(["engines", "clear", "--all", "--cache-dir", root]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert not (tmp_path / "cache" / ".ort-trt").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("engine", ["eager-cl", "onnxruntime"])
def test_packaged_meso4_scores_alike_on_every_cpu_engine_at_any_batch(engine, cache):
    """Regression: the packaged weights on real faces, batches of 1, an odd size and more than
    the largest prepared size (chunked and padded), agree with eager fp32 within the fp32
    parity limit, flip no verdict, and a crop holding NaN scores NaN (no score), never real."""
    from engines.detector import scores_for

    det = create_detector("meso4_df")
    x = parity_batch(det.spec.size)
    x = torch.cat([x, x.flip(0)])[:9].clone()
    x[4, :, 100:110, 100:110] = float("nan")
    ref = scores_for(det, det(x), len(x))
    eng = build_engine(det, engine_config(engine, batch_sizes=(1, 4), cache_dir=cache))
    for n in (1, 3, 9):
        p = scores_for(det, eng(x[:n]), n)
        assert torch.equal(p.isnan(), ref[:n].isnan())
        ok = ~ref[:n].isnan()
        assert (p[ok] - ref[:n][ok]).abs().max() <= 1e-3
        assert torch.equal(p[ok] >= det.threshold, ref[:n][ok] >= det.threshold)
    assert p[4].isnan()
