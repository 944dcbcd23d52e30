"""Inference backends: ``build_engine(detector, cfg)`` picks one by ``cfg.kind``.

Engine *names* (CLI ``--engine`` / ``--engines``) are a kind plus options:

==============  ===================================================
eager           PyTorch eager (``--precision`` fp32/fp16/bf16)
eager-cl        eager, channels_last memory layout
compile         ``torch.compile`` (inductor; freezing on CPU)
compile-cl      compile + channels_last
compile-cg      compile with CUDA graphs (``reduce-overhead``)
onnxruntime     ONNX Runtime (alias ``ort``)
ort-trt         ONNX Runtime with its TensorRT provider (CUDA)
tensorrt        torch-tensorrt dynamo path (alias ``trt``)
==============  ===================================================
"""
from __future__ import annotations

import importlib
import logging
import time

import torch

from ..detector import Detector
from ..errors import DfscanError, EngineError
from .base import KINDS, PRECISIONS, Engine, EngineConfig, batch_sizes_for

log = logging.getLogger(__name__)

ENGINE_NAMES: dict[str, dict] = {
    "eager": {"kind": "eager"},
    "eager-cl": {"kind": "eager", "channels_last": True},
    "compile": {"kind": "compile"},
    "compile-cl": {"kind": "compile", "channels_last": True},
    "compile-cg": {"kind": "compile", "compile_mode": "reduce-overhead"},
    "onnxruntime": {"kind": "onnxruntime"},
    "ort": {"kind": "onnxruntime"},
    "ort-trt": {"kind": "onnxruntime", "ort_tensorrt": True},
    "tensorrt": {"kind": "tensorrt"},
    "trt": {"kind": "tensorrt"},
}

_BACKENDS = {
    "eager": (".eager", "EagerEngine"),
    "compile": (".compile", "CompileEngine"),
    "onnxruntime": (".onnxrt", "OnnxRuntimeEngine"),
    "tensorrt": (".tensorrt", "TensorRTEngine"),
}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:  # torch_tensorrt raises a plain Exception without its libraries
        return False


def resolve_engine_name(name: str, device: str = "cpu") -> str:
    """``auto`` -> the fastest engine installed for ``device`` (measured, see
    bench/results/engines_cpu.json): ONNX Runtime on CPU (else eager channels_last),
    TensorRT on CUDA (else eager). Other names are returned unchanged."""
    if name != "auto":
        return name
    if torch.device(device).type == "cuda":
        return "tensorrt" if _importable("torch_tensorrt") else "eager"
    return "onnxruntime" if _importable("onnxruntime") else "eager-cl"


def engine_config(name: str = "eager", **overrides) -> EngineConfig:
    """``EngineConfig`` for an engine name (table above) plus explicit overrides."""
    try:
        base = dict(ENGINE_NAMES[name])
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)}") from None
    base.update({k: v for k, v in overrides.items() if v is not None})
    return EngineConfig(**base)


def engine_class(kind: str) -> type[Engine]:
    if kind not in _BACKENDS:
        raise EngineError(f"unknown engine kind {kind!r}; choose from {', '.join(KINDS)}")
    mod, cls = _BACKENDS[kind]
    return getattr(importlib.import_module(mod, __name__), cls)


