"""Inference engines: parity vs eager fp32, padding, engine cache, benchmark output, CLI.

Parity uses the real aligned face crops in ``engines/data/parity_faces.npz``.
Timing numbers are only checked for structure and sanity, never thresholds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.backends.base import EngineConfig, padded_size
from engines.backends.eager import EagerEngine
from engines.cache import EngineCache, _sha256, state_dict_hash
from engines.errors import EngineError, EngineUnavailable, ParityError
from engines.parity import check_parity, parity_batch
from engines.registry import create_detector, list_detectors

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSCAN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny():
    return create_detector("test_tiny")


def _real(name: str):
    # A packaged detector that is not registered is a bug, never a skip.
    assert name in list_detectors(), f"detector {name} is not registered"
    return create_detector(name)


# -- config and padding ---------------------------------------------------------


def test_config_validates_and_sorts():
    cfg = EngineConfig(batch_sizes=(32, 1, 8, 8))
    assert cfg.batch_sizes == (1, 8, 32)
    for bad in ({"kind": "tvm"}, {"precision": "int8"}, {"batch_sizes": ()}, {"batch_sizes": (0, 4)}):
        with pytest.raises(EngineError):
            EngineConfig(**bad)
    with pytest.raises(EngineError):
        engine_config("no-such-engine")
    assert engine_config("eager-cl").channels_last and engine_config("ort").kind == "onnxruntime"
    assert [padded_size(n, (1, 8, 32)) for n in (1, 2, 8, 9, 32)] == [1, 8, 8, 32, 32]


class _Spy(EagerEngine):
    """Eager engine recording the batch sizes its graph is shown; it pads like a
    compiled engine (``fixed_shapes``) so padding itself is under test."""

    fixed_shapes = True

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen = []

    def _run(self, x):
        self.seen.append(x.shape[0])
        return super()._run(x)


@pytest.mark.parametrize("name", ["eager", "onnxruntime"])
def test_padding_never_leaks(tiny, name):
    x = parity_batch(tiny.spec.size)
    x = torch.cat([x, x.flip(-1)])[:5]  # 5 distinct real crops
    ref = tiny(x)
    engine = build_engine(tiny, engine_config(name, batch_sizes=(8,)))
    out = engine(x)
    assert out.shape == (5,)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(engine.p_fake(x), tiny.p_fake(ref), atol=1e-5, rtol=1e-4)
    # each row alone (padded with 7 zero rows) gives the same score as in the batch
    singles = torch.cat([engine(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(singles, out, atol=1e-5, rtol=1e-4)


def test_only_allowed_shapes_reach_the_graph(tiny):
    spy = _Spy(tiny, EngineConfig(batch_sizes=(1, 4))).build()
    x = tiny.spec.example_input(11)
    out = spy(x)
    assert spy.seen == [4, 4, 4] and out.shape == (11,)
    torch.testing.assert_close(out, tiny(x), atol=1e-5, rtol=1e-4)
    assert spy(x[:0]).shape == (0,)
    with pytest.raises(EngineError):
        spy(torch.zeros(2, 3, 8, 8))


# -- parity ---------------------------------------------------------------------


def _assert_parity(engine):
    p = engine.describe()["parity"]
    assert p["passed"] and p["cosine"] >= 0.99 and p["verdict_flips"] == 0
    assert p["n"] >= 4 and 0 <= p["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("name", ["eager", "eager-cl", "onnxruntime"])
def test_parity_tiny(tiny, name):
    _assert_parity(build_engine(tiny, engine_config(name, batch_sizes=(1, 8))))


def test_parity_bf16_tiny(tiny):
    e = build_engine(tiny, engine_config("eager", precision="bf16", batch_sizes=(1, 8)))
    assert e.describe()["parity"]["passed"] and e(tiny.spec.example_input(3)).dtype == torch.float32


@pytest.mark.parametrize("name", ["eager", "onnxruntime"])
def test_parity_real_detector(name):
    det = _real("meso4_df")
    e = build_engine(det, engine_config(name, batch_sizes=(1, 8)))
    _assert_parity(e)
    x = parity_batch(det.spec.size)
    ref = det.p_fake(det(x))
    torch.testing.assert_close(e.p_fake(x), ref, atol=1e-4, rtol=1e-3)
    assert torch.equal(e.p_fake(x) >= det.threshold, ref >= det.threshold)


def test_parity_compile_real_detector():
    # One compiled program for the CPU compile path (a tiny model compiled too cost CI ~20 s).
    e = build_engine(_real("mesoinception4_df"), engine_config("compile", batch_sizes=(8,)))
    _assert_parity(e)
    assert any("torch.compile" in n for n in e.describe()["notes"])


class _Broken(EagerEngine):
    def _run(self, x):
        return -super()._run(x)  # flips every verdict


def test_parity_failure_is_refused_with_numbers(tiny):
    engine = _Broken(tiny, EngineConfig()).build()
    with pytest.raises(ParityError, match=r"cosine -?\d\.\d+.*verdict flips"):
        check_parity(engine)
    res = check_parity(engine, allow_failure=True)
    assert not res["passed"] and res["verdict_flips"] > 0 and res["cosine"] < 0


# -- cache ----------------------------------------------------------------------


def test_cache_miss_then_hit(tiny, _cache):
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    first = build_engine(tiny, cfg)
    assert first.info.cache == "miss" and first.info.artifact.startswith(str(_cache))
    second = build_engine(tiny, cfg)
    assert second.info.cache == "hit" and second.info.cache_key == first.info.cache_key
    x = tiny.spec.example_input(3)
    torch.testing.assert_close(second(x), first(x))
    (row,) = EngineCache().list()
    assert row["backend"] == "onnxruntime" and row["parity"]["passed"]
    # another precision/batch set/weights is another key
    assert build_engine(tiny, engine_config("onnxruntime", batch_sizes=(4,))).info.cache == "miss"
    other = create_detector("test_tiny")
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert state_dict_hash(other) != state_dict_hash(tiny)
    assert build_engine(other, cfg).info.cache == "miss"
    assert EngineCache().clear() == 3 and EngineCache().list() == []


def test_no_cache_leaves_no_files(tiny, _cache):
    e = build_engine(tiny, engine_config("onnxruntime", batch_sizes=(2,), use_cache=False))
    assert e.info.cache == "none" and e.info.parity["passed"]
    assert not _cache.exists() or not any(_cache.iterdir())


def test_cache_corrupt_artifact_is_rebuilt(tiny):
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    first = build_engine(tiny, cfg)
    with open(first.info.artifact, "r+b") as f:  # flip bytes in the middle of the file
        f.seek(200)
        f.write(b"\x00garbage\xff" * 4)
    again = build_engine(tiny, cfg)
    assert again.info.cache == "rebuilt (artifact checksum mismatch)"
    _assert_parity(again)
    assert build_engine(tiny, cfg).info.cache == "hit"


@pytest.mark.parametrize("damage", ["fields", "json", "missing"])
def test_cache_bad_metadata_is_rebuilt(tiny, damage):
    cfg = engine_config("onnxruntime", batch_sizes=(2,))
    first = build_engine(tiny, cfg)
    meta = EngineCache().entry_dir(first.info.cache_key) / "meta.json"
    if damage == "fields":
        m = json.loads(meta.read_text())
        m["fields"]["precision"] = "fp16"
        meta.write_text(json.dumps(m))
    elif damage == "json":
        meta.write_text("{not json")
    else:
        meta.unlink()
    again = build_engine(tiny, cfg)
    assert again.info.cache.startswith("rebuilt (")
    _assert_parity(again)



def test_cache_entry_others_could_write_is_not_loaded(tiny, tmp_path):
    # A planted entry (shared, world-writable DFSCAN_CACHE_DIR) was loaded when its
    # meta.json matched; its artifact name could even point outside the entry ("../x").
    import os

    cfg = engine_config("onnxruntime", batch_sizes=(2,))
    first = build_engine(tiny, cfg)
    d = EngineCache().entry_dir(first.info.cache_key)
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(Path(first.info.artifact).read_bytes())
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "artifact": os.path.relpath(outside, d)}))
    again = build_engine(tiny, cfg)
    assert again.info.cache == "rebuilt (artifact is not a file of the entry)"
    d.chmod(0o770)  # group-writable, as Kubernetes' fsGroup leaves a volume: still ours
    assert build_engine(tiny, cfg).info.cache == "hit"
    d.chmod(0o777)
    assert build_engine(tiny, cfg).info.cache == "rebuilt (entry writable by other users)"
    assert build_engine(tiny, cfg).info.cache == "hit"  # the rebuilt entry is the owner's alone


def test_cache_key_has_dfscan_version_and_code(tiny, monkeypatch, tmp_path):
    """An upgrade (another dfscan version, or changed detector/backend code) is a
    miss and a fresh build, never a reused artifact of the older code."""
    import engines.cache as cache

    monkeypatch.setenv("DFSCAN_CACHE_DIR", str(tmp_path))  # empty: other tests built test_tiny too
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    with monkeypatch.context() as m:
        m.setattr(cache, "dfscan_version", lambda: "0.0.1")
        old = build_engine(tiny, cfg)
    assert old.info.cache == "miss"
    new = build_engine(tiny, cfg)
    assert new.info.cache == "miss" and new.info.cache_key != old.info.cache_key
    fields = json.loads((EngineCache().entry_dir(new.info.cache_key) / "meta.json").read_text())["fields"]
    assert fields["dfscan"] == cache.dfscan_version() and fields["code"]


def _module_in_engines(tmp_path, monkeypatch, name: str, source: str):
    """A module file ``name``.py under a stand-in engines/ folder (as the code hash sees
    it), and a function that (re)imports it from its current source."""
    import importlib.util

    import engines.cache as cache

    pkg = tmp_path / "engines"
    pkg.mkdir()
    src = pkg / f"{name}.py"
    src.write_text(source)
    monkeypatch.setattr(cache, "_ENGINES_DIR", pkg.resolve())

    def load():
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", src)
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, f"{name}_under_test", mod)
        spec.loader.exec_module(mod)
        return mod

    return src, load


def test_code_hash_follows_the_detector_source(tmp_path, monkeypatch):
    import engines.cache as cache

    src, load = _module_in_engines(tmp_path, monkeypatch, "mydet",
                                   "class MyDet:\n    def f(self):\n        return 1\n")
    before = cache.code_hash(load().MyDet)
    assert cache.code_hash(load().MyDet) == before
    src.write_text(src.read_text().replace("return 1", "return 2"))
    assert cache.code_hash(load().MyDet) != before


def test_cache_key_follows_the_code_of_every_submodule(tmp_path, monkeypatch):
    """A probe's backbone (engines/backbones/sources.py, or timm/facenet-pytorch) is traced
    into the artifact, but only the detector's own class was hashed: a changed backbone kept
    the key and the engine of the older graph (with its stored parity) was served."""
    import engines.cache as cache

    src, load = _module_in_engines(tmp_path, monkeypatch, "mybackbone", "import torch\n"
                                   "class BB(torch.nn.Module):\n    def forward(self, x):\n        return x\n")

    def code():
        det = create_detector("test_tiny")
        det.backbone = load().BB()
        return cache.key_fields(det, "onnxruntime", {}, {}, "cpu")["code"]

    before = code()
    assert code() == before
    src.write_text(src.read_text().replace("return x", "return -x"))
    assert code() != before
    # a backbone class of another package (timm): its version is part of the key
    det = create_detector("test_tiny")
    det.backbone = type("Vit", (torch.nn.Identity,), {"__module__": "timm.models.vit"})()
    monkeypatch.setattr(cache, "package_version", lambda name: {"timm": "1.0"}.get(name, "x"))
    old = cache.key_fields(det, "onnxruntime", {}, {}, "cpu")["code"]
    monkeypatch.setattr(cache, "package_version", lambda name: {"timm": "1.1"}.get(name, "x"))
    assert cache.key_fields(det, "onnxruntime", {}, {}, "cpu")["code"] != old


def _other_weights_engine():
    """An uncached, unchecked ONNX Runtime engine of test_tiny with its weights x -3: an
    artifact that computes something else than the cached one."""
    other = create_detector("test_tiny")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-3.0)
    return build_engine(other, engine_config("onnxruntime", batch_sizes=(1, 8), use_cache=False,
                                             check_parity=False))


def test_stale_cached_engine_is_rebuilt_not_refused(tiny):
    """An entry whose artifact no longer matches the eager model (built by other code
    under the same key) fails parity on load: it is rebuilt, and the scan goes on."""
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    first = build_engine(tiny, cfg)
    stale = _other_weights_engine()
    art = first.info.artifact
    stale._export(art + ".new")
    import os

    os.replace(art + ".new", art)
    cache = EngineCache()
    meta = cache.entry_dir(first.info.cache_key) / "meta.json"
    m = json.loads(meta.read_text())
    m["sha256"] = _sha256(Path(art).read_bytes())
    m.pop("parity", None)  # no stored parity result to trust
    meta.write_text(json.dumps(m))
    again = build_engine(tiny, cfg)
    assert again.info.cache == "rebuilt (cached engine failed parity)"
    _assert_parity(again)
    assert build_engine(tiny, cfg).info.cache == "hit"


def test_a_stored_parity_of_another_artifact_is_not_reused(tiny):
    """The parity stored in an entry named no artifact: one replaced after its check (another
    process rebuilt it, the ONNX file was edited and its checksum refreshed) was used on the
    record's word, and an engine flipping every verdict scored videos."""
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    first = build_engine(tiny, cfg)
    cache = EngineCache()
    meta = cache.entry_dir(first.info.cache_key) / "meta.json"
    assert json.loads(meta.read_text())["parity"]["artifact_sha256"] == first.info.artifact_sha256
    assert build_engine(tiny, cfg).info.parity["cached"]  # the record of this very file is reused
    other = create_detector("test_tiny")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-3.0)
    flipped = build_engine(other, engine_config("onnxruntime", batch_sizes=(1, 8), use_cache=False,
                                                check_parity=False))
    art = Path(first.info.artifact)
    flipped._export(art)
    m = json.loads(meta.read_text())  # the parity record of the previous file is kept
    m["sha256"] = _sha256(art.read_bytes())
    meta.write_text(json.dumps(m))
    again = build_engine(tiny, cfg)
    assert again.info.cache == "rebuilt (cached engine failed parity)"
    _assert_parity(again)
    x = tiny.spec.example_input(3)
    torch.testing.assert_close(again.p_fake(x), tiny.p_fake(tiny(x)), atol=1e-4, rtol=1e-4)


def test_an_artifact_swapped_after_its_check_is_not_loaded(tiny, monkeypatch):
    """The ONNX file was hashed, then opened again by name: one swapped in between (an entry
    of a shared cache renamed away and replaced) ran with the stored parity of the checked file.
    The session is made from the bytes that were hashed, so the swapped file is never read."""
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8))
    first = build_engine(tiny, cfg)
    flipped = _other_weights_engine()
    swapped = Path(first.info.artifact).with_name("swapped.onnx")
    flipped._export(swapped)
    lookup = EngineCache.lookup

    def checked_then_swapped(self, key, fields):
        found = lookup(self, key, fields)
        if found[0] is not None:
            swapped.replace(found[0].path)
        return found

    monkeypatch.setattr(EngineCache, "lookup", checked_then_swapped)
    again = build_engine(tiny, cfg)
    assert again.info.cache == "hit" and again.info.parity["cached"]
    assert again.info.artifact_sha256 == first.info.artifact_sha256
    x = tiny.spec.example_input(3)
    torch.testing.assert_close(again.p_fake(x), tiny.p_fake(tiny(x)), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(flipped.p_fake(x), again.p_fake(x), atol=1e-3)  # the swap would differ


class _Scaled(EagerEngine):
    def _run(self, x):
        return super()._run(x) * 1.05  # same direction and signs: cosine 1, no flips


def test_parity_refuses_a_scale_error(tiny):
    engine = _Scaled(tiny, EngineConfig()).build()
    with pytest.raises(ParityError, match=r"max \|dP\(fake\)\| .*need <= 0.001"):
        check_parity(engine)
    res = check_parity(engine, allow_failure=True)
    assert res["cosine"] > 0.9999 and res["verdict_flips"] == 0 and res["max_abs_diff_p_fake"] > 1e-3
    assert not res["passed"] and res["max_p_fake_diff_allowed"] == 1e-3
    assert check_parity(engine, max_p_diff=0.5, allow_failure=False)["passed"]


class _WrongBoxes(EagerEngine):
    def _run(self, x):
        logits, loc, conf = super()._run(x)
        return logits, -loc, conf  # the score is right, every artifact box is wrong


def test_parity_refuses_wrong_secondary_outputs():
    """Parity compared the primary output only: an engine whose ADM box outputs disagree
    with eager passed, and its artifact boxes were written with every face of a scan."""
    det = create_detector("test_adm")
    engine = _WrongBoxes(det, EngineConfig(batch_sizes=(4,))).build()
    with pytest.raises(ParityError, match="other outputs' cosine"):
        check_parity(engine)
    res = check_parity(engine, allow_failure=True)
    assert res["cosine"] > 0.9999 and res["verdict_flips"] == 0 and res["secondary_cosine"][0] < 0
    good = check_parity(EagerEngine(det, EngineConfig(batch_sizes=(4,))).build())
    assert good["passed"] and all(c > 0.9999 for c in good["secondary_cosine"])


# -- optional backends ------------------------------------------------------------


def test_tensorrt_absence_is_one_clear_line(monkeypatch):
    from engines.backends.tensorrt import import_torch_tensorrt

    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # import now raises ImportError
    with pytest.raises(EngineUnavailable) as ei:
        import_torch_tensorrt()
    msg = str(ei.value)
    assert "pip install torch-tensorrt tensorrt" in msg and "\n" not in msg


def test_unsupported_combinations_are_typed(tiny):
    with pytest.raises(EngineUnavailable):
        build_engine(tiny, engine_config("onnxruntime", precision="bf16"))
    with pytest.raises(EngineUnavailable):
        build_engine(tiny, engine_config("tensorrt", device="cpu"))


def test_compile_with_cuda_graphs_on_cpu_is_unavailable_not_plain_compile(tiny):
    """compile-cg on CPU ran as plain compile (mode reduce-overhead, no freezing, no CUDA
    graphs) while bench and scan rows named it compile-cg; refused as ort-trt is on CPU."""
    from engines import benchmark as B

    with pytest.raises(EngineUnavailable, match="compile-cg .* needs a CUDA device"):
        build_engine(tiny, engine_config("compile-cg"))
    res = B.bench_engines([tiny], ["eager", "compile-cg"], (1,), iters=1, warmup=0)
    assert [r["engine"] for r in res["results"]] == ["eager"]
    assert [(s["engine"], s["status"]) for s in res["skipped"]] == [("compile-cg", "unavailable")]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name,prec", [("eager", "fp16"), ("eager-cl", "fp16"), ("compile-cg", "fp32"),
                                       ("onnxruntime", "fp32"), ("tensorrt", "fp16")])