def build_engine(detector: Detector, cfg: EngineConfig) -> Engine:
    """Build (or load from cache) an engine and check its parity vs eager fp32.

    Raises :class:`EngineUnavailable` when the backend's dependency is missing,
    :class:`ParityError` when parity fails (unless ``cfg.allow_parity_failure``),
    :class:`EngineError` for any other build failure. ``describe()["build_s"]``
    covers export/compile/load, not the parity check.
    """
    from ..cache import EngineCache
    from ..errors import ParityError
    from ..parity import check_parity

    detector = detector.eval()
    engine = _build(detector, cfg)
    if cfg.check_parity and not _cached_parity(engine, cfg):
        try:
            res = check_parity(engine)
        except ParityError as e:
            if engine.info.cache != "hit":
                raise
            # A cached artifact that no longer matches the eager model is stale: rebuild it
            # once from the current code before giving up.
            log.warning("cached %s engine failed parity (%s); rebuilding it", cfg.kind, e)
            EngineCache(cfg.cache_dir).clear([engine.info.cache_key])
            engine = _build(detector, cfg)
            engine.info.cache = "rebuilt (cached engine failed parity)"
            res = check_parity(engine)
        if engine.info.cache_key:
            res["faces_sha256"] = _parity_faces_sha()
            res["artifact_sha256"] = engine.info.artifact_sha256  # what was checked
            EngineCache(cfg.cache_dir).update_meta(engine.info.cache_key, parity=res)
    return engine


def _build(detector: Detector, cfg: EngineConfig) -> Engine:
    try:
        engine = engine_class(cfg.kind)(detector, cfg)
        engine.build()
    except DfscanError:
        raise
    except Exception as e:
        raise EngineError(f"building the {cfg.kind} engine for {detector.name} failed: {type(e).__name__}: {e}") from e
    return engine


def _parity_faces_sha() -> str:
    from ..parity import parity_faces_path
    from ..registry import file_hash

    return file_hash(parity_faces_path(), None)


def _cached_parity(engine: Engine, cfg: EngineConfig) -> bool:
    """On a cache hit, reuse the parity this very artifact passed (same key: same
    weights, backend, precision, shapes and library versions; same reference faces and
    decision threshold),
    instead of running eager and the engine again on every start.

    The record is the one in the metadata validated on load, and must name the loaded
    artifact's checksum: the entry re-read here could have been replaced in between, and a
    record written for another artifact (a process that checked the file before it was
    rebuilt, an edited file) let an engine that disagrees with eager score videos."""
    if engine.info.cache != "hit" or not engine.info.cache_key:
        return False
    res = engine.info.stored_parity
    if not isinstance(res, dict) or res.get("passed") is not True or res.get("faces_sha256") != _parity_faces_sha():
        return False
    if not engine.info.artifact_sha256 or res.get("artifact_sha256") != engine.info.artifact_sha256:
        return False
    if res.get("threshold") != engine.detector.threshold:
        # Verdict flips were counted at the stored threshold, which the key does not cover:
        # a probe's card.json threshold edited (recalibrated) kept the weights and the key.
        return False
    from ..parity import MAX_P_FAKE_DIFF, MIN_COSINE, passes

    try:  # passed by today's criteria, not only by those it was stored with
        if not passes(res, MIN_COSINE, MAX_P_FAKE_DIFF[cfg.precision]):
            return False
    except (KeyError, TypeError):
        return False
    engine.info.parity = {**res, "cached": True}
    return True


def prepare_engine(detector: Detector, name: str = "eager", *, precision: str = "fp32",
                   batch_sizes=(1, 8, 32), device: str = "cpu", cache_dir: str | None = None,
                   allow_parity_failure: bool = False, warmup: bool = True) -> Engine:
    """One call for ``dfscan scan --engine NAME --precision P``: build, check parity, warm up.

    The returned engine's ``describe()`` has ``build_s`` (build/load) and
    ``ready_s`` (build + parity + warm-up, the wall time the user waited).
    """
    t0 = time.perf_counter()
    name = resolve_engine_name(name, device)
    cfg = engine_config(name, precision=precision, batch_sizes=tuple(batch_sizes), device=device,
                        cache_dir=cache_dir, allow_parity_failure=allow_parity_failure)
    engine = build_engine(detector, cfg)
    if warmup:
        engine.warmup()
    engine.ready_s = time.perf_counter() - t0
    return engine


__all__ = ["resolve_engine_name", "ENGINE_NAMES", "KINDS", "PRECISIONS", "Engine", "EngineConfig", "batch_sizes_for", "build_engine",
           "engine_class", "engine_config", "prepare_engine"]