def test_gpu_engines(name, prec):
    det = create_detector("meso4_df" if "meso4_df" in list_detectors() else "test_tiny", device="cuda")
    try:
        e = build_engine(det, engine_config(name, precision=prec, device="cuda", batch_sizes=(1, 8)))
    except EngineUnavailable as err:
        pytest.skip(str(err))
    p = e.describe()["parity"]
    assert p["passed"] and p["verdict_flips"] == 0 and p["cosine"] >= 0.99
    x = det.spec.example_input(5, device="cuda")
    torch.testing.assert_close(e(x), det(x).float(), atol=5e-2, rtol=5e-2)  # fp16 tolerance


# -- benchmark and CLI ----------------------------------------------------------


def test_bench_structure(tmp_path):
    from engines import benchmark as B

    seen = []  # what a run cut short would have on disk after each update
    res = B.bench_engines(["test_tiny"], ["eager", "onnxruntime", "tensorrt"], (1, 4), iters=6, warmup=1,
                          on_update=lambda r: seen.append(json.loads(json.dumps(r))))
    assert [(len(r["results"]), len(r["skipped"]), r["complete"]) for r in seen] == \
        [(0, 0, False), (0, 1, False), (2, 1, False), (4, 1, False)]  # start, builds, batch 1, batch 4
    assert res["complete"] and res["machine"]["cpu"] and res["machine"]["versions"]["torch"]
    assert len(res["results"]) == 4 and [s["engine"] for s in res["skipped"]] == ["tensorrt"]
    for r in res["results"]:
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"]
        assert r["faces_per_s"] > 0 and r["peak_mem_mb"] > 0 and r["build_s"] >= 0 and r["iters"] == 6
        assert r["parity"]["passed"] and r["speedup"] > 0
    assert {r["speedup"] for r in res["results"] if r["engine"] == "eager"} == {1.0}
    assert sorted(b["batch_size"] for b in res["best"]) == [1, 4]
    path = B.write_json(res, tmp_path / "b.json")
    assert json.loads(path.read_text())["settings"]["batch_sizes"] == [1, 4]
    png = B.plot(res, tmp_path / "b.png")
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cli(argv):
    from scanner.cli_engines import add_bench_parser, add_engines_parser

    ap = argparse.ArgumentParser(prog="dfscan")
    sp = ap.add_subparsers(dest="cmd", required=True)
    add_bench_parser(sp)
    add_engines_parser(sp)
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli_engines_and_bench(tmp_path, capsys, _cache):
    assert _cli(["engines", "build", "--detector", "test_tiny", "--engine", "ort", "--batch-sizes", "1", "4"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["backend"] == "onnxruntime" and desc["parity"]["passed"] and desc["cache"] == "miss"
    assert _cli(["engines", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in listed["entries"]] == [desc["cache_key"]]
    assert _cli(["engines", "clear"]) == 2
    assert _cli(["engines", "clear", desc["cache_key"][:8]]) == 0 and EngineCache().list() == []
    out = tmp_path / "res"
    assert _cli(["bench", "--detectors", "test_tiny", "--engines", "eager", "--batch-sizes", "2",
                 "--iters", "3", "--warmup", "1", "--out", str(out)]) == 0
    assert json.loads((out / "engines_cpu.json").read_text())["results"][0]["batch_size"] == 2


# -- engine selection and the ADM head on engines ---------------------------------


def test_auto_engine_resolution():
    from engines.backends import resolve_engine_name

    pytest.importorskip("onnxruntime")
    assert resolve_engine_name("auto", "cpu") == "onnxruntime"
    assert resolve_engine_name("compile", "cpu") == "compile"


def test_eager_runs_unpadded(tiny):
    eng = build_engine(tiny, engine_config("eager", batch_sizes=(8,)))
    seen = []
    orig = eng._run
    eng._run = lambda x: (seen.append(x.shape[0]), orig(x))[1]
    assert eng(torch.rand(5, 3, 64, 64) * 255).shape == (5,)
    assert seen == [5]


@pytest.mark.parametrize("name", ["eager", "onnxruntime"])
def test_adm_head_on_engines(name):
    """The ADM detector's three outputs (logits, loc, conf) survive every engine."""
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime")
    det = create_detector("test_adm")
    eng = build_engine(det, engine_config(name, batch_sizes=(2, 4)))
    par = eng.describe()["parity"]
    assert par["cosine"] >= 0.99 and par["verdict_flips"] == 0 and par["passed"]
    x = parity_batch(det.spec.size)[:3]
    ref, got = det(x), eng(x)
    assert len(got) == len(ref) == 3
    for r, g in zip(ref, got):
        assert g.shape == r.shape and torch.allclose(g, r, atol=1e-3, rtol=1e-3)


def test_onnxruntime_on_cuda_without_its_provider_is_refused_before_any_export(tmp_path, monkeypatch):
    """With the CPU-only onnxruntime wheel, `--device cuda` must not spend an ONNX export first."""
    ort = pytest.importorskip("onnxruntime")
    from engines.backends import build_engine, engine_config
    from engines.errors import EngineUnavailable

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
        build_engine(create_detector("test_tiny"), engine_config("onnxruntime", device="cuda",
                                                                 cache_dir=str(tmp_path)))
    assert not any(tmp_path.rglob("*.onnx"))


def test_bench_records_an_engine_that_fails_at_run_time_and_goes_on(monkeypatch):
    """A runtime error in one engine (CUDA out of memory, a graph capture) is that engine's
    failure, not the whole benchmark's."""
    from engines import benchmark as B
    from engines import backends

    real = backends.build_engine

    def flaky(det, cfg):
        eng = real(det, cfg)
        if cfg.kind == "onnxruntime":
            def boom():
                raise RuntimeError("CUDA out of memory")
            eng.warmup = boom
        return eng

    monkeypatch.setattr(backends, "build_engine", flaky)
    res = B.bench_engines(["test_tiny"], ["eager", "onnxruntime"], (1,), iters=2, warmup=1)
    assert [r["engine"] for r in res["results"]] == ["eager"]
    assert res["skipped"] == [{"detector": "test_tiny", "engine": "onnxruntime", "status": "failed",
                               "error": "RuntimeError: CUDA out of memory"}]
